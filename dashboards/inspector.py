"""The Map tab's inspector: the selected sample (image and metadata), its k nearest neighbours in raw
activation space or on the 2-D map (each one clickable, removable, collectable), a box to jump to a
sample id, the collected set with thumbnails, and saving or exporting what was picked."""

from __future__ import annotations

from typing import Callable

import pandas as pd
import panel as pn

from dashboards.map_state import MapState
from dashboards.render import esc, html_pane, image_url
from dashboards.thumbs import Thumbs, card
from store import maps
from store.selections import SelectionError, save_selection

NO_SELECTION = "<i>click a point on the map, a thumbnail, or type a sample id</i>"


class Inspector:
    def __init__(self, state: MapState, on_select: Callable[[int], None], on_marks: Callable[[], None]) -> None:
        self.state, self.on_select, self.on_marks = state, on_select, on_marks
        self._distances: dict[int, float] = {}
        self.jump = pn.widgets.TextInput(label="Go to sample id", placeholder="e.g. 1234", sizing_mode="stretch_width")
        self.jump_status = html_pane("")
        self.selected = html_pane(NO_SELECTION, css_classes=["lens-selected"], sizing_mode="stretch_width")
        self.k = pn.widgets.IntSlider(label="k neighbours", start=1, end=50, value=10, sizing_mode="stretch_width")
        self.space = pn.widgets.RadioButtonGroup(options=["raw activations", "2-D map"], value="raw activations")
        self.neighbour_title = html_pane("", css_classes=["lens-neighbour-title"])
        self.neighbours = Thumbs(on_action=self._thumb_action, actions=["collect", "remove"],
                                 css_classes=["lens-neighbours"], sizing_mode="stretch_width")
        self.collect_selected = pn.widgets.Button(label="Collect point", disabled=True)
        self.collect_neighbours = pn.widgets.Button(label="Collect neighbours", disabled=True)
        self.collected_title = html_pane("", css_classes=["lens-collected-title"])
        self.collected = Thumbs(on_action=self._thumb_action, actions=["remove"], css_classes=["lens-collected"],
                                sizing_mode="stretch_width")
        self.collected_csv = pn.widgets.FileDownload(callback=self._collected_export, filename="collected.csv",
                                                     label="Export collected (CSV)", color="light")
        self.selection_name = pn.widgets.TextInput(label="Save selection as", placeholder="name, e.g. odd-sevens",
                                                   sizing_mode="stretch_width")
        self.save = pn.widgets.Button(label="Save selection (collected + box/lasso)")
        self.save_status = html_pane("")
        self.jump.param.watch(lambda e: self._jump(e.new), "value")
        self.k.param.watch(lambda e: self.show_selected(), "value")
        self.space.param.watch(lambda e: self.show_selected(), "value")
        self.collect_selected.on_click(lambda e: self.collect([self.state.selected_id]))
        self.collect_neighbours.on_click(lambda e: self.collect(self.state.neighbour_ids))
        self.save.on_click(lambda e: self.save_selection())
        self.refresh_collected()

    # --- the selected sample -----------------------------------------------------------------------------

    def _jump(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        sample = int(text) if text.isdigit() and len(text) < 19 else None
        if sample is None or self.state.points.rows_of([sample])[0] < 0:
            self.jump_status.object = f"<span class='lens-error'>no sample {esc(text)} in this layout</span>"
            return
        self.jump_status.object = ""
        self.on_select(sample)

    def show_selected(self) -> None:
        """The selected sample's card and its k nearest neighbours (raw space or the 2-D map)."""
        state = self.state
        row = -1 if state.selected_id is None else int(state.points.rows_of([state.selected_id])[0])
        if row < 0:
            return self.clear()
        info = state.points.describe(row)
        meta = "".join(f"<tr><td>{esc(k)}</td><td>{esc(f'{v:.3g}' if isinstance(v, float) else v)}</td></tr>"
                       for k, v in info.items() if k not in ("x", "y", "label") and v not in (None, ""))
        self.selected.object = (
            f"<div class='lens-selected-sample' data-sample='{info['sample_id']}'>"
            f"<img src='{esc(image_url(info['run_id'], info['chunk'], info['sample_id'], thumb=False))}'>"
            f"<div><b>{esc(info['label'])}</b></div><table class='lens-meta'>{meta}</table></div>")
        self.collect_selected.disabled = self.collect_neighbours.disabled = False
        k = int(self.k.value)
        raw_ids, raw_distances = maps.raw_neighbours(state.con, state.lake, state.key, state.selected_id, k)
        if self.space.value == "raw activations":
            ids, distances = raw_ids, raw_distances
            title = f"{len(ids)} nearest in raw activation space (cosine distance)"
        else:
            rows, distances = state.points.map_neighbours(row, k)
            ids = state.points.frame["sample_id"].to_numpy()[rows].tolist()
            overlap = len(set(ids) & set(raw_ids))
            title = (f"{len(ids)} nearest on the 2-D map (map distance); "
                     f"<span class='lens-overlap'>{overlap} of {k}</span> are also raw-space neighbours")
        state.neighbour_ids = [int(i) for i in ids]
        self._show_neighbours(title, list(distances))

    def _show_neighbours(self, title: str, distances: list[float]) -> None:
        state = self.state
        self.neighbour_title.object = f"<div>{title}</div>"
        self.neighbours.items = [card(state.key.run_id, state.chunk_of(s), s, state.label_of(s), f"{d:.3g}")
                                 for s, d in zip(state.neighbour_ids, distances)]
        self._distances = dict(zip(state.neighbour_ids, distances))
        self.on_marks()

    def clear(self) -> None:
        self.state.selected_id, self.state.neighbour_ids = None, []
        self.selected.object = NO_SELECTION
        self.neighbour_title.object = ""
        self.neighbours.items = []
        self.collect_selected.disabled = self.collect_neighbours.disabled = True
        self.on_marks()

    def remove_neighbour(self, sample_id: int) -> None:
        """Take one sample out of the neighbour set (what "Collect neighbours" collects)."""
        state = self.state
        state.neighbour_ids = [i for i in state.neighbour_ids if i != sample_id]
        distances = [self._distances[i] for i in state.neighbour_ids]
        self._show_neighbours(f"{len(state.neighbour_ids)} neighbours (edited by hand)", distances)

    def _thumb_action(self, run_id: str, sample_id: int, action: str) -> None:
        if action == "select":
            self.on_select(sample_id)
        elif action == "collect":
            self.collect([sample_id])
        elif sample_id in self.state.collected:
            self.uncollect(sample_id)
        else:
            self.remove_neighbour(sample_id)

    # --- the collected set ---------------------------------------------------------------------------

    def collect(self, sample_ids: list[int | None]) -> None:
        """Add samples to the collected set (the selection stays as it is)."""
        self.state.collected = list(dict.fromkeys([*self.state.collected, *(int(i) for i in sample_ids if i is not None)]))
        self.refresh_collected()
        self.on_marks()

    def uncollect(self, sample_id: int) -> None:
        self.state.collected = [i for i in self.state.collected if i != sample_id]
        self.refresh_collected()
        self.on_marks()

    def refresh_collected(self) -> None:
        state = self.state
        n = len(state.collected)
        self.collected_title.object = (f"<div><b class='lens-collected-count'>{n}</b> collected "
                                       "(× removes one)</div>" if n else "<i>nothing collected yet: + on a "
                                       "thumbnail, or the buttons above</i>")
        self.collected.items = [card(state.key.run_id, state.chunk_of(s), s, state.label_of(s))
                                for s in state.collected] if state.points is not None else []

    def _collected_export(self):
        return maps.export_selection(maps.selection_frame(self.state.points, self.state.present_rows(
            self.state.collected)), "csv")

    def selection(self) -> pd.DataFrame:
        """The collected samples and the box/lasso region, with metadata and map positions."""
        return maps.selection_frame(self.state.points, self.state.picked_rows())

    def save_selection(self) -> None:
        name = self.selection_name.value.strip()
        try:
            save_selection(self.state.lake, name, self.selection())
        except (SelectionError, OSError) as err:
            self.save_status.object = f"<span class='lens-error'>{esc(err)}</span>"
            return
        self.save_status.object = (f"<span class='lens-saved' data-name='{esc(name)}'>saved as {esc(name)}: "
                                   f"<code>store.selections.read_selection(lake, {esc(repr(name))})</code></span>")

    def view(self) -> pn.Column:
        return pn.Column(
            "### Selected", self.jump, self.jump_status, self.selected, self.k, self.space, self.neighbour_title,
            self.neighbours, pn.Row(self.collect_selected, self.collect_neighbours), "### Collected",
            self.collected_title, self.collected, self.collected_csv, self.selection_name, self.save,
            self.save_status, sizing_mode="stretch_width")
