"""The Map tab's shared state: hand-picked rows and labels of samples."""

from __future__ import annotations

import numpy as np

from dashboards.map_state import MapState
from store import catalogue, connect, maps


def test_picked_rows_and_labels(embedded_lake):
    lake = embedded_lake["lake"]
    state = MapState(str(lake), connect(lake))
    state.points = maps.points_for(lake, catalogue.list_layouts(lake)[0])
    ids = state.points.frame["sample_id"].to_numpy()
    state.collected = [int(ids[4]), int(ids[2]), 10**12]  # the last is in no layout
    state.region_rows = np.array([2, 9])
    assert list(state.picked_rows()) == [2, 4, 9]
    assert state.label_of(10**12) == "(not in this layout)" and state.chunk_of(10**12) == 0
    assert state.label_of(int(ids[4])) == str(state.points.frame["label"].iat[4])


def test_one_heavy_job_per_session():
    from dashboards.map_state import SessionJob

    job = SessionJob()
    assert job.start("a generation") is None
    refused = job.start("a layout being computed")
    assert refused and "a generation" in refused and job.running == "a generation"
    job.done()
    assert job.start("a layout being computed") is None and job.running == "a layout being computed"
