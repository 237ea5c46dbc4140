"""Trajectories: the paths of the selected, collected and box/lasso-selected samples across a run's
laid-out steps of the current layer (a multi-step run), or across its layers (a one-step run), each
layout Procrustes-aligned onto the one on the map. More than MAX_PATHS samples are thinned to a random
subset (seeded, so the same selection draws the same paths)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import panel as pn

from dashboards.map_state import MapState
from dashboards.render import esc, html_pane
from store import catalogue, maps
from store.lake import LayoutKey

MAX_PATHS = 500


class TrajectoryPanel:
    def __init__(self, state: MapState, layouts: Callable[[], list[LayoutKey]],
                 draw: Callable[[list[np.ndarray]], None]) -> None:
        """`layouts()`: the lake's layouts now; `draw(paths)`: put paths on the map ([] clears them)."""
        self.state, self.layouts, self.draw = state, layouts, draw
        self.toggle = pn.widgets.Checkbox(label="Trajectories of the selection (across steps or layers)",
                                          css_classes=["lens-paths-toggle"])
        self.info = html_pane("", css_classes=["lens-paths-info"])
        self.drawn = False
        self._full: tuple[tuple, list] = ((), [])  # the lake's layouts and the full ones among them
        self.toggle.param.watch(lambda e: self.update(), "value")

    def sample_ids(self) -> np.ndarray:
        state = self.state
        ids = state.points.frame["sample_id"].to_numpy()[state.picked_rows()]
        return np.union1d(ids, [state.selected_id] if state.selected_id is not None else []).astype(np.int64)

    def update(self) -> None:
        state = self.state
        if not self.toggle.value or state.points is None:
            if self.drawn:  # every marker update passes here: send nothing when nothing is drawn
                self.draw([])
                self.drawn = False
            self.info.object = ""
            return
        full = self.full_layouts()
        kind, keys = maps.trajectory_layouts(full, state.key, catalogue.run_layers(state.con, state.key.run_id))
        ids = self.sample_ids()
        if len(keys) < 2 or not len(ids):
            self.draw([])
            self.info.object = ("<i>select, collect or box-select samples to draw their paths</i>" if len(keys) > 1
                                else "<i>this run has one layout of this kind; embed more steps or layers</i>")
            return
        total = len(ids)
        if total > MAX_PATHS:
            ids = np.sort(np.random.default_rng(0).choice(ids, MAX_PATHS, replace=False))
        paths = maps.trajectories(state.lake, state.points, keys, ids)
        self.draw([p[np.isfinite(p).all(1)] for p in paths])
        self.drawn = True
        names = [f"step {k.step}" if kind == "steps" else k.layer for k in keys]
        thinned = f" (a random {MAX_PATHS:,} of {total:,})" if total > MAX_PATHS else ""
        self.info.object = (f"<div class='lens-paths' data-paths='{len(paths)}' data-kind='{kind}'>"
                            f"{len(paths):,} paths{thinned} across {len(keys)} {kind}, from the dot: "
                            f"{esc(' → '.join(names))}</div>")

    def full_layouts(self) -> list[LayoutKey]:
        """The full layouts (no subsets), worked out again only when the lake's layouts change: every
        marker change passes through `update`."""
        layouts = tuple(self.layouts())
        if layouts != self._full[0]:
            self._full = (layouts, catalogue.full_layouts(self.state.lake, list(layouts)))
        return self._full[1]

    def view(self) -> pn.Column:
        return pn.Column("### Trajectories", self.toggle, self.info, sizing_mode="stretch_width")
