"""The Diversity tab's "against a reference" section: a run's fidelity and diversity per class (or prompt)
against a reference run (real data, or its teacher) in a fixed feature layer, from the stored tables of
`make fidelity`, with the paired run's figures beside them and a few one-line readings
("class 1: student recall 0.41 vs teacher 0.78 against real-digits")."""

from __future__ import annotations

import pandas as pd
import panel as pn

from dashboards.render import TABLE_CSS, esc, html_pane
from store.fidelity import reading, stored_fidelity, stored_references

# shown column, stored column, decimals
MEASURES = [("precision", "precision", 2), ("recall", "recall", 2), ("density", "density", 2),
            ("coverage", "coverage", 2), ("FD", "frechet_distance", 3), ("Vendi", "vendi_score", 2)]
PAIRED = " (paired)"
READINGS = 4  # the "all" line and the classes where the two runs differ most in recall
HELP = """<div class='lens-help'>In a fixed feature space that every run shares (e.g. <code>features.digits</code>,
from <code>make features</code>), against the reference's samples of the same class: <b>precision</b>, the
share of this run's samples that look like reference samples; <b>recall</b>, the share of the reference
that this run reaches (low: modes missed); <b>density</b> (≈ 1 when alike) and <b>coverage</b>; <b>FD</b>,
the Fréchet distance (0: same Gaussian); <b>Vendi</b>, the effective number of distinct samples.</div>"""


def shown_table(frame: pd.DataFrame, partner: pd.DataFrame | None) -> pd.DataFrame:
    """Label, counts and this run's measures, then (when given) the paired run's for the same labels."""
    shown = pd.DataFrame({"class or prompt": frame["label"], "samples": frame["samples"],
                          "reference": frame["reference_samples"]})
    for name, column, decimals in MEASURES:
        shown[name] = frame[column].round(decimals)
    if partner is not None and len(partner):
        theirs = partner.set_index(["kind", "label"])
        keys = list(zip(frame["kind"], frame["label"]))
        for name, column, decimals in MEASURES:
            shown[name + PAIRED] = [round(theirs[column].get(key), decimals) if key in theirs.index
                                    and pd.notna(theirs[column].get(key)) else None for key in keys]
    return shown


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts, missing figures as None (not NaN)."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def top_readings(frame: pd.DataFrame, partner: pd.DataFrame) -> list[str]:
    """The "all" reading, then the classes or prompts whose recall differs most between the two runs."""
    theirs = {(t["kind"], t["label"]): t for t in records(partner)}
    mine = [r for r in records(frame) if (r["kind"], r["label"]) in theirs]

    def gap(row: dict) -> float:
        other = theirs[(row["kind"], row["label"])]["recall"]
        return -1.0 if row["recall"] is None or other is None else abs(row["recall"] - other)

    ranked = sorted((r for r in mine if r["kind"] != "all"), key=gap, reverse=True)[:READINGS - 1]
    chosen = [r for r in mine if r["kind"] == "all"] + ranked
    return [reading(r, theirs[(r["kind"], r["label"])], "recall") for r in chosen]


class FidelityView:
    """Follows the Diversity tab's run and paired run; chooses the reference and the feature layer."""

    def __init__(self, con) -> None:
        self.con = con
        self.run: str | None = None
        self.partner: str | None = None
        self.reference = pn.widgets.Select(label="Reference (real data or teacher) · feature layer", width=420)
        self.table = pn.widgets.Tabulator(pd.DataFrame(), disabled=True, show_index=False, max_height=420,
                                          layout="fit_data_table", sizing_mode="stretch_width",
                                          stylesheets=[TABLE_CSS], css_classes=["lens-fidelity-table"])
        self.readings = html_pane("", css_classes=["lens-fidelity-readings"], sizing_mode="stretch_width")
        self.reference.param.watch(lambda e: self.load(), "value")

    def follow(self, run: str | None, partner: str | None) -> None:
        self.run, self.partner = run, partner
        pairs = stored_references(self.con, run) if run else []
        options = {f"{reference} · {layer}": f"{reference}\t{layer}" for reference, layer in pairs}
        value = self.reference.value if self.reference.value in options.values() else next(iter(options.values()), None)
        self.reference.param.update(options=options, value=value)
        self.load()

    def load(self) -> None:
        if not self.run or not self.reference.value:
            self.table.value = pd.DataFrame()
            self.readings.object = ("<div class='lens-notice'>no run measured against a reference yet: "
                                    "<code>make fidelity RUN=... REFERENCE=... LAYER=features.digits</code></div>")
            return
        reference, layer = self.reference.value.split("\t")
        frame = stored_fidelity(self.con, self.run, reference, layer)
        partner = stored_fidelity(self.con, self.partner, reference, layer) if self.partner else None
        shown = shown_table(frame, partner)
        groups = {f"{self.run} (this run)": [name for name, _, _ in MEASURES]}
        if "FD" + PAIRED in shown:
            groups[f"{self.partner} (paired)"] = [name + PAIRED for name, _, _ in MEASURES]
        self.table.param.update(value=shown, groups=groups, titles={name + PAIRED: name for name, _, _ in MEASURES})
        lines = top_readings(frame, partner) if partner is not None and len(partner) else []
        missing = "" if partner is None or len(partner) else (
            f"<div class='lens-notice'>{esc(self.partner)} was not measured against {esc(reference)} in {esc(layer)}"
            "</div>")
        self.readings.object = missing + "".join(f"<div class='lens-reading'>{esc(line)}</div>" for line in lines)

    def view(self) -> pn.viewable.Viewable:
        return pn.Column("### Against a reference, in a fixed feature space", html_pane(HELP), self.reference,
                         self.readings, self.table, sizing_mode="stretch_width")
