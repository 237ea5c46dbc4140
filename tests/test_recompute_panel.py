"""Recompute layout: on the filtered points or a hand-picked set, one job per session at a time."""

from __future__ import annotations

import shutil
import threading

import numpy as np

from dashboards.map_state import MapState
from dashboards.recompute_panel import MIN_POINTS, RecomputePanel
from store import catalogue, connect, maps


def test_one_job_at_a_time_on_the_chosen_samples(embedded_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(embedded_lake["lake"], lake)
    state = MapState(str(lake), connect(lake))
    state.points = maps.points_for(lake, catalogue.list_layouts(lake)[0])
    state.keep = np.isin(state.points.frame["class_id"], [1, 7])
    done, finished = [], threading.Event()

    def later(callback):  # the session's event loop, here: run it, then say so
        callback()
        finished.set()

    panel = RecomputePanel(state, lambda: "classes 1, 7", later, done.append)
    ids, description = panel.chosen()
    assert np.array_equal(ids, state.points.frame["sample_id"].to_numpy()[state.keep]) and description == "classes 1, 7"
    panel.start()
    panel.start()  # a second click while the first job runs
    assert "being computed" in panel.status.object
    assert finished.wait(300)
    assert len(done) == 1 and catalogue.layout_info(lake, done[0]).points == len(ids)
    assert "classes 1, 7" in catalogue.layout_info(lake, done[0]).name
    panel.source.value = "picked"
    state.collected = [int(i) for i in state.points.frame["sample_id"].iloc[:5]]
    assert len(panel.chosen()[0]) == 5
    panel.start()
    assert f"at least {MIN_POINTS}" in panel.status.object and panel.button.disabled is False
