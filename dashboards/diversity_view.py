"""The "Diversity" tab: per class (or prompt) signals of mode collapse in one layer of a run, from the
stored tables of `make diversity`, most collapsed first and sortable by any column. When the run was
compared with another (its teacher, say), that run's figures for the same class sit beside its own.

Clicking a row filters the map to that class or prompt; clicking its near-duplicate pair opens both images.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd
import panel as pn

from dashboards.render import esc, html_pane, image_url
from store import maps
from store.compare import partners
from store.diversity import stored_diversity, stored_diversity_layers, stored_thresholds

PAIR_COLUMN = "near-duplicate pair"
HELP = """<div class='lens-help'>
<b>How to read it.</b> Per class or prompt, in this layer's activations: <b>distance</b>, the mean pairwise
cosine distance (low: samples alike); <b>purity</b>, the share of each sample's nearest neighbours with its
own class (high: the class is a tight cluster); <b>near-dups</b>, pairs closer than the threshold; <b>Vendi</b>,
the effective number of distinct samples (1: all the same). A one-step student that collapses modes shows a
lower Vendi score and more near-duplicates than its teacher on the same plan.</div>"""


def class_id_of(label: str) -> int | None:
    head = label.split(":", 1)[0]
    return int(head) if ":" in label and head.isdigit() else None


class DiversityView:
    def __init__(self, lake: str, con, show_on_map: Callable[[str, str, str], None]) -> None:
        """`show_on_map(run_id, layer, label)` filters the explorer's map to one class or prompt."""
        self.lake, self.con, self.show_on_map = lake, con, show_on_map
        runs = [r[0] for r in con.sql("SELECT DISTINCT run_id FROM diversity ORDER BY 1").fetchall()]
        self.run = pn.widgets.Select(label="Run", options=runs, value=runs[0] if runs else None)
        self.layer = pn.widgets.Select(label="Layer")
        self.threshold = pn.widgets.Select(label="Near-duplicate threshold", width=180)
        self.partner = pn.widgets.Select(label="Paired run (the columns marked \"paired\")")
        self.table = pn.widgets.Tabulator(pd.DataFrame(), disabled=True, show_index=False, selectable=1,
                                          height=420, width=900, layout="fit_columns", css_classes=["lens-diversity-table"])
        self.status = html_pane("")
        self.pair = html_pane("<i>click a near-duplicate pair to see both images</i>", css_classes=["lens-pair-view"])
        self.frame: pd.DataFrame | None = None
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
        frame = stored_diversity(self.con, self.run.value, self.layer.value, threshold=self.threshold.value,
                                 partner=partner)
        self.frame = frame
        shown = pd.DataFrame({
            "class or prompt": frame["label"], "samples": frame["samples"],
            "distance": frame["mean_pairwise_distance"].round(3), "purity": frame["knn_purity"].round(3),
            "near-dups": frame["near_duplicate_pairs"], "Vendi": frame["vendi_score"].round(2)})
        if partner and "vendi_score_partner" in frame:
            shown["Vendi (paired)"] = frame["vendi_score_partner"].round(2)
            shown["near-dups (paired)"] = frame["near_duplicate_pairs_partner"].astype("Int64")
            shown["distance (paired)"] = frame["mean_pairwise_distance_partner"].round(3)
        shown[PAIR_COLUMN] = [f"{p[0]} & {p[1]}" if len(p) else "" for p in frame["example_pair"]]
        self.table.value = shown
        threshold = float(frame["threshold"].iat[0]) if len(frame) else 0.0
        missing = "" if not partner or "vendi_score_partner" in frame else (
            f"; no stored table of {esc(partner)} for this layer (<code>make diversity RUN={esc(partner)} "
            f"LAYER={esc(self.layer.value)}</code>)")
        self.status.object = (f"<div class='lens-diversity-status'>{len(frame)} classes or prompts · step "
                              f"{int(frame['step'].iat[0]) if len(frame) else '-'} · near-duplicate: cosine "
                              f"distance ≤ {threshold:g}{missing}</div>")

    def on_click(self, event) -> None:
        row = int(event.row)
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
                         pn.Row(self.table, pn.Column("### Near-duplicate pair", self.pair, width=380)))
