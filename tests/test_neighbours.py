"""Raw-space neighbour graphs: exact, equal to the SQL macro, persisted, rebuilt only on change."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from store.lake import Lake
from store import connect
from store.neighbours import approximate_knn, build_graph, exact_knn, neighbours_of_vector, normalise


def brute_force(unit: np.ndarray, k: int) -> np.ndarray:
    d = 1 - unit @ unit.T
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def test_exact_knn_matches_brute_force():
    rng = np.random.default_rng(0)
    unit = normalise(rng.normal(size=(500, 16)).astype(np.float32))
    rows, distances = exact_knn(unit, 10)
    assert np.array_equal(rows, brute_force(unit, 10))
    assert np.all(np.diff(distances, axis=1) >= 0)


def test_approximate_knn_recall_on_clustered_data():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 64))
    data = centres[rng.integers(0, 20, 3000)] + 0.4 * rng.normal(size=(3000, 64))
    unit = normalise(data.astype(np.float32))
    approx, _ = approximate_knn(unit, 10, seed=0)
    truth = brute_force(unit, 10)
    recall = np.mean([len(set(a) & set(t)) / 10 for a, t in zip(approx, truth)])
    assert recall >= 0.95


def test_graph_agrees_with_the_exact_sql_macro(digits_lake):
    run_id = digits_lake["result"].run_id
    graph = build_graph(str(digits_lake["lake"]), run_id, "enc.2x2_block0", "mean")
    con = connect(digits_lake["lake"])
    for sample in (0, 17, 299):
        ids, distances = graph.of(sample, 10)
        sql = con.sql(f"SELECT sample_id, distance FROM knn_exact('{run_id}', {sample}, 'enc.2x2_block0', 'mean', 0, 10)").fetchall()
        assert ids.tolist() == [row[0] for row in sql]
        np.testing.assert_allclose(distances, [row[1] for row in sql], atol=1e-5)
    view = con.sql("SELECT neighbour_ids[1] FROM neighbours WHERE layer = 'enc.2x2_block0' AND sample_id = 17").fetchall()
    assert view == [(int(graph.of(17, 1)[0][0]),)]


def test_graph_is_persisted_and_rebuilt_only_when_inputs_change(tmp_path, digits_lake):
    lake_dir = tmp_path / "lake"
    shutil.copytree(digits_lake["lake"], lake_dir)
    run_id = digits_lake["result"].run_id
    first = build_graph(str(lake_dir), run_id, "dec.8x8_block1", "grid2")
    folder = lake_dir / "indexes" / run_id / "dec.8x8_block1" / "grid2"
    files = list(folder.iterdir())
    stamp = files[0].stat().st_mtime_ns
    again = build_graph(str(lake_dir), run_id, "dec.8x8_block1", "grid2")
    assert again.inputs_hash == first.inputs_hash and files[0].stat().st_mtime_ns == stamp
    assert np.array_equal(again.neighbours, first.neighbours)
    # Losing a chunk's commit changes the inputs: a new graph over the 256 remaining samples.
    (lake_dir / "samples" / run_id / "chunk-000002.parquet").unlink()
    changed = build_graph(str(lake_dir), run_id, "dec.8x8_block1", "grid2")
    assert changed.inputs_hash != first.inputs_hash and len(changed.sample_ids) == 256
    assert len(list(folder.iterdir())) == 2


def test_neighbours_of_a_new_vector(digits_lake):
    from store.vectors import load_matrix

    run_id = digits_lake["result"].run_id
    ids, matrix = load_matrix(str(digits_lake["lake"]), run_id, "enc.2x2_block0")
    found, distances = neighbours_of_vector(str(digits_lake["lake"]), run_id, "enc.2x2_block0", matrix[42] * 3, k=5)
    assert found[0] == ids[42] and distances[0] == pytest.approx(0, abs=1e-5)  # cosine ignores scale
    graph = build_graph(Lake(digits_lake["lake"]), run_id, "enc.2x2_block0")
    assert found[1:].tolist() == graph.of(42, 4)[0].tolist()
    with pytest.raises(ValueError, match="vector has 3 values"):
        neighbours_of_vector(str(digits_lake["lake"]), run_id, "enc.2x2_block0", np.ones(3))
