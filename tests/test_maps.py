"""store.maps: what the dashboard asks of the lake, on the embedded digits lake and a synthetic prompt run."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from store import catalogue, connect, maps
from store.lake import LayoutKey
from store.embed import EmbedError, embed_subset
from store.layouts import LayoutParams
from store.neighbours import build_graph
from store.synthetic import write_run

PROMPTS = ["a cat", "it's a \"quoted\" dog'; DROP TABLE samples; --", "<script>alert(1)</script>"]


@pytest.fixture(scope="module")
def lake(embedded_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("maps") / "lake"
    shutil.copytree(embedded_lake["lake"], root)
    write_run(root, "prompts", 500, PROMPTS, tags=["red", "blue"])
    return {"root": root, "run_id": embedded_lake["run_id"]}


def digits_key(lake) -> LayoutKey:
    return next(k for k in catalogue.list_layouts(lake["root"]) if k.run_id == lake["run_id"])


@pytest.mark.lake
def test_list_layouts_names_every_stored_layout(lake):
    keys = catalogue.list_layouts(lake["root"])
    rows = connect(lake["root"]).sql("SELECT run_id, layer, pooling, step, params_hash FROM layouts").fetchall()
    assert sorted((k.run_id, k.layer, k.pooling, k.step, k.params_hash) for k in keys) == sorted(rows)


@pytest.mark.lake
def test_points_match_the_sql_view(lake):
    key = digits_key(lake)
    points = maps.load_points(lake["root"], key)
    rows = connect(lake["root"]).sql(
        "SELECT sample_id, x, class_id, class_name FROM map_points WHERE run_id = ? AND layer = ? AND params_hash = ? "
        "ORDER BY sample_id", params=[key.run_id, key.layer, key.params_hash]).fetchall()
    assert points.frame["sample_id"].tolist() == [r[0] for r in rows]
    assert np.allclose(points.frame["x"], [r[1] for r in rows])
    assert points.frame["class_id"].tolist() == [r[2] for r in rows]
    assert points.frame["label"].astype(str).tolist() == [str(r[2]) if r[3] == str(r[2]) else f"{r[2]}: {r[3]}" for r in rows]
    assert points.model == "digits-dmd2"
    assert sorted(points.class_names) == list(range(10))


@pytest.mark.lake
def test_filters_by_class_prompt_and_tag(lake):
    points = maps.load_points(lake["root"], digits_key(lake))
    keep = points.mask(classes=[3, 5])
    assert keep.sum() == points.frame["class_id"].isin([3, 5]).sum() > 0
    prompts = maps.load_points(lake["root"], next(k for k in catalogue.list_layouts(lake["root"]) if k.run_id == "prompts"))
    for text in ("QUOTED", "drop table", "<script>", "'", "%", "_"):
        expected = prompts.frame["prompt"].astype(str).str.lower().str.contains(text.lower(), regex=False)
        assert (prompts.mask(prompt=text) == expected.to_numpy()).all(), text
    assert prompts.mask(tag="red").sum() + prompts.mask(tag="blue").sum() == len(prompts)
    assert prompts.frame["prompt"].astype(str).isin(PROMPTS).all()  # stored and read back unchanged


@pytest.mark.lake
def test_nearest_box_and_lasso(lake):
    points = maps.load_points(lake["root"], digits_key(lake))
    xy = points.frame[["x", "y"]].to_numpy()
    row = 17
    assert points.nearest(xy[row, 0] + 1e-4, xy[row, 1], radius=0.5) == row
    assert points.nearest(1e6, 1e6, radius=0.5) is None
    keep = np.zeros(len(points), bool)
    keep[row + 1] = True
    assert points.nearest(xy[row, 0], xy[row, 1], radius=1e3, keep=keep) == row + 1
    x0, y0 = xy.min(0)
    x1, y1 = xy.mean(0)
    box = points.in_box(x0, y0, x1, y1)
    assert set(box) == set(np.flatnonzero((xy[:, 0] <= x1) & (xy[:, 1] <= y1)))
    square = points.in_polygon([x0 - 1, x1, x1, x0 - 1], [y0 - 1, y0 - 1, y1, y1])
    assert set(square) == set(box)
    triangle = points.in_polygon([x0 - 1, x1, x0 - 1], [y0 - 1, y0 - 1, y1])
    assert set(triangle) < set(box)


@pytest.mark.lake
def test_raw_neighbours_come_from_the_graph(lake):
    key = digits_key(lake)
    graph = build_graph(lake["root"], key.run_id, key.layer, key.pooling)
    con = connect(lake["root"])
    for sample in (0, 123, 299):
        ids, distances = maps.raw_neighbours(con, lake["root"], key, sample, 12)
        expected_ids, expected_d = graph.of(sample, 12)
        assert ids == expected_ids.tolist()
        assert np.allclose(distances, expected_d)


@pytest.mark.lake
def test_map_neighbours_are_nearest_in_2d(lake):
    points = maps.load_points(lake["root"], digits_key(lake))
    rows, distances = points.map_neighbours(5, 7)
    xy = points.frame[["x", "y"]].to_numpy()
    d = np.linalg.norm(xy - xy[5], axis=1)
    d[5] = np.inf
    assert np.allclose(np.sort(d)[:7], distances, atol=1e-5)


@pytest.mark.lake
def test_images_come_only_from_the_lake(lake):
    points = maps.load_points(lake["root"], digits_key(lake))
    info = points.describe(3)
    data, mime = maps.sample_image(lake["root"], info["run_id"], info["chunk"], info["sample_id"])
    assert mime == "image/png" and Image.open(io.BytesIO(data)).size == (8, 8)
    with pytest.raises(KeyError):
        maps.sample_image(lake["root"], info["run_id"], info["chunk"], 10**9)
    with pytest.raises(KeyError):
        maps.sample_image(lake["root"], info["run_id"], 999, 0)
    with pytest.raises(ValueError):
        maps.sample_image(lake["root"], "../../etc", 0, 0)


@pytest.mark.lake
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_selection_export_round_trips(lake, fmt):
    points = maps.load_points(lake["root"], next(k for k in catalogue.list_layouts(lake["root"]) if k.run_id == "prompts"))
    rows = np.arange(0, 40, 3)
    frame = maps.selection_frame(points, rows)
    data = maps.export_selection(frame, fmt)
    back = pd.read_csv(data, keep_default_na=False) if fmt == "csv" else pq.read_table(data).to_pandas()
    assert back["sample_id"].tolist() == points.frame["sample_id"].iloc[rows].tolist()
    assert back["prompt"].tolist() == points.frame["prompt"].astype(str).iloc[rows].tolist()


@pytest.mark.lake
def test_subset_layout_is_saved_beside_the_full_one(lake):
    key = digits_key(lake)
    points = maps.load_points(lake["root"], key)
    ids = points.frame["sample_id"].to_numpy()[points.mask(classes=[1, 7])]
    new = embed_subset(lake["root"], key, ids, LayoutParams(n_neighbors=10, seed=3))
    assert new in catalogue.list_layouts(lake["root"]) and new.params_hash != key.params_hash
    sub = maps.load_points(lake["root"], new)
    assert sorted(sub.frame["sample_id"]) == sorted(ids)
    assert embed_subset(lake["root"], key, ids, LayoutParams(n_neighbors=10, seed=3)) == new  # reused
    assert maps.raw_neighbours(connect(lake["root"]), lake["root"], new, int(ids[0]), 5)[0]  # graph still found
    with pytest.raises(EmbedError):
        embed_subset(lake["root"], key, [10**9, 10**9 + 1, 10**9 + 2])


@pytest.mark.lake
def test_a_corrupt_samples_shard_is_named_and_its_points_left_out(lake, tmp_path):
    from store.shards import CorruptShardWarning

    root = tmp_path / "lake"
    shutil.copytree(lake["root"], root)
    key = digits_key(lake)
    before = maps.load_points(root, key)
    shard = sorted((root / "samples" / key.run_id).glob("chunk-000001.parquet"))[0]
    torn_ids = pq.read_table(shard, columns=["sample_id"]).column("sample_id").to_pylist()
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.warns(CorruptShardWarning, match="chunk-000001.parquet"):
        after = maps.load_points(root, key)
    assert set(after.frame["sample_id"]) == set(before.frame["sample_id"]) - set(torn_ids)
    assert 0 < len(after) < len(before)


@pytest.mark.lake
def test_extent_covers_every_point(lake):
    points = maps.load_points(lake["root"], digits_key(lake))
    x0, x1, y0, y1 = points.extent
    assert (x0, x1) == (points.frame["x"].min(), points.frame["x"].max())
    assert (y0, y1) == (points.frame["y"].min(), points.frame["y"].max())


@pytest.mark.lake
def test_aligned_onto_undoes_a_rotation_scale_and_shift(lake):
    points = maps.load_points(lake["root"], digits_key(lake))
    xy = points.frame[["x", "y"]].to_numpy(np.float64)
    angle = 1.1
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved_xy = (xy @ rotation * 2.5 + [7.0, -3.0]) * [1, -1]  # and a reflection
    moved = maps.MapPoints(points.key, points.frame.assign(x=moved_xy[:, 0].astype(np.float32),
                                                           y=moved_xy[:, 1].astype(np.float32)),
                           points.class_names, points.model)
    aligned = maps.aligned_onto(points, moved)
    assert np.allclose(aligned.frame[["x", "y"]].to_numpy(), xy, atol=1e-3)
    assert aligned.extent == pytest.approx(points.extent, abs=1e-3)


@pytest.mark.lake
def test_sample_rows_keep_the_order_asked(lake):
    con = connect(lake["root"])
    rows = maps.sample_rows(con, "prompts", [7, 2, 999_999, 5])
    assert rows["sample_id"].tolist() == [7, 2, 5]
    assert set(rows["label"]) <= set(PROMPTS)
    digits = maps.sample_rows(con, lake["run_id"], [3])
    cid, name = digits["class_id"].iat[0], digits["class_name"].iat[0]
    assert digits["label"].iat[0] == (str(cid) if name == str(cid) else f"{cid}: {name}")


@pytest.mark.lake
def test_trajectories_run_across_steps_or_layers(paired_lake):
    from tests.conftest import DIGITS_LAYERS

    lake = paired_lake["lake"]
    layouts = catalogue.list_layouts(lake)
    order = DIGITS_LAYERS.split(",")
    teacher_key = next(k for k in layouts if k.run_id == paired_lake["teacher"] and k.step == 7)
    kind, keys = maps.trajectory_layouts(layouts, teacher_key, order)
    assert kind == "steps" and [k.step for k in keys] == [0, 7] and {k.layer for k in keys} == {teacher_key.layer}
    student_key = next(k for k in layouts if k.run_id == paired_lake["student"] and k.layer == order[1])
    kind, keys = maps.trajectory_layouts(layouts, student_key, order)
    assert kind == "layers" and [k.layer for k in keys] == order and keys[1] == student_key

    reference = maps.points_for(lake, student_key)
    ids = reference.frame["sample_id"].to_numpy()[[0, 5, 9]]
    paths = maps.trajectories(lake, reference, keys, ids)
    assert paths.shape == (3, 3, 2)
    assert np.allclose(paths[:, 1], reference.frame[["x", "y"]].to_numpy()[[0, 5, 9]])  # the map's own layer
    first = maps.aligned_onto(reference, maps.points_for(lake, keys[0]))
    assert np.allclose(paths[:, 0], first.frame[["x", "y"]].to_numpy()[first.rows_of(ids)])
    assert np.isnan(maps.trajectories(lake, reference, keys, np.array([10**9]))).all()


def test_labels_read_well():
    assert catalogue.sample_label(3, "3", None) == "3"  # a class named by its id shows once
    assert catalogue.sample_label(417, "balloon (n02782093)", None) == "417: balloon (n02782093)"
    assert catalogue.sample_label(None, None, "a photo: of a cat") == "a photo: of a cat"


@pytest.mark.lake
def test_layout_names_default_layout_and_fixed_class_colours(embedded_lake, tmp_path):
    import shutil
    import time

    from store.embed import embed_subset

    lake = tmp_path / "lake"
    shutil.copytree(embedded_lake["lake"], lake)
    run_id = embedded_lake["run_id"]
    full = catalogue.newest_full_layout(lake, [k for k in catalogue.list_layouts(lake) if k.run_id == run_id])
    points = maps.points_for(lake, full)
    info = catalogue.layout_info(lake, full)
    assert not info.subset and f"{len(points)} points · full" in info.name and full.params_hash not in info.name
    assert "n_neighbors 15, min_dist 0.1, seed 0" in info.name
    ids = points.frame["sample_id"].to_numpy()[np.isin(points.frame["class_id"], [1, 7])]
    time.sleep(0.01)
    subset = embed_subset(lake, full, ids, description="classes 1, 7")
    same_layer = [k for k in catalogue.list_layouts(lake) if (k.run_id, k.layer) == (run_id, full.layer)]
    assert catalogue.newest_full_layout(lake, same_layer) == full  # never the newer subset
    sub_info = catalogue.layout_info(lake, subset)
    assert sub_info.subset and f"{len(ids)} points · subset: classes 1, 7" in sub_info.name
    sub_points = maps.load_points(lake, subset)
    # a class keeps its palette colour in the subset (the colour code is the class id)
    for cid in (1, 7):
        full_code = points.colour_codes("label")[list(points.frame["label"].cat.categories).index(
            catalogue.sample_label(cid, points.class_names[cid], None))]
        sub_code = sub_points.colour_codes("label")[list(sub_points.frame["label"].cat.categories).index(
            catalogue.sample_label(cid, sub_points.class_names[cid], None))]
        assert full_code == sub_code == cid
    assert sub_points.class_names == points.class_names  # every class of the run, not only the subset's
    assert points.class_of_label("7") == 7 and points.class_of_label("7: 7") == 7
    assert points.class_of_label("77") is None and points.class_of_label("a photo") is None


def test_csv_exports_neutralise_spreadsheet_formulas_and_parquet_keeps_the_text():
    hostile = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd", "a = b", "plain"]
    frame = pd.DataFrame({"prompt": hostile, "x": [-1.5] * len(hostile), "sample_id": range(len(hostile))})
    csv = pd.read_csv(maps.export_selection(frame, "csv"), keep_default_na=False)
    assert list(csv["prompt"]) == ["'" + p if p[0] in "=+-@\t\r" else p for p in hostile]
    assert list(csv["x"]) == [-1.5] * len(hostile)  # numbers stay numbers
    parquet = pd.read_parquet(maps.export_selection(frame, "parquet"))
    assert list(parquet["prompt"]) == hostile


# --- the filter and pick functions on a frame built here (no lake) ----------------------------------------

def frame_points(n: int = 300, seed: int = 0) -> maps.MapPoints:
    """MapPoints over random points with classes, prompts and tags (sample ids 0, 3, 6, ...)."""
    rng = np.random.default_rng(seed)
    class_id = rng.integers(-1, 4, n).astype(np.int32)  # -1: no class
    prompts = pd.Categorical.from_codes(rng.integers(-1, 3, n), categories=["A Red cat", "a blue DOG", "Red dog"])
    tags = pd.Categorical.from_codes(rng.integers(0, 2, n), categories=["Night, rain", "day"])
    frame = pd.DataFrame({"sample_id": np.arange(n, dtype=np.int64) * 3, "x": rng.uniform(-1, 1, n),
                          "y": rng.uniform(-1, 1, n), "class_id": class_id, "prompt": prompts, "tags": tags})
    return maps.MapPoints(LayoutKey("r", "l", "mean", 0, "h"), frame, {0: "0", 1: "one", 2: "2", 3: "three"}, None)


def test_mask_filters_match_a_loop():
    points = frame_points()
    frame = points.frame
    cases = [([], "", ""), ([1, 3], "", ""), ([], "red", ""), ([], "", "NIGHT"), ([0, 2], "dog", "day"),
             (None, "a b", ""), ([-1], "", "")]
    for classes, prompt, tag in cases:
        expected = [(not classes or c in classes)
                    and (not prompt or (isinstance(p, str) and prompt.lower() in p.lower()))
                    and (not tag or tag.lower() in str(g).lower())
                    for c, p, g in zip(frame["class_id"], frame["prompt"], frame["tags"])]
        got = points.mask(classes=classes, prompt=prompt, tag=tag)
        assert got.dtype == bool and got.tolist() == expected, (classes, prompt, tag)
    assert points.mask().all() and 0 < points.mask(prompt="red").sum() < len(points)


def test_nearest_matches_a_loop():
    points = frame_points()
    xs, ys = points.frame["x"].to_numpy(), points.frame["y"].to_numpy()
    rng = np.random.default_rng(1)
    keep = rng.random(len(points)) < 0.5
    for x, y, radius in [(0.1, 0.2, 0.05), (-0.5, 0.5, 0.2), (0.9, -0.9, 0.02), (3.0, 3.0, 0.5), (0.0, 0.0, 2.0)]:
        for mask in (None, keep):
            inside = [i for i in range(len(xs)) if abs(xs[i] - x) <= radius and abs(ys[i] - y) <= radius
                      and (mask is None or mask[i])]
            expected = min(inside, key=lambda i: (xs[i] - x) ** 2 + (ys[i] - y) ** 2) if inside else None
            assert points.nearest(x, y, radius, keep=mask) == expected
    edge = frame_points(3)
    edge.frame["x"], edge.frame["y"] = [0.5, 0.5, 2.0], [0.25, 0.75, 2.0]
    assert edge.nearest(0.75, 0.5, 0.25) == 0  # a square window, edges included; ties: the first row
    assert edge.nearest(0.75, 0.5, 0.2) is None and edge.nearest(0.5, 0.25, 0.0) == 0
    assert edge.nearest(0.5, 0.7, 0.5) == 1 and isinstance(edge.nearest(0.5, 0.7, 0.5), int)


def inside_polygon(px: float, py: float, vx: list, vy: list) -> bool:
    """Even-odd rule, one edge at a time: a crossing counts when one end is strictly above the point, the other not."""
    result = False
    for i in range(len(vx)):
        x0, y0, x1, y1 = vx[i - 1], vy[i - 1], vx[i], vy[i]
        if (y0 > py) != (y1 > py) and px < x0 + (py - y0) * (x1 - x0) / (y1 - y0):
            result = not result
    return result


def test_box_and_lasso_match_a_loop():
    points = frame_points(400, seed=2)
    xs, ys = points.frame["x"].to_numpy(), points.frame["y"].to_numpy()
    keep = np.arange(400) % 3 != 0
    box = [i for i in range(400) if -0.2 <= xs[i] <= 0.5 and -0.7 <= ys[i] <= 0.1]
    assert points.in_box(0.5, 0.1, -0.2, -0.7).tolist() == box  # corners in any order
    assert points.in_box(-0.2, -0.7, 0.5, 0.1, keep).tolist() == [i for i in box if keep[i]]
    edge = frame_points(3)
    edge.frame["x"], edge.frame["y"] = [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]
    assert edge.in_box(0.0, 0.0, 1.0, 1.0).tolist() == [0, 1]  # edges included

    star_x = [0.8 * np.cos(a) * (1 if k % 2 else 0.4) for k, a in enumerate(np.linspace(0, 2 * np.pi, 10, endpoint=False))]
    star_y = [0.8 * np.sin(a) * (1 if k % 2 else 0.4) for k, a in enumerate(np.linspace(0, 2 * np.pi, 10, endpoint=False))]
    for vx, vy in [(star_x, star_y), ([-0.9, 0.9, 0.9, 0.0, -0.9], [-0.9, -0.9, 0.9, 0.0, 0.9])]:  # concave
        expected = [i for i in range(400) if inside_polygon(xs[i], ys[i], vx, vy)]
        assert 20 < len(expected) < 380
        assert points.in_polygon(vx, vy).tolist() == expected
        assert points.in_polygon(vx, vy, keep).tolist() == [i for i in expected if keep[i]]
        assert points.in_polygon(vx, vy).dtype.kind == "i"


def test_rows_of_class_of_label_and_pick_layout():
    points = frame_points(10)
    assert points.rows_of([0, 27, 4, 30, -3, 3]).tolist() == [0, 9, -1, -1, -1, 1]
    assert points.rows_of(np.array([], dtype=np.int64)).tolist() == []
    empty = maps.MapPoints(points.key, points.frame.iloc[:0], {}, None)
    assert empty.rows_of([0, 5]).tolist() == [-1, -1]
    assert points.class_of_label("1: one") == 1 and points.class_of_label("0") == 0
    assert points.class_of_label("3: something") == 3 and points.class_of_label("9: nine") is None
    assert points.class_of_label("x: 1") is None and points.class_of_label("one") is None
    assert points.class_of_label("2") == 2 and points.class_of_label("2:") == 2
    keys = [LayoutKey("r", "a", "mean", 0, "b2"), LayoutKey("r", "a", "mean", 0, "a1"),
            LayoutKey("r", "a", "mean", 3, "c3"), LayoutKey("r", "b", "mean", 0, "a0")]
    assert maps.pick_layout(keys, keys[0], "a", 0) is keys[0]  # the current one, though not first in order
    assert maps.pick_layout(keys, keys[0], "a", 3) == keys[2]
    assert maps.pick_layout(keys, keys[2], "a", 0) == keys[1]  # the first in sorted order
    assert maps.pick_layout(keys, keys[2], "b", 0) == keys[3]
    with pytest.raises(IndexError):
        maps.pick_layout(keys, keys[0], "c", 0)


def test_lasso_edges_and_vertices_follow_the_half_open_rule():
    import warnings

    vx, vy = [0.0, 4.0, 4.0, 2.0, 0.0], [0.0, 0.0, 2.0, 1.0, 2.0]  # concave, with a horizontal edge
    grid = [(x, y) for x in np.arange(0.0, 4.01, 0.5) for y in np.arange(0.0, 2.01, 0.5)]  # on edges and vertices
    points = frame_points(len(grid))
    points.frame["x"], points.frame["y"] = [g[0] for g in grid], [g[1] for g in grid]

    expected = [i for i, (x, y) in enumerate(grid) if inside_polygon(x, y, vx, vy)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the horizontal edge divides by zero quietly
        got = points.in_polygon(vx, vy).tolist()
    assert got == expected and 5 < len(expected) < len(grid) - 5
    assert points.in_polygon([int(v) for v in vx], [int(v) for v in vy]).tolist() == expected


def test_class_of_label_reads_the_first_field():
    points = frame_points(5)
    assert points.class_of_label("3: a: b") == 3 and points.class_of_label("1:x:y") == 1


def test_rows_of_a_single_point():
    one = frame_points(1)
    assert one.rows_of([0, 3, -1]).tolist() == [0, -1, -1]
