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


# --- in the browser: the k slider and the "2-D map" switch change the rows and the rings the user sees ------

import time  # noqa: E402

import pytest  # noqa: E402

from dashboards.browser import MARKER_ROLES_JS, PLOT_JS, map_pixels, plot_geometries  # noqa: E402
from dashboards.render import MARKER_COLOURS  # noqa: E402
from tests.conftest import DIGITS_LAYERS  # noqa: E402

AMBER = np.array([int(MARKER_COLOURS["neighbour"][i:i + 2], 16) for i in (1, 3, 5)])


def neighbour_rows(page) -> list[int]:
    return [int(s) for s in page.locator(".lens-neighbours .lens-thumb").evaluate_all(
        "els => els.map(e => e.dataset.sample)")]


def amber(pixels: np.ndarray) -> np.ndarray:
    """The pixels of the neighbour rings' inner colour."""
    return np.abs(pixels.astype(int) - AMBER).sum(2) <= 40


def amber_near(pixels: np.ndarray, px: float, py: float, radius: int = 9) -> int:
    mask = amber(pixels)
    h, w = mask.shape
    return int(mask[max(0, int(py) - radius):min(h, int(py) + radius + 1),
                    max(0, int(px) - radius):min(w, int(px) + radius + 1)].sum())


def to_pixels(page, points, ids) -> np.ndarray:
    g = plot_geometries(page)[0]
    rows = points.rows_of(ids)
    xs, ys = points.frame["x"].to_numpy()[rows], points.frame["y"].to_numpy()[rows]
    return np.column_stack([(xs - g["x0"]) / (g["x1"] - g["x0"]) * g["width"],
                            (g["y1"] - ys) / (g["y1"] - g["y0"]) * g["height"]])


def until(check, timeout: float = 15, page=None) -> bool:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    return check()


def stable_pixels(page, timeout: float = 10) -> np.ndarray:
    """The map once two screenshots 300 ms apart agree."""
    last = map_pixels(page)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page.wait_for_timeout(300)
        now = map_pixels(page)
        if np.array_equal(now, last):
            return now
        last = now
    return last


@pytest.fixture(scope="module")
def served_layout(paired_server):
    """The student's newest full layout of its last layer, and a sample whose 15 true neighbours lie apart on
    the map (so each ring shows on its own), scattered far wider than its 10 nearest on the map."""
    lake, run_id = paired_server["lake"], paired_server["student"]
    layer = DIGITS_LAYERS.split(",")[-1]
    key = catalogue.newest_full_layout(lake, [k for k in catalogue.list_layouts(lake)
                                              if k.run_id == run_id and k.layer == layer])
    points = maps.points_for(lake, key)
    graph = build_graph(lake, run_id, key.layer, key.pooling)
    xy = points.frame[["x", "y"]].to_numpy()
    scaled = (xy - xy.min(0)) / (xy.max(0) - xy.min(0)) * [700, 520]  # about the map's pixels
    best, best_score = None, -1.0
    for row in range(0, len(points), 3):
        sample = int(points.frame["sample_id"].iat[row])
        ids = [int(i) for i in graph.of(sample, 15)[0]]
        at = scaled[points.rows_of(ids)]
        first = np.vstack([at[:10], scaled[row]])
        apart = sum(np.linalg.norm(first - p, axis=1).min() > 24 for p in at[10:])
        d2 = np.sort(np.linalg.norm(scaled - scaled[row], axis=1))[10]
        spread = np.linalg.norm(at[:10] - scaled[row], axis=1).max() / max(d2, 1.0)
        score = min(apart, 3) * 100 + min(spread, 20)
        if score > best_score:
            best, best_score = sample, score
    return {"key": key, "points": points, "graph": graph, "sample": best}


def open_selected(page, paired_server, served_layout) -> None:
    key, sample = served_layout["key"], served_layout["sample"]
    page.goto(f"{paired_server['url']}/explorer?run={key.run_id}&layer={key.layer}&layout={key.params_hash}"
              f"&sample={sample}")
    page.wait_for_selector(f".lens-selected-sample[data-sample='{sample}']", timeout=60_000)
    page.wait_for_function(f"() => ({PLOT_JS})() !== null", timeout=60_000)
    page.wait_for_selector(".lens-neighbours .lens-thumb", timeout=20_000)
    page.mouse.move(5, 5)  # no hover ring in the picture


