"""Raw-space neighbour graphs: exact, equal to the SQL macro, persisted, rebuilt only on change."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from store.lake import Lake, indexes_schema
from store import connect
from store.neighbours import approximate_knn, build_graph, exact_knn, graph_path, neighbours_of_vector, normalise


def brute_force(unit: np.ndarray, k: int) -> np.ndarray:
    d = 1 - unit @ unit.T
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def loop_cosine(queries: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Cosine distances of every query to every data row, one query at a time, in float64."""
    data = data.astype(np.float64)
    norms = np.sqrt((data**2).sum(1))
    out = np.empty((len(queries), len(data)))
    for i, q in enumerate(queries.astype(np.float64)):
        out[i] = 1.0 - (data @ q) / (norms * np.sqrt(q @ q))
    return out


def hard_clusters(n: int, dim: int, seed: int) -> np.ndarray:
    """Many tight, overlapping clusters of unequal size: the order within a cluster is in the noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    members = rng.choice(40, n, p=rng.dirichlet(np.ones(40)))
    return (centres[members] + 0.9 * rng.normal(size=(n, dim))).astype(np.float32)


def check_neighbours(unit: np.ndarray, rows: np.ndarray, distances: np.ndarray, k: int) -> float:
    """Distances exact (cosine of the returned rows), ascending, no self; returns recall against a loop."""
    exact = loop_cosine(unit, unit)
    np.testing.assert_allclose(distances, np.take_along_axis(exact, rows, 1), atol=2e-6)
    assert rows.shape == distances.shape == (len(unit), k)
    assert np.all(np.diff(distances, axis=1) >= 0)
    assert not (rows == np.arange(len(unit))[:, None]).any() and (rows >= 0).all()
    assert all(len(set(r)) == k for r in rows.tolist())
    np.fill_diagonal(exact, np.inf)
    truth = np.argsort(exact, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(a) & set(t)) / k for a, t in zip(rows.tolist(), truth.tolist())]))


def test_exact_knn_matches_brute_force():
    rng = np.random.default_rng(0)
    unit = normalise(rng.normal(size=(500, 16)).astype(np.float32))
    rows, distances = exact_knn(unit, 10)
    assert np.array_equal(rows, brute_force(unit, 10))
    assert np.all(np.diff(distances, axis=1) >= 0)


def test_exact_knn_in_small_blocks_matches_a_loop(monkeypatch):
    import store.neighbours

    monkeypatch.setattr(store.neighbours, "BLOCK_ROWS", 7)  # several blocks: self-exclusion offsets matter
    rng = np.random.default_rng(3)
    unit = normalise(rng.normal(size=(30, 5)).astype(np.float32))
    unit[21] = unit[4]  # a duplicate: distance 0, and a tie broken by index
    rows, distances = exact_knn(unit, 6)
    assert check_neighbours(unit, rows, distances, 6) == 1.0
    assert rows[4, 0] == 21 and rows[21, 0] == 4
    queries = normalise(rng.normal(size=(17, 5)).astype(np.float32))
    q_rows, q_distances = exact_knn(unit, 4, queries=queries, exclude_self=False)
    exact = loop_cosine(queries, unit)
    assert q_rows.tolist() == np.argsort(exact, axis=1, kind="stable")[:, :4].tolist()
    np.testing.assert_allclose(q_distances, np.sort(exact, axis=1)[:, :4], atol=2e-6)
    self_rows, self_d = exact_knn(unit, 3, queries=unit, exclude_self=False)
    assert (self_rows[:, 0] == np.arange(30)).sum() >= 29 and np.allclose(self_d[:, 0], 0, atol=2e-6)
    few_rows, _ = exact_knn(unit[:4], 10)  # k larger than the data: every other row
    assert few_rows.shape == (4, 3) and exact_knn(unit[:4], 10, exclude_self=False)[0].shape == (4, 4)


def test_normalise_in_place_in_blocks(monkeypatch):
    import store.neighbours
    from store.neighbours import normalise_in_place

    monkeypatch.setattr(store.neighbours, "BLOCK_ROWS", 4)
    rng = np.random.default_rng(4)
    data = rng.normal(size=(11, 3)).astype(np.float32) * 5
    data[6] = 0.0  # a zero row stays zero
    expected = np.array([v / np.linalg.norm(v) if np.linalg.norm(v) else v for v in data.astype(np.float64)])
    out = normalise_in_place(data)
    assert out is data
    np.testing.assert_allclose(data, expected, atol=1e-6)
    np.testing.assert_allclose(normalise(np.array([[3.0, 4.0], [0.0, 0.0], [1e-6, 0.0]])),
                               [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], atol=1e-12)


def test_approximate_knn_on_hard_clustered_data():
    unit = normalise(hard_clusters(1500, 24, seed=1))
    rows, distances = approximate_knn(unit, 10, seed=0)
    recall = check_neighbours(unit, rows, distances, 10)
    assert recall >= 0.9
    again, _ = approximate_knn(unit, 10, seed=0)
    assert np.array_equal(rows, again)  # seeded


def test_build_graph_beyond_the_exact_limit_is_approximate_but_exact_in_its_distances(tmp_path, monkeypatch):
    import store.neighbours
    from tests.small_lake import write_vectors_run

    data = hard_clusters(900, 16, seed=2)
    write_vectors_run(tmp_path, "big", {"l": data}, np.zeros(900, np.int32), chunk_size=300)
    exact = build_graph(str(tmp_path), "big", "l", k=8)
    calls = []
    real = store.neighbours.approximate_knn
    monkeypatch.setattr(store.neighbours, "approximate_knn", lambda *a, **kw: calls.append(a[1:]) or real(*a, **kw))
    monkeypatch.setattr(store.neighbours, "EXACT_LIMIT", 100)
    graph = build_graph(str(tmp_path), "big", "l", k=8, seed=3)
    assert calls == [(8, 3)]  # beyond the limit: the approximate search, with the graph's k and seed
    assert graph.inputs_hash != exact.inputs_hash  # the limit is part of the graph's identity
    unit = normalise(data)
    assert check_neighbours(unit, graph.neighbours, graph.distances, 8) >= 0.9  # sample id i is row i here
    assert check_neighbours(unit, exact.neighbours, exact.distances, 8) == 1.0
    stored = build_graph(str(tmp_path), "big", "l", k=8, seed=3)  # read back from the lake
    assert np.array_equal(stored.neighbours, graph.neighbours) and np.array_equal(stored.distances, graph.distances)
    assert stored.sample_ids.tolist() == list(range(900)) and stored.step == 0
    # The file holds the graph's contract: fixed-size lists of int64 ids and float32 distances.
    lake = Lake(str(tmp_path))
    path = lake.path(*graph_path(lake, "big", "l", "mean", 0, graph.inputs_hash))
    assert pq.read_schema(path).remove_metadata() == indexes_schema(8)


def test_approximate_knn_rerank_in_several_blocks():
    """Wide vectors: the exact re-rank gathers candidates in blocks of ~128 MB, here two blocks of 1,500 rows."""
    unit = normalise(hard_clusters(1500, 4096, seed=6))
    rows, distances = approximate_knn(unit, 10, seed=0)
    assert check_neighbours(unit, rows, distances, 10) >= 0.9


def test_nndescent_settings_by_size():
    from store.neighbours import NND_SETTINGS, nndescent_settings

    limit = NND_SETTINGS[0][0]
    assert nndescent_settings(1) == nndescent_settings(limit) == (0, 20)
    assert nndescent_settings(limit + 1) == nndescent_settings(10**9) == (10, 80)


def test_approximate_knn_above_the_size_threshold_uses_the_larger_setting(monkeypatch):
    """Above the first setting's limit, NN-descent keeps k + 10 candidates and tries 80 per iteration."""
    import pynndescent

    import store.neighbours

    monkeypatch.setattr(store.neighbours, "NND_SETTINGS", ((1000, 0, 20), (None, 10, 80)))
    seen = []
    real = pynndescent.NNDescent
    monkeypatch.setattr(pynndescent, "NNDescent", lambda data, **kw: seen.append(kw) or real(data, **kw))
    small = normalise(hard_clusters(1000, 24, seed=5))
    big = normalise(hard_clusters(1500, 24, seed=5))
    approximate_knn(small, 10, seed=0)
    rows, distances = approximate_knn(big, 10, seed=0)
    assert [(kw["n_neighbors"], kw["max_candidates"]) for kw in seen] == [(11, 20), (21, 80)]
    assert check_neighbours(big, rows, distances, 10) >= 0.95


