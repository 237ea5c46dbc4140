"""The box / lasso gallery: how many samples the region holds and of which classes or prompts, a paged
wrapping grid of their thumbnails (a click selects one, + collects it), and CSV / Parquet exports."""

from __future__ import annotations

from typing import Callable

import panel as pn

from dashboards.map_state import MapState
from dashboards.render import esc, html_pane
from dashboards.thumbs import Thumbs, card
from store import maps

PAGE_SIZE = 48
EMPTY = "<i>box- or lasso-select on the map to open a gallery</i>"


class Gallery:
    def __init__(self, state: MapState, on_select: Callable[[int], None], on_collect: Callable[[list[int]], None]) -> None:
        self.state = state
        self.info = html_pane(EMPTY, css_classes=["lens-gallery-info"], sizing_mode="stretch_width")
        self.page = pn.widgets.IntInput(label="Page", value=1, start=1, width=90)
        self.thumbs = Thumbs(on_action=lambda run, sample, action: on_select(sample) if action == "select"
                             else on_collect([sample]), actions=["collect"], css_classes=["lens-gallery"],
                             sizing_mode="stretch_width")
        self.export_csv = pn.widgets.FileDownload(callback=lambda: self.export("csv"), filename="selection.csv",
                                                  label="Export selection (CSV)", color="light")
        self.export_parquet = pn.widgets.FileDownload(callback=lambda: self.export("parquet"),
                                                      filename="selection.parquet", label="Export selection (Parquet)",
                                                      color="light")
        self.page.param.watch(lambda e: self.show(), "value")

    def show(self) -> None:
        rows = self.state.region_rows
        if not len(rows):
            self.info.object = EMPTY
            self.thumbs.items = []
            return
        pages = max(1, -(-len(rows) // PAGE_SIZE))
        page = min(max(1, int(self.page.value)), pages)
        frame = self.state.points.frame
        counts = frame["label"].iloc[rows].value_counts().head(12)
        summary = ", ".join(f"{esc(label)}: {n:,}" for label, n in counts.items() if n)
        self.info.object = (f"<b class='lens-region-count'>{len(rows):,}</b> selected · page {page} of {pages}"
                            f"<div>{summary}</div>")
        run_id = self.state.key.run_id
        self.thumbs.items = [card(run_id, int(frame["chunk"].iat[r]), int(frame["sample_id"].iat[r]),
                                  str(frame["label"].iat[r])) for r in rows[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]]

    def first_page(self) -> None:
        if self.page.value != 1:
            self.page.value = 1  # shows
        else:
            self.show()

    def export(self, fmt: str):
        return maps.export_selection(maps.selection_frame(self.state.points, self.state.region_rows), fmt)

    def view(self) -> pn.Column:
        return pn.Column("### Selection gallery", self.info, pn.Row(self.page, self.export_csv, self.export_parquet),
                         self.thumbs, sizing_mode="stretch_width")
