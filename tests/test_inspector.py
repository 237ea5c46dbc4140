"""The inspector: the selected sample, its true neighbours, editing the neighbour set, the collected
set, the jump box, and saving a selection."""

from __future__ import annotations

import shutil

import numpy as np

from dashboards.inspector import Inspector
from dashboards.map_state import MapState
from store import catalogue, connect, maps
from store.neighbours import build_graph
from store.selections import read_selection


def make(lake) -> tuple[Inspector, MapState, list]:
    state = MapState(str(lake), connect(lake))
    state.points = maps.points_for(lake, catalogue.list_layouts(lake)[0])
    state.keep = np.ones(len(state.points), dtype=bool)
    picked = []
    inspector = Inspector(state, on_select=lambda s: (picked.append(s), setattr(state, "selected_id", s)),
                          on_marks=lambda: None)
    return inspector, state, picked


def test_neighbours_are_the_graph_and_can_be_edited(embedded_lake):
    inspector, state, _ = make(embedded_lake["lake"])
    key = state.key
    state.selected_id = int(state.points.frame["sample_id"].iat[3])
    inspector.k.value = 7
    expected, distances = build_graph(embedded_lake["lake"], key.run_id, key.layer, key.pooling).of(state.selected_id, 7)
    assert state.neighbour_ids == [int(i) for i in expected]
    assert [c["detail"] for c in inspector.neighbours.items] == [f"{d:.3g}" for d in distances]
    removed = state.neighbour_ids[2]
    inspector._thumb_action(key.run_id, removed, "remove")
    assert state.neighbour_ids == [int(i) for i in expected if int(i) != removed]
    inspector._thumb_action(key.run_id, state.neighbour_ids[0], "collect")
    assert state.collected == [state.neighbour_ids[0]] and state.selected_id is not None  # selection kept
    inspector._thumb_action(key.run_id, state.neighbour_ids[0], "remove")  # × in the collected set
    assert state.collected == []


def test_jump_box_and_saving(embedded_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(embedded_lake["lake"], lake)
    inspector, state, picked = make(lake)
    inspector.jump.value = "<img src=x>"
    assert "&lt;img src=x&gt;" in inspector.jump_status.object and picked == []
    inspector.jump.value = "99999999999999999999999"  # beyond 64 bits: a notice, not a traceback
    assert "no sample" in inspector.jump_status.object and picked == []
    sample = int(state.points.frame["sample_id"].iat[5])
    inspector.jump.value = str(sample)
    assert picked == [sample]
    inspector.collect([sample, sample, int(state.points.frame["sample_id"].iat[6])])
    inspector.selection_name.value = "two"
    inspector.save_selection()
    assert sorted(read_selection(lake, "two")["sample_id"]) == sorted(state.collected) and len(state.collected) == 2
    inspector.selection_name.value = "bad name\n"
    inspector.save_selection()
    assert "lens-error" in inspector.save_status.object
