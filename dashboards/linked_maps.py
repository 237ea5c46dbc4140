"""Linked small multiples: two to four layouts side by side, linked by sample id.

Hovering a point marks the same sample in every panel; clicking selects it everywhere and lists its
raw-space neighbours in each panel's layer (how many it keeps from the panel before); a box or lasso in
one panel highlights that group in all of them, so it can be followed from layer to layer or step to
step; class and prompt filters apply to every panel. Panels are Procrustes-aligned onto the first so a
sample sits in about the same place in each.

Sample ids link panels only when they name the same sample: layouts of one run, or of paired runs (one
plan through two models). `SideBySide` is the explorer's tab for one run; the comparison tab uses
`LinkedMaps` for a pair.
"""

from __future__ import annotations

import numpy as np
import panel as pn

from dashboards.map_view import MapView
from dashboards.render import category_colour, choice_options, esc, html_pane, image_url
from dashboards.thumbs import Thumbs, card
from store import catalogue, maps
from store.lake import LayoutKey

PANEL_WIDTH, PANEL_HEIGHT = 400, 360
MAX_PANELS = 4
NEIGHBOURS = 10


class MapPanel:
    """One layout in the grid: its points (aligned), a title, and its map."""

    def __init__(self, owner: "LinkedMaps", index: int, points: maps.MapPoints, title: str) -> None:
        self.owner, self.index, self.points, self.title = owner, index, points, title
        self.neighbour_ids: list[int] = []
        self.map = MapView(PANEL_WIDTH, PANEL_HEIGHT, on_pick=owner.select, on_hover=owner.hover,
                           on_region=lambda rows: owner.set_group(self, rows))
        self.caption = html_pane("", width=PANEL_WIDTH)
        self.view = pn.Column(self.caption, self.map.pane, css_classes=["lens-panel"])
        self.show(points, title)

    def show(self, points: maps.MapPoints, title: str) -> None:
        """Another layout in this panel (the map is kept, so the page redraws it in place)."""
        self.points, self.title, self.neighbour_ids = points, title, []
        self.caption.object = f"<div class='lens-panel-title'><b>{esc(title)}</b></div>"
        self.map.show(points)

    @property
    def keep(self) -> np.ndarray:
        return self.map.keep

    def show_group(self, group_ids: np.ndarray | None) -> None:
        if group_ids is None:
            self.map.set_highlight(None)
            return
        rows = self.points.rows_of(group_ids)
        self.map.set_highlight(rows[rows >= 0])