@pytest.mark.browser
def test_k_slider_changes_the_neighbour_rows_and_rings(paired_server, paired_page, served_layout):
    page, points, graph, sample = paired_page, served_layout["points"], served_layout["graph"], served_layout["sample"]
    open_selected(page, paired_server, served_layout)
    ten = [int(i) for i in graph.of(sample, 10)[0]]
    fifteen = [int(i) for i in graph.of(sample, 15)[0]]
    assert until(lambda: neighbour_rows(page) == ten, page=page)
    assert until(lambda: page.evaluate(MARKER_ROLES_JS)[0].count("neighbour") == 10, page=page)
    before = stable_pixels(page)
    handle = page.locator(".noUi-handle").first
    handle.focus()
    for _ in range(5):
        handle.press("ArrowRight")
    assert until(lambda: neighbour_rows(page) == fifteen, page=page)  # 15 rows, the graph's, in order
    assert page.locator(".lens-neighbours .lens-distance").count() == 15
    assert page.get_by_text("15 nearest in raw activation space (cosine distance)").count() == 1
    assert until(lambda: amber(map_pixels(page)).sum() > amber(before).sum(), page=page)
    after = stable_pixels(page)
    at = to_pixels(page, points, fifteen + [sample])
    lone = [i for i in range(10, 15) if np.linalg.norm(np.delete(at, range(10, 15), 0) - at[i], axis=1).min() > 22
            and np.linalg.norm(at[10:15] - at[i], axis=1)[np.arange(5) != i - 10].min() > 4]
    assert lone, "no added neighbour lies apart from the first ten on the map"
    for i in lone:  # each added neighbour that lies apart from the others gets a ring of its own
        assert amber_near(before, *at[i]) == 0 and amber_near(after, *at[i]) >= 8, (i, amber_near(after, *at[i]))
    for _ in range(12):  # down to 3
        handle.press("ArrowLeft")
    assert until(lambda: neighbour_rows(page) == fifteen[:3], page=page)
    assert until(lambda: amber(map_pixels(page)).sum() < amber(before).sum(), page=page)
    three = stable_pixels(page)
    for i in lone:
        assert amber_near(three, *at[i]) == 0
    assert page.problems == []


@pytest.mark.browser
def test_2d_map_switch_rings_the_nearest_points_on_the_map(paired_server, paired_page, served_layout):
    page, points, graph, sample = paired_page, served_layout["points"], served_layout["graph"], served_layout["sample"]
    open_selected(page, paired_server, served_layout)
    raw = [int(i) for i in graph.of(sample, 10)[0]]
    assert until(lambda: neighbour_rows(page) == raw, page=page)
    assert until(lambda: page.evaluate(MARKER_ROLES_JS)[0].count("neighbour") == 10, page=page)
    before = stable_pixels(page)
    rows, _ = points.map_neighbours(int(points.rows_of([sample])[0]), 10)
    on_map = [int(i) for i in points.frame["sample_id"].to_numpy()[rows]]
    at = to_pixels(page, points, [sample])[0]
    reach = np.linalg.norm(to_pixels(page, points, on_map) - at, axis=1).max() + 10  # rings reach ~9 px out
    ys, xs = np.nonzero(amber(before))
    far = np.hypot(xs - at[0], ys - at[1]) > reach
    assert far.sum() > 20  # true neighbours are ringed far from the point

    page.get_by_role("button", name="2-D map").click()
    assert until(lambda: neighbour_rows(page) == on_map, page=page)
    overlap = len(set(on_map) & set(raw))
    assert page.locator(".lens-overlap").inner_text() == f"{overlap} of 10"
    assert page.get_by_text("10 nearest on the 2-D map (map distance)").count() == 1

    def rings_near() -> bool:
        ys, xs = np.nonzero(amber(map_pixels(page)))
        return len(xs) > 20 and (np.hypot(xs - at[0], ys - at[1]) > reach).sum() == 0
    assert until(rings_near, page=page)  # every ring now sits around the point
    page.get_by_role("button", name="raw activations").click()
    assert until(lambda: neighbour_rows(page) == raw, page=page)
    assert until(lambda: (lambda m: (np.hypot(np.nonzero(m)[1] - at[0], np.nonzero(m)[0] - at[1]) > reach).sum() > 20)(
        amber(map_pixels(page))), page=page)
    assert page.problems == []
