"""Placing new samples on a stored layout: true raw-space neighbours, inverse-distance-weighted position."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ingest.interactive import generate_like
from store import catalogue, maps
from store.placement import place_run, place_vectors
from store.vectors import load_matrix
from tests.small_lake import write_layout, write_vectors_run


def loop_placement(layout_vectors: np.ndarray, layout_xy: np.ndarray, query: np.ndarray, k: int):
    """(neighbour rows, cosine distances, x, y): the k nearest layout rows and their inverse-distance mean."""
    d = [1.0 - float(v @ query) / (np.linalg.norm(v) * np.linalg.norm(query)) for v in layout_vectors.astype(np.float64)]
    rows = sorted(range(len(d)), key=lambda j: (d[j], j))[:k]
    weights = [1.0 / max(d[j], 1e-6) for j in rows]
    x = sum(w * layout_xy[j, 0] for w, j in zip(weights, rows)) / sum(weights)
    y = sum(w * layout_xy[j, 1] for w, j in zip(weights, rows)) / sum(weights)
    return rows, [d[j] for j in rows], x, y


@pytest.fixture()
def small(tmp_path) -> dict:
    """Run `base` (40 samples, two layers) with a layout of layer `l` holding only the even sample ids, and
    runs `new` (same layers) and `other` (layer `l` only, 4 values wide in `m`)."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 6)).astype(np.float32) + 1.0
    new = rng.normal(size=(7, 6)).astype(np.float32) + 1.0
    new[2] = base[10] * 3.0  # the same direction as a layout sample: distance 0
    lake = write_vectors_run(tmp_path, "base", {"l": base, "m": base}, np.arange(40) % 3, chunk_size=16)
    write_vectors_run(tmp_path, "new", {"l": new, "m": new}, np.array([0, 1, 2, 0, 1, 2, 0]))
    write_vectors_run(tmp_path, "other", {"l": new[:, :6], "m": new[:, :4]}, np.zeros(7, np.int32))
    held = np.arange(0, 40, 2)
    xy = rng.uniform(-5, 5, size=(20, 2)).astype(np.float32)
    key = write_layout(lake, "base", "l", xy, sample_ids=held)
    return {"root": tmp_path, "key": key, "base": base, "new": new, "held": held, "xy": xy}


def test_placement_matches_a_loop(small):
    placed = place_run(small["root"], small["key"], "new", k=4)
    assert placed.columns.tolist() == ["sample_id", "x", "y", "neighbour_ids", "distances"]
    assert placed["sample_id"].tolist() == list(range(7))
    for i, query in enumerate(small["new"]):
        rows, distances, x, y = loop_placement(small["base"][small["held"]], small["xy"], query, 4)
        assert list(placed["neighbour_ids"].iat[i]) == small["held"][rows].tolist()  # only samples on the layout
        np.testing.assert_allclose(placed["distances"].iat[i], distances, atol=2e-6)
        assert placed["distances"].iat[i].dtype == np.float32
        assert placed["x"].iat[i] == pytest.approx(x, rel=1e-4, abs=1e-4)
        assert placed["y"].iat[i] == pytest.approx(y, rel=1e-4, abs=1e-4)
    assert placed["neighbour_ids"].iat[2][0] == 10 and placed["x"].iat[2] == pytest.approx(small["xy"][5, 0], abs=1e-3)
    assert len(place_run(small["root"], small["key"], "new")["neighbour_ids"].iat[0]) == 10  # k = 10 by default
    assert len(place_vectors(small["root"], small["key"], small["new"][:1], k=50)["neighbour_ids"].iat[0]) == 20


def test_placement_takes_any_vector_shape_and_refuses_other_widths(small):
    flat = place_vectors(small["root"], small["key"], small["new"][:3], k=3)
    shaped = place_vectors(small["root"], small["key"], small["new"][:3].reshape(3, 2, 3).astype(np.float64), k=3)
    assert np.allclose(flat[["x", "y"]].to_numpy(), shaped[["x", "y"]].to_numpy())
    with pytest.raises(ValueError, match="vectors have 4 values; layer l has 6"):
        place_vectors(small["root"], small["key"], np.ones((1, 4), dtype=np.float32))


def test_placeable_runs_and_overlay(small):
    from store.placement import overlay_points, placeable_runs

    assert placeable_runs(small["root"], small["key"]) == ["new", "other"]
    overlay = overlay_points(small["root"], small["key"], "new")
    placed = place_run(small["root"], small["key"], "new")
    assert overlay.columns.tolist() == ["sample_id", "x", "y", "class_id"]
    assert overlay["class_id"].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert np.array_equal(overlay[["x", "y"]].to_numpy(), placed[["x", "y"]].to_numpy())
    from store.lake import LayoutKey

    assert placeable_runs(small["root"], LayoutKey("base", "l", "grid2", 0, "x")) == []