def test_graph_lookup_and_inputs(tmp_path):
    from tests.small_lake import write_vectors_run

    rng = np.random.default_rng(6)
    steps = rng.normal(size=(40, 3, 6)).astype(np.float32)
    write_vectors_run(tmp_path, "run", {"l": steps}, np.zeros(40, np.int32), chunk_size=16)
    graph = build_graph(str(tmp_path), "run", "l", k=5)
    assert graph.step == 2  # the last step by default
    unit = normalise(steps[:, 2])
    assert check_neighbours(unit, graph.neighbours, graph.distances, 5) == 1.0
    ids, distances = graph.of(7, 3)
    assert ids.tolist() == graph.neighbours[7, :3].tolist() and distances.tolist() == graph.distances[7, :3].tolist()
    assert len(graph.of(7)[0]) == 5  # k = 10 asks for more than stored
    wide = build_graph(str(tmp_path), "run", "l", k=12)
    assert len(wide.of(7)[0]) == len(wide.of(7)[1]) == 10 and wide.of(7)[0].tolist() == wide.neighbours[7, :10].tolist()
    for missing in (40, -1, 10**6):
        with pytest.raises(KeyError, match=f"sample {missing} is not in this layer's graph"):
            graph.of(missing)
    first = build_graph(str(tmp_path), "run", "l", step=0, k=5)
    assert first.step == 0 and check_neighbours(normalise(steps[:, 0]), first.neighbours, first.distances, 5) == 1.0
    assert first.inputs_hash != graph.inputs_hash != build_graph(str(tmp_path), "run", "l", k=4).inputs_hash
    assert build_graph(str(tmp_path), "run", "l", k=5, seed=1).inputs_hash != graph.inputs_hash
    part = build_graph(str(tmp_path), "run", "l", k=5, chunks=frozenset({0, 2}))
    assert part.sample_ids.tolist() == list(range(16)) + list(range(32, 40))
    assert part.inputs_hash != graph.inputs_hash