class LinkedMaps:
    """A grid of layouts linked by sample id, with shared filters, hover, selection and group."""

    def __init__(self, lake: str, con) -> None:
        self.lake, self.con = lake, con
        self.panels: list[MapPanel] = []
        self.group_ids: np.ndarray | None = None
        self.selected_id: int | None = None
        self.hover_id: int | None = None
        # as wide as the sidebar they sit in (the default 300 px overflowed its 310 px less padding)
        self.classes = pn.widgets.MultiChoice(label="Classes", options={}, placeholder="all classes",
                                              sizing_mode="stretch_width")
        self.prompt = pn.widgets.TextInput(label="Prompt contains", placeholder="any prompt", sizing_mode="stretch_width")
        self.classes.param.watch(lambda e: self.apply_filters(), "value")
        self.prompt.param.watch(lambda e: self.apply_filters(), "value")
        self.clear_group = pn.widgets.Button(label="Clear group", disabled=True)
        self.clear_group.on_click(lambda e: self.set_group(None, None))
        self.count = html_pane("")
        self.group_info = html_pane("<i>box- or lasso-select in any panel to follow a group across panels</i>")
        self.selection = pn.Column(html_pane("<i>click a point in any panel</i>"), css_classes=["lens-linked-selection"],
                                   sizing_mode="stretch_width")
        self.grid = pn.GridBox(ncols=2)
        self.notice = html_pane("")

    # --- panels -------------------------------------------------------------------------------------

    def show(self, keys: list[LayoutKey], titles: list[str] | None = None, align: bool = True) -> None:
        """Lay out these layouts (at most four) side by side; with `align`, each is Procrustes-fitted onto
        the first over their shared samples."""
        keys = list(keys)[:MAX_PANELS]
        titles = titles or [f"{k.layer} · step {k.step}" for k in keys]
        loaded = [maps.points_for(self.lake, key) for key in keys]
        if align and loaded:
            loaded = [loaded[0]] + [maps.aligned_onto(loaded[0], p) for p in loaded[1:]]
        if len(self.panels) == len(loaded):  # the same grid: each panel shows its new layout
            for panel, points, title in zip(self.panels, loaded, titles):
                panel.show(points, title)
        else:
            self.panels = [MapPanel(self, i, points, title) for i, (points, title) in enumerate(zip(loaded, titles))]
        class_names = {}
        for points in loaded:
            class_names.update(points.class_names)
        options = choice_options({catalogue.sample_label(i, name, None): i for i, name in sorted(class_names.items())})
        self.classes.param.update(options=options, value=[v for v in self.classes.value if v in options.values()])
        self.grid.ncols = min(len(self.panels), 2)  # two a row: four panels still fit beside the sidebars
        self.grid.objects = [panel.view for panel in self.panels]
        if self.group_ids is not None and not len(self.group_ids):
            self.group_ids = None
        self.apply_filters()
        self.refresh_selection()

    def apply_filters(self) -> None:
        for panel in self.panels:
            panel.map.set_filter(panel.points.mask(self.classes.value, self.prompt.value), fit=True)
        if self.panels:
            shown = int(self.panels[0].keep.sum())
            self.count.object = (f"<b class='lens-linked-shown'>{shown:,}</b> of {len(self.panels[0].points):,} "
                                 "samples shown in each panel")

    # --- linked interactions --------------------------------------------------------------------------

    def hover(self, sample_id: int | None) -> None:
        """The hovered sample (its card shows at the cursor) is ringed in every other panel too."""
        if sample_id is None or sample_id == self.hover_id or not self.panels:
            return
        self.hover_id = sample_id
        self.update_markers()

    def select(self, sample_id: int) -> None:
        self.selected_id = int(sample_id)
        self.refresh_selection()

    def refresh_selection(self) -> None:
        """The selected sample's image, and its raw-space neighbours in each panel's layer (clickable)."""
        for panel in self.panels:
            panel.neighbour_ids = []
        first = self.panels[0].points if self.panels else None
        row = -1 if self.selected_id is None or first is None else int(first.rows_of([self.selected_id])[0])
        if row < 0:
            self.selected_id = None
            self.selection.objects = [html_pane("<i>click a point in any panel</i>")]
            self.update_markers()
            return
        info = first.describe(row)
        parts = [html_pane(f"<div class='lens-selected-sample' data-sample='{info['sample_id']}'>"
                           f"<img src='{esc(image_url(info['run_id'], info['chunk'], info['sample_id'], thumb=False))}'>"
                           f"<div><b>{esc(info['label'])}</b> · sample {info['sample_id']} · seed {info['seed']}"
                           "</div></div>")]
        previous: set[int] | None = None
        for panel in self.panels:
            try:
                ids, distances = maps.raw_neighbours(self.con, self.lake, panel.points.key, self.selected_id,
                                                     NEIGHBOURS)
            except FileNotFoundError as err:
                parts.append(html_pane(f"<div class='lens-error'>{esc(err)}</div>"))
                continue
            panel.neighbour_ids = [int(i) for i in ids]
            kept = "" if previous is None else (f" · <span class='lens-kept'>{len(previous & set(ids))} of "
                                                f"{len(ids)}</span> kept from the panel before")
            parts.append(html_pane(f"<div class='lens-panel-neighbours' data-panel='{panel.index}'>"
                                   f"<b>{esc(panel.title)}</b>: {len(ids)} nearest in raw activations{kept}</div>"))
            parts.append(Thumbs(items=[neighbour_card(panel.points, s, d) for s, d in zip(ids, distances)],
                                on_action=lambda run, sample, action: self.select(sample),
                                css_classes=["lens-panel-thumbs"], sizing_mode="stretch_width"))
            previous = set(ids)
        self.selection.objects = parts
        self.update_markers()

    def set_group(self, source: MapPanel | None, rows: np.ndarray | None) -> None:
        """Follow these rows of one panel (by sample id) in every panel; None clears the group."""
        if source is None or rows is None or not len(rows):
            self.group_ids = None
            self.clear_group.disabled = True
            self.group_info.object = "<i>box- or lasso-select in any panel to follow a group across panels</i>"
        else:
            frame = source.points.frame
            self.group_ids = np.sort(frame["sample_id"].to_numpy()[rows])
            counts = frame["label"].iloc[rows].value_counts().head(8)
            summary = ", ".join(f"{esc(label)}: {n:,}" for label, n in counts.items() if n)
            self.clear_group.disabled = False
            self.group_info.object = (f"<b class='lens-group-count'>{len(rows):,}</b> samples selected in "
                                      f"{esc(source.title)}, highlighted in every panel<div>{summary}</div>")
        for panel in self.panels:
            panel.show_group(self.group_ids)
            if panel is not source:
                panel.map.draw_region([], [])

    def update_markers(self) -> None:
        for panel in self.panels:
            roles = [(i, "neighbour") for i in panel.neighbour_ids]
            if self.hover_id is not None:
                roles.append((self.hover_id, "hover"))
            if self.selected_id is not None:
                roles.append((self.selected_id, "selected"))
            panel.map.mark(roles)

    def legend(self) -> str:
        if not self.panels:
            return ""
        points = self.panels[0].points
        categories = list(points.frame["label"].cat.categories)
        codes = points.colour_codes("label")
        rows = [f"<div><span class='swatch' style='background:{category_colour(int(codes[i]))}'></span>{esc(c)}</div>"
                for i, c in enumerate(categories[:30])]
        return f"<div class='lens-legend'>{''.join(rows)}</div>"


