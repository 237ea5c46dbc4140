"""The Map tab: one layout of one layer as a datashaded map (`MapView`) with its side panels, kept in step.

`MapTab` holds the tab's state (`MapState`) and is the only one to change it: a panel reports what the
user did through a callback (a layout chosen, a filter typed, a point or thumbnail clicked, a region
drawn, a layout recomputed, samples generated), `MapTab` updates the state, then tells the map and the
panels to show it. Every change of what is drawn reaches the map at once (see `MapView`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import panel as pn

from dashboards.filter_panel import FilterPanel
from dashboards.gallery import Gallery
from dashboards.generate_panel import GeneratePanel
from dashboards.inspector import Inspector
from dashboards.layout_picker import LayoutPicker
from dashboards.map_state import MapState
from dashboards.map_view import MapView
from dashboards.recompute_panel import RecomputePanel
from dashboards.render import OVERLAY_COLOUR, esc, html_pane
from dashboards.trajectories import TrajectoryPanel
from store import connect, maps
from store.lake import LayoutKey
from store.placement import overlay_points, placeable_runs

NO_OVERLAY = "(none)"


class MapTab:
    """One browser session's Map tab. `args` are URL parameters (run, layer, step, layout, classes,
    prompt, sample); `on_state(values)` hears every change the address bar should follow."""

    def __init__(self, lake: str, args: dict[str, str] | None = None,
                 on_state: Callable[[dict[str, str]], None] | None = None) -> None:
        self.lake, self.args, self.on_state = lake, dict(args or {}), on_state
        self.con = connect(lake)
        self.doc = pn.state.curdoc
        self.state = MapState(lake, self.con)
        self.notices = html_pane("", css_classes=["lens-notices"], sizing_mode="stretch_width")
        self.model_info = html_pane("", sizing_mode="stretch_width")
        self.overlay = pn.widgets.Select(label="Also show another run (dark grey)",
                                         options=[NO_OVERLAY], value=NO_OVERLAY, sizing_mode="stretch_width")
        self.overlay_info = html_pane("", sizing_mode="stretch_width")
        self.overlay.param.watch(lambda e: self.show_overlay(), "value")
        self.map = MapView(responsive=True, on_pick=self.select_sample, on_region=self._region)
        self.picker = LayoutPicker(lake, self.con, self.load_layout, wanted=self.args)
        if not self.picker.layouts:
            raise RuntimeError(f"no layouts in lake {lake}; run `make ingest && make embed` first")
        self.filters = FilterPanel(on_filter=self.apply_filters, on_colour=self._colour, on_fit=self.map.fit)
        self.inspector = Inspector(self.state, on_select=self.select_sample, on_marks=self.update_markers)
        self.gallery = Gallery(self.state, on_select=self.select_sample, on_collect=self.inspector.collect)
        self.recompute = RecomputePanel(self.state, self.describe_filter, self.run_later, self.show_new_layout)
        self.trajectories = TrajectoryPanel(self.state, lambda: self.picker.layouts, self.map.paths.send)
        self.generate = GeneratePanel(self.state, lambda: int(self.inspector.k.value), self._placed,
                                      self.select_sample, self.run_later)
        for text in self.picker.rejected:
            self.notice(text)
        self._loading = False
        self.load_layout(self.picker.key)
        self._apply_url_selection()

    def notice(self, text: str) -> None:
        self.notices.object += f"<div class='lens-notice'>{esc(text)}</div>"

    def run_later(self, callback: Callable[[], None]) -> None:
        """Run `callback` in the session's event loop (from a background thread), or now without a server."""
        if self.doc is not None:
            self.doc.add_next_tick_callback(callback)
        else:
            callback()

    # --- URL parameters ----------------------------------------------------------------------------

    def _apply_url_selection(self) -> None:
        args, points = self.args, self.state.points
        if "classes" in args:
            try:
                wanted = [int(c) for c in args["classes"].split(",") if c.strip()]
            except ValueError:
                wanted = None
            if wanted is None or not set(wanted) <= set(points.class_names):
                self.notice(f"ignored URL parameter classes={args['classes']!r}: expected class ids such as 3,5")
            else:
                self.filters.classes.value = wanted
        if args.get("prompt"):
            self.filters.prompt.value = args["prompt"][:500]
        if "sample" in args:
            text = args["sample"]
            sample = int(text) if text.isdigit() and len(text) < 19 else None
            if sample is None or points.rows_of([sample])[0] < 0:
                self.notice(f"ignored URL parameter sample={text!r}: no such sample in this layout")
            else:
                self.select_sample(sample)

    def url_values(self) -> dict[str, str]:
        """The view as URL parameters (empty values are left out of the address)."""
        key = self.state.key
        return {"run": key.run_id, "layer": key.layer, "step": str(key.step), "layout": key.params_hash,
                **self.filters.url_values(),
                "sample": "" if self.state.selected_id is None else str(self.state.selected_id)}

    def _state_changed(self) -> None:
        if self.on_state is not None and not self._loading:
            self.on_state(self.url_values())

    # --- what the map shows --------------------------------------------------------------------------

    def load_layout(self, key: LayoutKey | None) -> None:
        state = self.state
        if key is None or (state.points is not None and state.points.key == key):
            return
        self._loading = True
        try:
            state.points = points = maps.points_for(self.lake, key)
            self.model_info.object = (f"<div class='lens-model'>model <b>{esc(points.model)}</b> · "
                                      f"{len(points):,} points</div>")
            self.filters.follow_layout(points)
            state.keep = self.filters.mask(points)
            state.region_rows = np.empty(0, dtype=np.int64)
            runs = placeable_runs(self.lake, key)
            self.overlay.param.update(options=[NO_OVERLAY, *runs],
                                      value=self.overlay.value if self.overlay.value in runs else NO_OVERLAY)
            self.show_overlay(redraw=False)
            self.map.show(points, state.keep)
            self.filters.show_counts(points, state.keep)
            self.inspector.show_selected()  # keeps the selection across layers and steps
            self.inspector.refresh_collected()
            self.gallery.first_page()
            self.generate.follow_layout()
        finally:
            self._loading = False
        self.update_markers()
        self._state_changed()

    def apply_filters(self) -> None:
        state = self.state
        if self._loading or state.points is None:
            return
        state.keep = self.filters.mask(state.points)
        if len(state.region_rows):
            state.region_rows = state.region_rows[state.keep[state.region_rows]]
            self.gallery.first_page()
        self.filters.show_counts(state.points, state.keep)
        self.show_overlay(redraw=False)
        self.map.set_filter(state.keep, fit=True)
        self._state_changed()

    def show_overlay(self, redraw: bool = True) -> None:
        """Another run's samples (real digits, say) placed on this layout in dark grey, under this run's
        points, limited to the classes the filter shows."""
        run_id, key = self.overlay.value, self.state.key
        if run_id in (None, NO_OVERLAY) or key is None:
            self.map.set_overlay(None, redraw)
            self.overlay_info.object = ""
            return
        placed = overlay_points(self.lake, key, run_id)
        if self.filters.classes.value:
            placed = placed[placed["class_id"].isin(self.filters.classes.value)]
        self.map.set_overlay(placed, redraw)
        self.overlay_info.object = (f"<div class='lens-overlay' data-run='{esc(run_id)}' data-count='{len(placed)}'>"
                                    f"<span class='swatch' style='background:{OVERLAY_COLOUR}'></span>{esc(run_id)}: "
                                    f"{len(placed):,} samples placed by their {esc(key.layer)} vectors</div>")

    def _colour(self, colour: str) -> None:
        self.map.set_colour(colour)
        self.filters.show_counts(self.state.points, self.state.keep)

    def describe_filter(self) -> str:
        parts = []
        if self.filters.classes.value:
            parts.append("classes " + ", ".join(str(c) for c in self.filters.classes.value))
        for name, widget in (("prompt", self.filters.prompt), ("tag", self.filters.tag)):
            if widget.value:
                parts.append(f"{name} contains {widget.value!r}")
        return "; ".join(parts) or "all points"

    def update_markers(self) -> None:
        state = self.state
        if state.points is None:
            return
        roles = [(i, "collected") for i in state.collected] + [(i, "neighbour") for i in state.neighbour_ids]
        if state.selected_id is not None:
            roles.append((state.selected_id, "selected"))
        self.map.mark(roles, extra=state.generated_positions)
        self.trajectories.update()

    # --- what the user did ---------------------------------------------------------------------------

    def select_sample(self, sample_id: int) -> None:
        self.state.selected_id = int(sample_id)
        self.inspector.show_selected()
        self.generate.follow_selection()
        self._state_changed()

    def _region(self, rows: np.ndarray) -> None:
        self.state.region_rows = rows
        self.gallery.first_page()
        self.trajectories.update()

    def _placed(self, positions: pd.DataFrame) -> None:
        self.state.generated_positions = positions
        self.update_markers()

    def show_new_layout(self, key: LayoutKey) -> None:
        self.picker.refresh()
        self.picker.choose(key=key)

    def show_label(self, run_id: str, layer: str, label: str) -> None:
        """Filter the map to one class ("3", "417: balloon") or prompt of a run, on this layer if laid out."""
        self.picker.choose(run_id=run_id, layer=layer)
        class_id = self.state.points.class_of_label(label)
        if class_id is not None:
            self.filters.prompt.value = ""
            self.filters.classes.value = [class_id]
        else:
            self.filters.classes.value = []
            self.filters.prompt.value = label

    def selection(self) -> pd.DataFrame:
        """What is selected in the browser (collected + box/lasso), for notebooks."""
        return self.inspector.selection()

    # --- layout ----------------------------------------------------------------------------------------

    def sidebar(self) -> list:
        return [self.notices, *self.picker.widgets(), self.model_info, *self.filters.widgets(), self.overlay,
                self.overlay_info, self.generate.view(), self.recompute.view()]

    def main(self) -> pn.viewable.Viewable:
        inspector = pn.Column(self.inspector.view(), self.generate.regenerate_button, self.generate.regenerate_status,
                              self.trajectories.view(), width=360, css_classes=["lens-inspector"],
                              styles={"overflow-y": "auto", "max-height": "calc(100vh - 130px)"})
        centre = pn.Column(self.map.pane, self.generate.results, self.gallery.view(),
                           sizing_mode="stretch_width", styles={"min-width": "0"})
        return pn.Row(centre, inspector, sizing_mode="stretch_width")
