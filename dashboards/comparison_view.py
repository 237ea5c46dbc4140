"""The "Compare runs" tab: a stored paired-run comparison (`make compare`), layer by layer.

A table gives, per layer in capture order, the mean k-NN Jaccard overlap in raw activation space and
linear CKA between the two runs' activations of the same samples. Clicking a layer shows both runs'
layouts of it side by side, linked by sample id (the second Procrustes-aligned onto the first), and the
samples whose neighbourhoods changed most; clicking one of those opens its two images side by side and
selects it on both maps.
"""

from __future__ import annotations

import pandas as pd
import panel as pn

from dashboards.linked_maps import LinkedMaps
from dashboards.render import esc, html_pane, image_url
from store import maps
from store.compare import comparison_table, stored_comparisons

HELP = """<div class='lens-help'>
<b>How to read it.</b> Both runs generated the same samples (same seeds and classes or prompts).
<b>k-NN Jaccard</b>: for each sample, the overlap of its k nearest neighbours in the two runs' activations
(1: the same neighbourhoods; near k/n: unrelated), averaged. <b>Linear CKA</b>: similarity of the two
activation matrices up to rotation and scale (1: the same representation). Layers where both are high
compute the same thing in both models; where they fall, the models' representations part ways.
<b>Most changed</b>: the samples whose neighbourhoods differ most in this layer.</div>"""


def describe_comparison(c: dict) -> str:
    return f"{c['run_a']} vs {c['run_b']} · steps {c['step_a']}/{c['step_b']} · k={c['k']} · {c['pooling']}"


class ComparisonView:
    def __init__(self, lake: str, con, layouts: list[maps.LayoutKey]) -> None:
        self.lake, self.con, self.layouts = lake, con, layouts
        self.comparisons = stored_comparisons(con)
        self.choice = pn.widgets.Select(label="Comparison", options={describe_comparison(c): i for i, c in
                                                                     enumerate(self.comparisons)})
        self.layers = pn.widgets.Tabulator(pd.DataFrame(), disabled=True, show_index=False, selectable=1,
                                           width=440, layout="fit_columns", height=240, css_classes=["lens-layer-table"])
        self.changed = pn.widgets.Tabulator(pd.DataFrame(), disabled=True, show_index=False, selectable=1,
                                            height=260, width=440, layout="fit_columns", css_classes=["lens-changed-table"])
        self.linked = LinkedMaps(lake, con)
        self.status = html_pane("")
        self.pair = html_pane("<i>click a most-changed sample to see it from both runs</i>",
                              css_classes=["lens-pair-view"])
        self.table: pd.DataFrame = pd.DataFrame()
        self.layer: str | None = None
        self.choice.param.watch(lambda e: self.load(), "value")
        self.layers.on_click(lambda event: self.show_layer(int(event.row)))
        self.changed.on_click(lambda event: self.show_pair(int(event.row)))
        self.load()

    @property
    def current(self) -> dict | None:
        return self.comparisons[self.choice.value] if self.comparisons and self.choice.value is not None else None

    def load(self) -> None:
        c = self.current
        if c is None:
            self.status.object = ("<div class='lens-notice'>no stored comparisons; pair two runs with "
                                  "<code>make compare RUNS=a,b</code></div>")
            return
        self.table = comparison_table(self.con, c["run_a"], c["run_b"], c["pooling"], c["k"], c["step_a"],
                                      c["step_b"])
        self.layers.value = pd.DataFrame({
            "layer": self.table["layer"], "samples": self.table["samples"],
            f"Jaccard (k={c['k']})": self.table["mean_knn_jaccard"].round(3),
            "CKA": self.table["linear_cka"].round(3)})
        if len(self.table):
            self.show_layer(0)

    def layout_of(self, run_id: str, layer: str, step: int, pooling: str) -> maps.LayoutKey | None:
        keys = [k for k in self.layouts if (k.run_id, k.layer, k.step, k.pooling) == (run_id, layer, step, pooling)]
        full = maps.full_layouts(self.lake, keys)
        return (full or keys or [None])[0]

    def show_layer(self, row: int) -> None:
        c, record = self.current, self.table.iloc[row]
        self.layer = str(record["layer"])
        self.layers.selection = [row]
        keys = [self.layout_of(c["run_a"], self.layer, c["step_a"], c["pooling"]),
                self.layout_of(c["run_b"], self.layer, c["step_b"], c["pooling"])]
        missing = [f"{run} at step {step}" for key, run, step in
                   zip(keys, (c["run_a"], c["run_b"]), (c["step_a"], c["step_b"])) if key is None]
        titles = [f"{c['run_a']} · {self.layer} · step {c['step_a']}",
                  f"{c['run_b']} · {self.layer} · step {c['step_b']} (aligned)"]
        if missing:
            self.status.object = (f"<div class='lens-notice'>no layout of {esc(' or '.join(missing))} for layer "
                                  f"{esc(self.layer)}; lay it out with <code>python -m store embed --run RUN "
                                  "--step STEP</code></div>")
            self.linked.show([])
        else:
            self.status.object = (f"<div class='lens-layer-figures' data-layer='{esc(self.layer)}'>layer "
                                  f"<b>{esc(self.layer)}</b>: Jaccard {record['mean_knn_jaccard']:.3f}, CKA "
                                  f"{record['linear_cka']:.3f}</div>")
            self.linked.show(keys, titles, align=True)
        ids = [int(i) for i in record["most_changed"]]
        info = maps.sample_rows(self.con, c["run_a"], ids)
        jaccard = dict(zip(ids, record["most_changed_jaccard"]))
        self.changed.value = pd.DataFrame({"sample": info["sample_id"], "class or prompt": info["label"],
                                           "Jaccard": [round(float(jaccard[int(i)]), 3) for i in info["sample_id"]]})

    def show_pair(self, row: int) -> None:
        c = self.current
        sample = int(self.changed.value["sample"].iat[row])
        figures = []
        for run, step in ((c["run_a"], c["step_a"]), (c["run_b"], c["step_b"])):
            info = maps.sample_rows(self.con, run, [sample])
            if not len(info):
                continue
            record = info.iloc[0]
            url = image_url(run, int(record["chunk"]), sample, thumb=False)
            figures.append(f"<figure data-run='{esc(run)}' data-sample='{sample}'><img src='{esc(url)}'>"
                           f"<figcaption>{esc(run)} (step {step})<br>{esc(record['label'])}</figcaption></figure>")
        self.pair.object = (f"<div class='lens-pair' data-sample='{sample}'>{''.join(figures)}</div>"
                            f"<div>sample {sample}: k-NN Jaccard {self.changed.value['Jaccard'].iat[row]:.3f} "
                            f"in {esc(self.layer)}</div>")
        self.linked.select(sample)

    def view(self) -> pn.viewable.Viewable:
        linked = self.linked
        left = pn.Column(self.choice, html_pane(HELP), "### Per layer (click one)", self.layers, self.status,
                         "### Most changed in this layer (click one)", self.changed, self.pair, width=460)
        return pn.Row(left, pn.Column(pn.Row(linked.classes, linked.prompt), linked.grid, linked.group_info,
                                      linked.clear_group, "### Selected", linked.selection),
                      pn.Column("### Hover", linked.hover_card, width=200))