def test_a_stored_graph_is_read_back_not_rebuilt(tmp_path, monkeypatch):
    import store.neighbours
    from tests.small_lake import write_vectors_run

    rng = np.random.default_rng(8)
    data = rng.normal(size=(40, 6)).astype(np.float32)
    write_vectors_run(tmp_path, "run", {"l": data}, np.zeros(40, np.int32), chunk_size=16)
    monkeypatch.setattr(store.neighbours, "EXACT_LIMIT", 40)  # exactly at the limit: still exact
    monkeypatch.setattr(store.neighbours, "approximate_knn", lambda *a, **kw: pytest.fail("approximate at the limit"))
    built = build_graph(str(tmp_path), "run", "l", k=5)
    assert check_neighbours(normalise(data), built.neighbours, built.distances, 5) == 1.0

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the stored graph was rebuilt")

    monkeypatch.setattr(store.neighbours, "load_matrix", no_rebuild)
    monkeypatch.setattr(store.neighbours, "exact_knn", no_rebuild)
    again = build_graph(Lake(str(tmp_path)), "run", "l", k=5)  # a Lake works as well as its path
    assert again.inputs_hash == built.inputs_hash and again.step == built.step == 0
    assert np.array_equal(again.sample_ids, built.sample_ids) and np.array_equal(again.neighbours, built.neighbours)
    assert np.array_equal(again.distances, built.distances)


def test_inputs_hash_follows_committed_shards_only(tmp_path):
    from store.neighbours import inputs_hash
    from store.lake import activations_parts, activations_table
    from tests.small_lake import write_vectors_run

    rng = np.random.default_rng(9)
    lake = write_vectors_run(tmp_path, "run", {"l": rng.normal(size=(40, 6)).astype(np.float32)},
                             np.zeros(40, np.int32), chunk_size=16)
    before = inputs_hash(lake, "run", "l", "mean", 0, {"k": 5})
    assert before == inputs_hash(lake, "run", "l", "mean", 0, {"k": 5}) != inputs_hash(lake, "run", "l", "mean", 0, {"k": 6})
    # an activations shard whose samples shard is not written yet (a chunk in progress) changes nothing
    pending = activations_table("run", "l", "mean", np.arange(48, 50), np.zeros(1), rng.normal(size=(2, 1, 6)).astype(np.float32), "full")
    lake.write_parquet(pending, *activations_parts("run", "l", "mean", 3))
    assert inputs_hash(lake, "run", "l", "mean", 0, {"k": 5}) == before
    # a committed shard rewritten with other vectors (another size) does
    bigger = activations_table("run", "l", "mean", np.arange(16), np.zeros(1), rng.normal(size=(16, 1, 6)).astype(np.float32), "half")
    lake.write_parquet(bigger, *activations_parts("run", "l", "mean", 0), compression="none")
    assert inputs_hash(lake, "run", "l", "mean", 0, {"k": 5}) != before


