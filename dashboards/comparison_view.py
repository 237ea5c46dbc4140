"""The "Compare runs" tab: a stored paired-run comparison (`make compare`), layer by layer.

A chart and a table give, per layer in capture order, the mean k-NN Jaccard overlap in raw activation
space and linear CKA between the two runs' activations of the same samples; the chart also draws the
Jaccard overlap that unrelated neighbourhoods would have by chance. Clicking a layer shows both runs'
layouts of it side by side, linked by sample id (the second Procrustes-aligned onto the first), and the
samples whose neighbourhoods changed most; clicking one of those opens its two images side by side and
selects it on both maps.
"""

from __future__ import annotations

from math import comb

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers Bokeh's plotting options, also outside a page)
import pandas as pd
import panel as pn

from dashboards.linked_maps import LinkedMaps
from dashboards.render import esc, html_pane, image_url
from store import catalogue, maps
from store.lake import LayoutKey
from store.compare import comparison_table, stored_comparisons

HELP = """<div class='lens-help'>
<b>How to read it.</b> Both runs generated the same samples (same seeds and classes or prompts).
<b>k-NN Jaccard</b>: for each sample, the overlap of its k nearest neighbours in the two runs' activations
(1: the same neighbourhoods; the dashed line: unrelated ones, by chance), averaged. <b>Linear CKA</b>:
similarity of the two activation matrices up to rotation and scale (1: the same representation). Layers
where both are high compute the same thing in both models; where they fall, the models' representations
part ways. <b>Most changed</b>: the samples whose neighbourhoods differ most in this layer.</div>"""


TABLE_CSS = ":host .tabulator { font-size: 13px; }"  # the tables' own type size: the template's is larger
CHART_COLOURS = {"CKA": "#1f77b4", "Jaccard": "#ff7f0e", "chance": "#555555"}


def describe_comparison(c: dict) -> str:
    return f"{c['run_a']} vs {c['run_b']} · steps {c['step_a']}/{c['step_b']} · k={c['k']} · {c['pooling']}"


def select_width(labels: list[str]) -> int:
    """Pixels for a dropdown to show its longest option whole (about 7 px a character, 300 to 700)."""
    return min(700, max(300, 7 * max((len(label) for label in labels), default=0) + 40))


def chance_jaccard(k: int, n: int) -> float:
    """Expected k-NN Jaccard overlap of two unrelated neighbourhoods: each sample's k neighbours drawn at
    random, twice, among the n - 1 other samples.

    The overlap of two random k-subsets of n - 1 items is hypergeometric, with mean k*k/(n-1); the
    Jaccard overlap of the two sets is overlap / (2k - overlap). This is the exact mean of that ratio
    over the hypergeometric distribution, close to (a little above) the ratio at the mean overlap.
    """
    k = min(k, n - 1)
    if k <= 0:
        return 0.0
    total = comb(n - 1, k)
    return sum(comb(k, s) * comb(n - 1 - k, k - s) / total * s / (2 * k - s) for s in range(1, k + 1))


def layer_chart(table: pd.DataFrame, k: int) -> hv.Overlay:
    """Linear CKA and mean k-NN Jaccard by layer (in the table's row order), with Jaccard's chance level
    (from each layer's number of samples) as a dashed line."""
    layers = table["layer"].astype(str).tolist()
    chance = [chance_jaccard(int(k), int(n)) for n in table["samples"]]
    series = [("CKA", "linear CKA", table["linear_cka"]),
              ("Jaccard", f"k-NN Jaccard (k={k})", table["mean_knn_jaccard"])]
    overlay = hv.Overlay()
    for key, label, values in series:
        frame = pd.DataFrame({"layer": layers, "value": [float(v) for v in values]})
        overlay *= hv.Curve(frame, "layer", "value", label=label).opts(color=CHART_COLOURS[key], line_width=2,
                                                                      tools=["hover"])
        overlay *= hv.Scatter(frame, "layer", "value", label=label).opts(color=CHART_COLOURS[key], size=7,
                                                                        tools=["hover"])
    levels = sorted({f"{c:.3f}" for c in chance})
    overlay *= hv.Curve(pd.DataFrame({"layer": layers, "value": chance}), "layer", "value",
                        label=f"k-NN Jaccard by chance ({levels[0] if len(levels) == 1 else 'per layer'})").opts(
        color=CHART_COLOURS["chance"], line_dash="dashed", line_width=2, tools=["hover"])
    if layers:  # named on the chart too: near 0, the line runs along the axis
        overlay *= hv.Text(layers[-1], chance[-1] + 0.05, "chance", halign="center", fontsize=9).opts(
            color=CHART_COLOURS["chance"])
    rotation = 30 if sum(len(layer) for layer in layers) > 50 else 0
    return overlay.opts(ylim=(0, 1), xlabel="layer (capture order)", ylabel="similarity", xrotation=rotation,
                        legend_position="bottom", legend_cols=2, width=440, height=330, toolbar=None,
                        show_grid=True)


class ComparisonView:
    def __init__(self, lake: str, con, layouts: list[LayoutKey]) -> None:
        self.lake, self.con, self.layouts = lake, con, layouts
        self.comparisons = stored_comparisons(con)
        options = {describe_comparison(c): i for i, c in enumerate(self.comparisons)}
        self.choice = pn.widgets.Select(label="Comparison", options=options, width=select_width(list(options)))
        self.chart = pn.pane.HoloViews(None, css_classes=["lens-compare-chart"], width=450, height=330)
        tables = dict(disabled=True, show_index=False, selectable=1, width=440, layout="fit_data_fill", max_height=300,
                      stylesheets=[TABLE_CSS], configuration={"columnDefaults": {"headerWordWrap": True}})
        self.layers = pn.widgets.Tabulator(pd.DataFrame(), css_classes=["lens-layer-table"], **tables)
        self.changed = pn.widgets.Tabulator(pd.DataFrame(), css_classes=["lens-changed-table"], **tables)
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
        self.chart.object = layer_chart(self.table, c["k"])
        if len(self.table):
            self.show_layer(0)

    def layout_of(self, run_id: str, layer: str, step: int, pooling: str) -> LayoutKey | None:
        keys = [k for k in self.layouts if (k.run_id, k.layer, k.step, k.pooling) == (run_id, layer, step, pooling)]
        full = catalogue.full_layouts(self.lake, keys)
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

    def controls(self) -> list:
        """What goes in the page's sidebar while this tab is open."""
        linked = self.linked
        return [html_pane(HELP), linked.classes, linked.prompt, "### Group", linked.group_info, linked.clear_group]

    def main(self) -> pn.viewable.Viewable:
        # figures and lists above, both runs' maps below: the maps keep their size at any window width
        figures = pn.Column("### By layer", self.chart, "### Per layer (click one)", self.layers, self.status,
                            width=460)
        changed = pn.Column("### Most changed in this layer (click one)", self.changed, self.pair, width=460)
        return pn.Column(self.choice, pn.Row(figures, changed), self.linked.grid, "### Selected",
                         self.linked.selection, sizing_mode="stretch_width")

    def view(self) -> pn.viewable.Viewable:
        """The tab on its own (controls beside it), e.g. in a notebook."""
        return pn.Row(pn.Column(*self.controls(), width=300), self.main())