@pytest.fixture(scope="module")
def lake(paired_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("placement") / "lake"
    shutil.copytree(paired_lake["lake"], root)
    key = next(k for k in catalogue.list_layouts(root) if k.run_id == paired_lake["student"])
    return {"root": root, "student": paired_lake["student"], "key": key}


@pytest.mark.lake
def test_a_generated_sample_lands_among_its_true_neighbours(lake):
    run_id = generate_like(lake["root"], lake["student"], seeds=[42], classes=[7])
    placed = place_run(lake["root"], lake["key"], run_id, k=10)
    assert placed["sample_id"].tolist() == [0]
    key = lake["key"]
    ids, vectors = load_matrix(lake["root"], key.run_id, key.layer, key.pooling, key.step)
    _, new = load_matrix(lake["root"], run_id, key.layer, key.pooling, key.step)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    distances = 1 - unit @ (new[0] / np.linalg.norm(new[0]))
    expected = ids[np.argsort(distances, kind="stable")[:10]]
    assert list(placed["neighbour_ids"].iat[0]) == expected.tolist()
    points = maps.points_for(lake["root"], key)
    rows = points.rows_of(expected)
    weights = 1 / np.maximum(np.sort(distances)[:10], 1e-6)
    x = (weights * points.frame["x"].to_numpy()[rows]).sum() / weights.sum()
    assert placed["x"].iat[0] == pytest.approx(x, rel=1e-4)


@pytest.mark.lake
def test_a_stored_sample_placed_again_lands_on_itself(lake):
    key = lake["key"]
    ids, vectors = load_matrix(lake["root"], key.run_id, key.layer, key.pooling, key.step)
    placed = place_vectors(lake["root"], key, vectors[[17]], k=5)
    assert placed["neighbour_ids"].iat[0][0] == ids[17] and placed["distances"].iat[0][0] == pytest.approx(0, abs=1e-5)
    points = maps.points_for(lake["root"], key)
    own = points.frame[["x", "y"]].to_numpy()[points.rows_of([ids[17]])[0]]
    assert np.allclose(placed[["x", "y"]].to_numpy()[0], own, atol=0.05)


@pytest.mark.lake
def test_vectors_of_another_width_are_refused(lake):
    with pytest.raises(ValueError, match="values; layer"):
        place_vectors(lake["root"], lake["key"], np.ones((1, 3), dtype=np.float32))


@pytest.mark.lake
def test_another_run_is_placed_on_a_shared_feature_layer(featured_lake):
    from store import catalogue
    from store.catalogue import read_run_samples
    from store.lake import Lake
    from store.placement import overlay_points, place_run, placeable_runs

    lake, student = featured_lake["lake"], featured_lake["student"]
    key = next(k for k in catalogue.list_layouts(lake) if k.run_id == student and k.layer == "features.digits")
    assert set(placeable_runs(lake, key)) == {featured_lake["teacher"], featured_lake["real"]}
    generator_layer = next(k for k in catalogue.list_layouts(lake) if k.run_id == student and k.layer != "features.digits")
    assert featured_lake["real"] not in placeable_runs(lake, generator_layer)  # real images have no UNet layers
    overlay = overlay_points(lake, key, featured_lake["real"])
    placed = place_run(lake, key, featured_lake["real"])
    assert len(overlay) == 1797 and (overlay[["x", "y"]].to_numpy() == placed[["x", "y"]].to_numpy()).all()
    samples = read_run_samples(Lake(lake), featured_lake["real"])
    truth = dict(zip(samples.column("sample_id").to_pylist(), samples.column("class_id").to_pylist()))
    assert all(truth[s] == c for s, c in zip(overlay["sample_id"], overlay["class_id"]))


def test_placement_reads_the_layout_step_and_follows_a_rewritten_layout(small):
    import os

    from store.lake import Lake
    from store.placement import overlay_points

    rng = np.random.default_rng(1)
    later = rng.normal(size=(7, 6)).astype(np.float32)
    write_vectors_run(small["root"], "stepped", {"l": np.stack([small["new"], later], axis=1)}, np.zeros(7, np.int32))
    placed = place_run(small["root"], small["key"], "stepped", k=3)  # the layout's step 0, not the last
    direct = place_vectors(small["root"], small["key"], small["new"], k=3)
    np.testing.assert_array_equal(placed[["x", "y"]].to_numpy(), direct[["x", "y"]].to_numpy())
    assert len(place_vectors(small["root"], small["key"], small["new"][:1])["neighbour_ids"].iat[0]) == 10
    before = overlay_points(small["root"], small["key"], "new")
    moved = write_layout(Lake(small["root"]), "base", "l", small["xy"] + 100.0, sample_ids=small["held"])
    path = small["root"].joinpath(*moved.parts())
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # surely a new stamp
    after = place_vectors(small["root"], small["key"], small["new"], k=3)
    np.testing.assert_allclose(after[["x", "y"]].to_numpy(), direct[["x", "y"]].to_numpy() + 100.0, atol=1e-3)
    overlay = overlay_points(small["root"], small["key"], "new")
    np.testing.assert_allclose(overlay[["x", "y"]].to_numpy(), before[["x", "y"]].to_numpy() + 100.0, atol=1e-3)