def test_neighbours_of_a_vector_and_captured_steps(tmp_path):
    from store.neighbours import captured_steps, resolve_step
    from store.vectors import MissingLayerError
    from tests.small_lake import write_vectors_run

    rng = np.random.default_rng(7)
    steps = rng.normal(size=(30, 2, 4)).astype(np.float32)
    lake = write_vectors_run(tmp_path, "run", {"l": steps}, np.zeros(30, np.int32), chunk_size=16)
    assert captured_steps(str(tmp_path), "run", "l") == [0, 1] and resolve_step(lake, "run", "l", "mean", None) == 1
    assert resolve_step(lake, "run", "l", "mean", 0) == 0
    with pytest.raises(MissingLayerError, match="no vectors for run run, layer other, pooling mean"):
        captured_steps(lake, "run", "other")
    query = rng.normal(size=4)
    exact = loop_cosine(query[None], steps[:, 0])[0]
    ids, distances = neighbours_of_vector(lake, "run", "l", query, k=6, step=0)
    assert ids.tolist() == np.argsort(exact, kind="stable")[:6].tolist()
    np.testing.assert_allclose(distances, np.sort(exact)[:6], atol=2e-6)
    default_ids, _ = neighbours_of_vector(lake, "run", "l", query)
    assert len(default_ids) == 10
    assert default_ids.tolist() == np.argsort(loop_cosine(query[None], steps[:, 1])[0], kind="stable")[:10].tolist()
    own, own_d = neighbours_of_vector(lake, "run", "l", steps[0, 1] * 3.0, k=30)  # stored sample 0, scaled
    assert own[0] == 0 and own_d[0] == pytest.approx(0, abs=1e-6) and sorted(own.tolist()) == list(range(30))
    with pytest.raises(ValueError, match="vector has 3 values; layer l has 4"):
        neighbours_of_vector(lake, "run", "l", np.ones(3))


@pytest.mark.lake
def test_graph_agrees_with_the_exact_sql_macro(tmp_path, digits_lake):
    lake_dir = tmp_path / "lake"  # a copy: the graph it builds must not reach the shared lake
    shutil.copytree(digits_lake["lake"], lake_dir)
    run_id = digits_lake["result"].run_id
    graph = build_graph(str(lake_dir), run_id, "enc.2x2_block0", "mean")
    con = connect(lake_dir)
    for sample in (0, 17, 299):
        ids, distances = graph.of(sample, 10)
        sql = con.sql(f"SELECT sample_id, distance FROM knn_exact('{run_id}', {sample}, 'enc.2x2_block0', 'mean', 0, 10)").fetchall()
        assert ids.tolist() == [row[0] for row in sql]
        np.testing.assert_allclose(distances, [row[1] for row in sql], atol=1e-5)
    view = con.sql("SELECT neighbour_ids[1] FROM neighbours WHERE layer = 'enc.2x2_block0' AND sample_id = 17").fetchall()
    assert view == [(int(graph.of(17, 1)[0][0]),)]


@pytest.mark.lake
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


@pytest.mark.lake
def test_neighbours_of_a_new_vector(tmp_path, digits_lake):
    from store.vectors import load_matrix

    lake_dir = tmp_path / "lake"  # a copy: the graph it builds must not reach the shared lake
    shutil.copytree(digits_lake["lake"], lake_dir)
    run_id = digits_lake["result"].run_id
    ids, matrix = load_matrix(str(lake_dir), run_id, "enc.2x2_block0")
    found, distances = neighbours_of_vector(str(lake_dir), run_id, "enc.2x2_block0", matrix[42] * 3, k=5)
    assert found[0] == ids[42] and distances[0] == pytest.approx(0, abs=1e-5)  # cosine ignores scale
    graph = build_graph(Lake(lake_dir), run_id, "enc.2x2_block0")
    assert found[1:].tolist() == graph.of(42, 4)[0].tolist()
    with pytest.raises(ValueError, match="vector has 3 values"):
        neighbours_of_vector(str(lake_dir), run_id, "enc.2x2_block0", np.ones(3))