def neighbour_card(points: maps.MapPoints, sample_id: int, distance: float) -> dict:
    row = int(points.rows_of([sample_id])[0])
    chunk = int(points.frame["chunk"].iat[row]) if row >= 0 else 0
    label = str(points.frame["label"].iat[row]) if row >= 0 else ""
    return card(points.key.run_id, chunk, int(sample_id), label, f"{distance:.3g}")


def default_layouts(keys: list[LayoutKey], layer_order: list[str]) -> list[LayoutKey]:
    """Up to four layouts of one run to start from: layers spread from input to output at the last step,
    or, for a run laid out at one layer only, its steps."""
    if not keys:
        return []
    by_layer: dict[str, LayoutKey] = {}
    for key in sorted(keys, key=lambda k: (k.step, k.params_hash)):
        if key.layer not in by_layer or key.step >= by_layer[key.layer].step:
            by_layer[key.layer] = key
    layers = catalogue.in_capture_order(by_layer, layer_order)
    if len(layers) == 1:
        steps = sorted({k.step for k in keys if k.layer == layers[0]})
        chosen = [steps[round(i * (len(steps) - 1) / 3)] for i in range(4)] if len(steps) > 4 else steps
        return [next(k for k in keys if k.layer == layers[0] and k.step == s) for s in dict.fromkeys(chosen)]
    if len(layers) > MAX_PANELS:
        layers = [layers[round(i * (len(layers) - 1) / (MAX_PANELS - 1))] for i in range(MAX_PANELS)]
    return [by_layer[layer] for layer in dict.fromkeys(layers)]


class SideBySide:
    """The explorer's "Side by side" tab: pick a run and two to four of its layouts."""

    def __init__(self, lake: str, con, layouts: list[LayoutKey]) -> None:
        self.lake, self.con = lake, con
        self.layouts = catalogue.full_layouts(lake, layouts)
        runs = sorted({k.run_id for k in self.layouts})
        self.linked = LinkedMaps(lake, con)
        self.run = pn.widgets.Select(label="Run", options=runs, value=runs[0] if runs else None)
        self.choice = pn.widgets.MultiChoice(label="Layouts side by side (2 to 4)", options={}, max_items=MAX_PANELS)
        self.align = pn.widgets.Checkbox(label="Align panels onto the first (Procrustes)", value=True)
        self.legend = html_pane("", max_height=260, styles={"overflow-y": "auto"})
        self.run.param.watch(lambda e: self.refresh_choices(), "value")
        self.choice.param.watch(lambda e: self.show(), "value")
        self.align.param.watch(lambda e: self.show(), "value")
        self.refresh_choices()

    def refresh_choices(self) -> None:
        keys = [k for k in self.layouts if k.run_id == self.run.value]
        order = catalogue.run_layers(self.con, self.run.value) if self.run.value else []
        depth = {layer: i for i, layer in enumerate(catalogue.in_capture_order({k.layer for k in keys}, order))}
        keys.sort(key=lambda k: (depth[k.layer], k.step))
        options = choice_options({f"{k.layer} · step {k.step} · {k.pooling} · "
                                  f"{catalogue.layout_info(self.lake, k).name}": k for k in keys})
        self.choice.param.update(options=options, value=default_layouts(keys, order))

    def show(self) -> None:
        keys = list(self.choice.value)
        titles = [f"{k.layer} · step {k.step}" for k in keys]
        self.linked.show(keys, titles, align=self.align.value)
        self.legend.object = self.linked.legend()

    def controls(self) -> list:
        """What goes in the page's sidebar while this tab is open."""
        linked = self.linked
        return [self.run, self.choice, self.align, linked.classes, linked.prompt, linked.count, self.legend,
                "### Group", linked.group_info, linked.clear_group]

    def main(self) -> pn.viewable.Viewable:
        return pn.Column(self.linked.grid, "### Selected", self.linked.selection, sizing_mode="stretch_width")

    def view(self) -> pn.viewable.Viewable:
        """The tab on its own (controls beside the panels), e.g. in a notebook."""
        return pn.Row(pn.Column(*self.controls(), width=300), self.main())
