"""Recompute a layout on part of a layer: the points passing the filters, or a hand-picked set (the
collected samples and the box / lasso region). UMAP runs in a background thread, as the session's one
heavy job (`MapState.job`): the button is disabled in the browser at the first click, and a request while
a job runs is refused with a notice. The new layout is saved beside the full one and shown when ready."""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np
import panel as pn

from dashboards.map_state import MapState
from dashboards.render import esc, html_pane
from store.lake import LayoutKey
from store.embed import embed_subset
from store.layouts import LayoutParams

MIN_POINTS = 20
SOURCES = {"filtered points": "filtered", "hand-picked (collected + box/lasso)": "picked"}


class RecomputePanel:
    def __init__(self, state: MapState, describe_filter: Callable[[], str],
                 run_later: Callable[[Callable[[], None]], None], on_done: Callable[[LayoutKey], None]) -> None:
        self.state, self.describe_filter, self.run_later, self.on_done = state, describe_filter, run_later, on_done
        self.source = pn.widgets.RadioButtonGroup(options=SOURCES, value="filtered")
        self.n_neighbors = pn.widgets.IntInput(label="n_neighbors", value=15, start=2, end=200, width=90)
        self.min_dist = pn.widgets.FloatInput(label="min_dist", value=0.1, start=0.0, end=1.0, step=0.05, width=90)
        self.seed = pn.widgets.IntInput(label="seed", value=0, start=0, end=2**31 - 1, width=90)
        self.button = pn.widgets.Button(label="Recompute layout", color="primary")
        # disabled in the browser at once, so a double click sends one request
        self.button.js_on_click(code="cb_obj.origin.disabled = true;")
        self.progress = pn.indicators.Progress(active=False, visible=False, width=240, bar_color="primary")
        self.status = html_pane("")
        self.button.on_click(lambda e: self.start())

    def chosen(self) -> tuple[np.ndarray, str]:
        """The samples to lay out, and how they were chosen (for the layout's name)."""
        state = self.state
        frame = state.points.frame
        if self.source.value == "filtered":
            return frame["sample_id"].to_numpy()[state.keep], self.describe_filter()
        rows = state.picked_rows()
        return frame["sample_id"].to_numpy()[rows], f"{len(rows)} hand-picked samples"

    def start(self) -> None:
        refused = self.state.job.start("a layout being computed")
        if refused:
            self.status.object = f"<span class='lens-error'>{esc(refused)}</span>"
            return
        ids, description = self.chosen()
        if len(ids) < MIN_POINTS:
            self.state.job.done()
            self.button.disabled = False
            self.status.object = (f"<span class='lens-error'>need at least {MIN_POINTS} points to lay out, "
                                  f"have {len(ids)}</span>")
            return
        params = LayoutParams(n_neighbors=int(self.n_neighbors.value), min_dist=float(self.min_dist.value),
                              seed=int(self.seed.value))
        self.button.disabled = True
        self.progress.param.update(visible=True, active=True)
        self.status.object = f"<span class='lens-recompute-status'>laying out {len(ids):,} points in the background…</span>"
        threading.Thread(target=self._work, args=(self.state.key, ids, params, description), daemon=True).start()

    def _work(self, key: LayoutKey, ids: np.ndarray, params: LayoutParams, description: str) -> None:
        try:
            new_key, error = embed_subset(self.state.lake, key, ids, params, description=description), None
        except Exception as err:  # shown on the page; the map stays usable
            new_key, error = None, f"{type(err).__name__}: {err}"
        self.run_later(lambda: self._finish(new_key, error, len(ids)))

    def _finish(self, new_key: LayoutKey | None, error: str | None, n: int) -> None:
        self.state.job.done()
        self.button.disabled = False
        self.progress.param.update(visible=False, active=False)
        if error:
            self.status.object = f"<span class='lens-error'>{esc(error)}</span>"
            return
        self.status.object = f"<span class='lens-recompute-done'>saved a layout of {n:,} points</span>"
        self.on_done(new_key)

    def view(self) -> pn.Column:
        return pn.Column("### Recompute layout", self.source, pn.Row(self.n_neighbors, self.min_dist, self.seed),
                         self.button, self.progress, self.status, sizing_mode="stretch_width")
