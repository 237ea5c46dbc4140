"""Named selections in the lake: saved, read back as DataFrames, listed, and read by the `selections` view."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from store import catalogue, connect, maps
from store.selections import SelectionError, list_selections, read_selection, save_selection


@pytest.fixture()
def lake(embedded_lake, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(embedded_lake["lake"], root)
    return root


def test_saved_selections_read_back_and_show_in_sql(lake):
    key = catalogue.list_layouts(lake)[0]
    points = maps.load_points(lake, key)
    frame = maps.selection_frame(points, np.array([3, 1, 4]))
    save_selection(lake, "three", frame)
    back = read_selection(lake, "three")
    assert back["sample_id"].tolist() == frame["sample_id"].tolist() and set(back["selection"]) == {"three"}
    chosen = points.frame["sample_id"].to_numpy()[[3, 1, 4]].tolist()  # rows 3, 1, 4 of the layout, in that order
    assert back["sample_id"].tolist() == chosen
    truth = dict((r[0], r[1:]) for r in connect(lake).sql(
        f"SELECT sample_id, seed, class_id FROM samples WHERE run_id = '{key.run_id}'").fetchall())
    assert [(int(a), int(b)) for a, b in zip(back["seed"], back["class_id"])] == [truth[i] for i in chosen]
    stored_xy = dict((r[0], r[1:]) for r in connect(lake).sql(
        f"SELECT sample_id, x, y FROM embeddings WHERE params_hash = '{key.params_hash}'").fetchall())
    np.testing.assert_allclose(back[["x", "y"]].to_numpy(np.float64), [stored_xy[i] for i in chosen], rtol=1e-6)
    save_selection(lake, "three", frame.iloc[:1])  # saving again under a name replaces it
    assert len(read_selection(lake, "three")) == 1 and list_selections(lake) == ["three"]
    rows = connect(lake).sql("SELECT selection, sample_id FROM selections").fetchall()
    assert rows == [("three", int(frame["sample_id"].iat[0]))]


@pytest.mark.parametrize("name", ["../evil", "", "a/b", "x" * 200])
def test_bad_names_and_empty_selections_are_refused(lake, name):
    points = maps.load_points(lake, catalogue.list_layouts(lake)[0])
    with pytest.raises(SelectionError, match="invalid selection name"):
        save_selection(lake, name, maps.selection_frame(points, np.array([0])))
    with pytest.raises(SelectionError, match="empty"):
        save_selection(lake, "fine", maps.selection_frame(points, np.array([], dtype=np.int64)))
    assert list_selections(lake) == []
    with pytest.raises(KeyError, match="no selection"):
        read_selection(lake, "fine")
