"""The "Diversity" tab: per class (or prompt) signals of mode collapse in one layer of a run, from the
stored tables of `make diversity`, most collapsed first and sortable by any column, with the mean over
classes in a table below. When the run was compared with another (its teacher, say), that run's figures
for the same class sit beside its own, under a header naming it.

Clicking a row filters the map to that class or prompt; clicking its near-duplicate pair opens both images.
Below, `fidelity_view` shows the run (and its paired run) against a reference in a fixed feature space.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd
import panel as pn

from dashboards.fidelity_view import FidelityView
from dashboards.render import TABLE_CSS, esc, html_pane, image_url
from store import maps
from store.compare import partners
from store.diversity import stored_diversity, stored_diversity_layers, stored_thresholds

PAIR_COLUMN = "near-duplicate pair"
LABEL_COLUMN = "class or prompt"
# shown column, stored column, decimals shown
MEASURES = [("distance", "mean_pairwise_distance", 3), ("purity", "knn_purity", 3),
            ("near-dups", "near_duplicate_pairs", 0), ("Vendi", "vendi_score", 2)]
PAIRED = " (paired)"
MEANS_CSS = TABLE_CSS + """
.tabulator-row .tabulator-cell { font-weight: 600; background: #eef2f7; }
"""
COLUMN_DEFAULTS = {"headerWordWrap": True, "maxWidth": 280, "tooltip": True}  # a long prompt: whole on hover
HELP = """<div class='lens-help'>
<b>How to read it.</b> Per class or prompt, in this layer's activations: <b>distance</b>, the mean pairwise
cosine distance (low: samples alike); <b>purity</b>, the share of each sample's nearest neighbours with its
own class (high: the class is a tight cluster); <b>near-dups</b>, pairs closer than the threshold; <b>Vendi</b>,
the effective number of distinct samples (1: all the same). A one-step student that collapses modes shows a
lower Vendi score and more near-duplicates than its teacher on the same plan. Below the table: the mean
over all classes or prompts.</div>"""


def shown_table(frame: pd.DataFrame, paired: bool) -> pd.DataFrame:
    """The table as shown: this run's measures and near-duplicate pair, then (`paired`) the paired run's."""
    shown = pd.DataFrame({LABEL_COLUMN: frame["label"], "samples": frame["samples"]})
    for name, column, decimals in MEASURES:
        shown[name] = frame[column].round(decimals) if decimals else frame[column]
    shown[PAIR_COLUMN] = [f"{p[0]} & {p[1]}" if len(p) else "" for p in frame["example_pair"]]
    if paired:
        for name, column, decimals in MEASURES:
            values = frame[f"{column}_partner"]
            shown[name + PAIRED] = values.round(decimals) if decimals else values.astype("Int64")
    return shown


def mean_row(frame: pd.DataFrame, shown: pd.DataFrame) -> pd.DataFrame:
    """One row with `shown`'s columns but the pair's: the mean over classes of every measure of both runs."""
    row: dict[str, object] = {LABEL_COLUMN: f"mean of all {len(frame)}",
                              "samples": round(float(frame["samples"].mean()), 1)}
    for name, column, decimals in MEASURES:
        for suffix, stored in (("", column), (PAIRED, f"{column}_partner")):
            if name + suffix in shown:
                row[name + suffix] = round(float(frame[stored].mean()), max(decimals, 2))
    return pd.DataFrame([row], columns=[c for c in shown.columns if c != PAIR_COLUMN])


def column_groups(run_id: str, partner: str | None, shown: pd.DataFrame) -> dict[str, list[str]]:
    """Header groups: this run's columns under its id, the paired run's under its own."""
    groups = {f"{run_id} (this run)": [name for name, _, _ in MEASURES] + [PAIR_COLUMN]}
    if partner and any(name + PAIRED in shown for name, _, _ in MEASURES):
        groups[f"{partner} (paired)"] = [name + PAIRED for name, _, _ in MEASURES]
    return groups


def class_id_of(label: str) -> int | None:
    """The class id in a class-conditional label: "417: balloon (n02782093)", "3: 3" or a bare "3"."""
    head = label.split(":", 1)[0]
    return int(head) if head.isdigit() and (":" in label or head == label) else None


class DiversityView:
    def __init__(self, lake: str, con, show_on_map: Callable[[str, str, str], None]) -> None:
        """`show_on_map(run_id, layer, label)` filters the explorer's map to one class or prompt."""
        self.lake, self.con, self.show_on_map = lake, con, show_on_map
        runs = [r[0] for r in con.sql("SELECT DISTINCT run_id FROM diversity ORDER BY 1").fetchall()]
        self.run = pn.widgets.Select(label="Run", options=runs, value=runs[0] if runs else None)
        self.layer = pn.widgets.Select(label="Layer")
        self.threshold = pn.widgets.Select(label="Near-duplicate threshold", width=180)
        self.partner = pn.widgets.Select(label="Paired run (its columns on the right)")
        options = dict(disabled=True, show_index=False, layout="fit_data_table", widths={PAIR_COLUMN: 120},
                       sizing_mode="stretch_width")
        self.table = pn.widgets.Tabulator(pd.DataFrame(), selectable=1, max_height=480,
                                          configuration={"columnDefaults": COLUMN_DEFAULTS}, stylesheets=[TABLE_CSS],
                                          css_classes=["lens-diversity-table"], **options)
        self.means = pn.widgets.Tabulator(pd.DataFrame(), selectable=False, stylesheets=[MEANS_CSS],
                                          configuration={"columnDefaults": COLUMN_DEFAULTS},
                                          css_classes=["lens-diversity-means"], **options)
        self.status = html_pane("")
        self.pair = html_pane("<i>click a near-duplicate pair to see both images</i>", css_classes=["lens-pair-view"])
        self.frame: pd.DataFrame | None = None
        self.fidelity = FidelityView(con)
        self.run.param.watch(lambda e: self.refresh_layers(), "value")
        self.layer.param.watch(lambda e: self.refresh_thresholds(), "value")
        self.threshold.param.watch(lambda e: self.load(), "value")
        self.partner.param.watch(lambda e: self.load(), "value")
        self.table.on_click(self.on_click)
        if runs:
            self.refresh_layers()
        else:
            self.status.object = ("<div class='lens-notice'>no stored diversity tables; measure one with "
                                  "<code>make diversity RUN=... LAYER=...</code></div>")

    def refresh_layers(self) -> None:
        layers = stored_diversity_layers(self.con, self.run.value)
        others = partners(self.con, self.run.value)
        self.partner.param.update(options=["(none)", *others], value=others[0] if others else "(none)")
        self.layer.param.update(options=layers, value=layers[-1] if layers else None)
        self.refresh_thresholds()

    def refresh_thresholds(self) -> None:
        thresholds = stored_thresholds(self.con, self.run.value, self.layer.value) if self.layer.value else []
        value = self.threshold.value if self.threshold.value in thresholds else (thresholds or [None])[0]
        self.threshold.param.update(options={f"{t:g}": t for t in thresholds}, value=value)
        self.load()

    def load(self) -> None:
        if not self.layer.value or self.threshold.value is None:
            return
        partner = None if self.partner.value in (None, "(none)") else self.partner.value
        self.fidelity.follow(self.run.value, partner)
        frame = stored_diversity(self.con, self.run.value, self.layer.value, threshold=self.threshold.value,
                                 partner=partner)
        self.frame = frame
        paired = bool(partner) and "vendi_score_partner" in frame
        shown = shown_table(frame, paired)
        titles = {name + PAIRED: name for name, _, _ in MEASURES}
        groups = column_groups(self.run.value, partner, shown)
        self.table.param.update(value=shown, groups=groups, titles=titles)
        self.means.param.update(value=mean_row(frame, shown), groups=groups, titles=titles)
        threshold = float(frame["threshold"].iat[0]) if len(frame) else 0.0
        missing = "" if not partner or "vendi_score_partner" in frame else (
            f"; no stored table of {esc(partner)} for this layer (<code>make diversity RUN={esc(partner)} "
            f"LAYER={esc(self.layer.value)}</code>)")
        self.status.object = (f"<div class='lens-diversity-status'>{len(frame)} classes or prompts · step "
                              f"{int(frame['step'].iat[0]) if len(frame) else '-'} · near-duplicate: cosine "
                              f"distance ≤ {threshold:g}{missing}</div>")

    def on_click(self, event) -> None:
        row = int(event.row)
        if self.frame is None or not 0 <= row < len(self.frame):
            return  # not a class's row (the mean row lives in a table of its own, but be sure)
        if event.column == PAIR_COLUMN:
            self.show_pair(row)
        else:
            self.show_on_map(self.run.value, self.layer.value, str(self.frame["label"].iat[row]))

    def show_pair(self, row: int) -> None:
        pair = [int(i) for i in self.frame["example_pair"].iat[row]]
        if len(pair) != 2:
            self.pair.object = "<i>no near-duplicate pair in this class at this threshold</i>"
            return
        info = maps.sample_rows(self.con, self.run.value, pair)
        figures = "".join(
            f"<figure data-sample='{int(r.sample_id)}'><img src='{esc(image_url(self.run.value, int(r.chunk), int(r.sample_id), thumb=False))}'>"
            f"<figcaption>sample {int(r.sample_id)} · seed {int(r.seed)}<br>{esc(r.label)}</figcaption></figure>"
            for r in info.itertuples())
        self.pair.object = f"<div class='lens-pair' data-pair='{pair[0]},{pair[1]}'>{figures}</div>"

    def view(self) -> pn.viewable.Viewable:
        return pn.Column(pn.Row(self.run, self.layer, self.threshold, self.partner), html_pane(HELP), self.status,
                         self.table, "#### Mean over all classes or prompts", self.means, "### Near-duplicate pair",
                         self.pair, self.fidelity.view())
