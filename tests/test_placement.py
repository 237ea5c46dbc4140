"""Placing new samples on a stored layout: true raw-space neighbours, inverse-distance-weighted position."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ingest.interactive import generate_like
from store import catalogue, maps
from store.placement import place_run, place_vectors
from store.vectors import load_matrix


@pytest.fixture(scope="module")
def lake(paired_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("placement") / "lake"
    shutil.copytree(paired_lake["lake"], root)
    key = next(k for k in catalogue.list_layouts(root) if k.run_id == paired_lake["student"])
    return {"root": root, "student": paired_lake["student"], "key": key}


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


def test_a_stored_sample_placed_again_lands_on_itself(lake):
    key = lake["key"]
    ids, vectors = load_matrix(lake["root"], key.run_id, key.layer, key.pooling, key.step)
    placed = place_vectors(lake["root"], key, vectors[[17]], k=5)
    assert placed["neighbour_ids"].iat[0][0] == ids[17] and placed["distances"].iat[0][0] == pytest.approx(0, abs=1e-5)
    points = maps.points_for(lake["root"], key)
    own = points.frame[["x", "y"]].to_numpy()[points.rows_of([ids[17]])[0]]
    assert np.allclose(placed[["x", "y"]].to_numpy()[0], own, atol=0.05)


def test_vectors_of_another_width_are_refused(lake):
    with pytest.raises(ValueError, match="values; layer"):
        place_vectors(lake["root"], lake["key"], np.ones((1, 3), dtype=np.float32))


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
