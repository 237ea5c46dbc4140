"""Paired runs: the embedded student against its teacher on the same plan, per layer."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from ingest.run import IngestConfig, run_ingest
from store import connect
from store.compare import PairingError, compare_runs, knn_jaccard_rows
from store.vectors import load_matrix
from tests.conftest import DIGITS_LAYERS
from tests.small_lake import write_vectors_run


# --- plain re-computations ---------------------------------------------------------------------------

def loop_knn(x: np.ndarray, k: int) -> list[set[int]]:
    """Each row's k nearest other rows by cosine distance (float64, one row at a time)."""
    x = x.astype(np.float64)
    norms = np.sqrt((x**2).sum(1))
    out = []
    for i in range(len(x)):
        d = 1.0 - (x @ x[i]) / (norms * norms[i])
        d[i] = np.inf
        out.append(set(np.argsort(d, kind="stable")[:k].tolist()))
    return out


def loop_jaccard(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    return np.array([len(p & q) / len(p | q) for p, q in zip(loop_knn(a, k), loop_knn(b, k))])


def loop_cka(a: np.ndarray, b: np.ndarray) -> float:
    """HSIC form: trace(K H L H) / sqrt(trace(K H K H) trace(L H L H)), K = a a^T, L = b b^T."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    n = len(a)
    h = np.eye(n) - 1.0 / n
    k, l = h @ a @ a.T @ h, h @ b @ b.T @ h
    return float(np.trace(k @ l) / math.sqrt(np.trace(k @ k) * np.trace(l @ l)))


@pytest.fixture()
def pair(tmp_path) -> dict:
    """Two paired runs of 60 samples: layer `same` shared exactly, `near` partly kept, `far` unrelated; each
    with 3 steps, the last the most alike; written in milliseconds."""
    rng = np.random.default_rng(0)
    n, classes = 60, np.arange(60) % 4
    base = rng.normal(size=(n, 3, 8)) + 2.0  # off-centre, as pooled activations are
    near = base + 0.5 * rng.normal(size=(n, 3, 8)) * np.array([1.5, 1.0, 0.5])[None, :, None]
    far = rng.normal(size=(n, 3, 5)) + 1.0
    write_vectors_run(tmp_path, "run-a", {"same": base, "near": base, "far": base}, classes, chunk_size=25)
    write_vectors_run(tmp_path, "run-b", {"same": base, "near": near, "far": far}, classes, chunk_size=25)
    return {"root": tmp_path, "base": base, "near": near, "far": far}


def test_knn_jaccard_rows_matches_a_loop():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 6)) + 1.0
    b = a + 0.7 * rng.normal(size=(50, 6))
    got = knn_jaccard_rows(a, b, 5)
    expected = loop_jaccard(a, b, 5)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert len(np.unique(expected)) >= 4  # overlaps of several sizes: 0, 1/9, 1/4, 3/7, ...
    assert np.array_equal(knn_jaccard_rows(a, a, 5), np.ones(50))


def test_compare_runs_figures_match_a_loop(pair):
    table = compare_runs(pair["root"], "run-a", "run-b", k=6).to_pylist()
    assert [r["layer"] for r in table] == ["same", "near", "far"]  # capture order
    for row, layer in zip(table, ("base", "near", "far")):
        a, b = pair["base"][:, 2], pair[layer][:, 2]
        jaccard = loop_jaccard(a, b, 6)
        assert row["mean_knn_jaccard"] == pytest.approx(jaccard.mean(), abs=1e-12)
        assert row["linear_cka"] == pytest.approx(loop_cka(a, b), rel=1e-5)
        order = np.argsort(jaccard, kind="stable")[:20]
        assert row["most_changed"] == order.tolist()  # sample id i is row i here
        assert row["most_changed_jaccard"] == pytest.approx(jaccard[order].tolist(), abs=1e-12)
        assert (row["run_a"], row["run_b"], row["pooling"], row["samples"], row["k"]) == ("run-a", "run-b", "mean", 60, 6)
        assert (row["step_a"], row["step_b"]) == (2, 2)  # each run's last step
    assert table[0]["mean_knn_jaccard"] == 1.0 and table[0]["linear_cka"] == pytest.approx(1.0)
    assert 0.1 < table[1]["mean_knn_jaccard"] < 0.9 and table[2]["mean_knn_jaccard"] < table[1]["mean_knn_jaccard"]
    uncentred = np.linalg.norm(pair["base"][:, 2].T @ pair["far"][:, 2]) ** 2 / (
        np.linalg.norm(pair["base"][:, 2].T @ pair["base"][:, 2]) * np.linalg.norm(pair["far"][:, 2].T @ pair["far"][:, 2]))
    assert abs(uncentred - table[2]["linear_cka"]) > 0.1  # the stored CKA is centred
    stored = connect(pair["root"]).sql("SELECT layer, mean_knn_jaccard, linear_cka, step_a, step_b FROM comparisons "
                                       "ORDER BY layer").fetchall()
    assert stored == sorted((r["layer"], r["mean_knn_jaccard"], r["linear_cka"], 2, 2) for r in table)
    assert (pair["root"] / "comparisons" / "run-a--run-b" / "mean-k6.parquet").exists()


def test_compare_runs_at_chosen_steps_and_layers(pair):
    table = compare_runs(pair["root"], "run-a", "run-b", k=4, layers=["near"], step_a=0, step_b=1).to_pylist()
    assert len(table) == 1 and (table[0]["step_a"], table[0]["step_b"]) == (0, 1)
    a, b = pair["base"][:, 0], pair["near"][:, 1]
    assert table[0]["mean_knn_jaccard"] == pytest.approx(loop_jaccard(a, b, 4).mean(), abs=1e-12)
    assert table[0]["linear_cka"] == pytest.approx(loop_cka(a, b), rel=1e-5)
    assert (pair["root"] / "comparisons" / "run-a--run-b" / "mean-k4-steps0-1.parquet").exists()
    only_a = compare_runs(pair["root"], "run-a", "run-b", k=4, layers=["near"], step_a=1).to_pylist()[0]
    assert (only_a["step_a"], only_a["step_b"]) == (1, 2)
    assert not (pair["root"] / "comparisons" / "run-a--run-b" / "mean-k4.parquet").exists()  # a chosen step
    big_k = compare_runs(pair["root"], "run-a", "run-b", k=100, layers=["far"]).to_pylist()[0]
    assert big_k["k"] == 100 and big_k["mean_knn_jaccard"] == pytest.approx(1.0)  # k capped at n - 1: everyone
    with pytest.raises(PairingError, match="layer missing was not captured by both runs; common layers: same, near, far"):
        compare_runs(pair["root"], "run-a", "run-b", layers=["missing"])


def test_unpaired_or_empty_runs_are_refused(pair):
    root = pair["root"]
    classes = np.arange(60) % 4
    write_vectors_run(root, "reseeded", {"same": pair["base"]}, classes, seeds=np.arange(60) + 1)
    with pytest.raises(PairingError, match="runs run-a and reseeded are not paired: 60 of 60 samples differ"):
        compare_runs(root, "run-a", "reseeded")
    relabelled = classes.copy()
    relabelled[5] = 3
    write_vectors_run(root, "relabelled", {"same": pair["base"]}, relabelled)
    with pytest.raises(PairingError, match="1 of 60 samples differ"):
        compare_runs(root, "run-a", "relabelled")
    write_vectors_run(root, "shorter", {"same": pair["base"][:50]}, classes[:50])
    with pytest.raises(PairingError, match="10 of 60 samples differ"):
        compare_runs(root, "run-a", "shorter")
    with pytest.raises(PairingError, match="runs nobody and none have no samples in"):
        compare_runs(root, "nobody", "none")


def test_a_killed_compares_temporary_file_is_removed(pair):
    from tests.small_lake import plant_temporary

    killed = plant_temporary(pair["root"] / "comparisons" / "run-a")
    writing = plant_temporary(pair["root"] / "comparisons", alive=True)
    compare_runs(pair["root"], "run-a", "run-b", k=3, layers=["near"])
    assert not killed.exists() and writing.exists()


def test_stored_comparisons_partners_and_capture_order(pair):
    from store.compare import comparison_table, partners, stored_comparisons

    compare_runs(pair["root"], "run-a", "run-b", k=3, step_a=0, step_b=0)
    compare_runs(pair["root"], "run-a", "run-b", k=3)
    compare_runs(pair["root"], "run-a", "run-a", k=3, layers=["far", "same"])
    con = connect(pair["root"])
    stored = stored_comparisons(con)
    assert stored == [
        {"run_a": "run-a", "run_b": "run-a", "pooling": "mean", "k": 3, "step_a": 2, "step_b": 2},
        {"run_a": "run-a", "run_b": "run-b", "pooling": "mean", "k": 3, "step_a": 0, "step_b": 0},
        {"run_a": "run-a", "run_b": "run-b", "pooling": "mean", "k": 3, "step_a": 2, "step_b": 2}]
    self_table = comparison_table(con, **stored[0])
    assert self_table["layer"].tolist() == ["same", "far"] and self_table.index.tolist() == [0, 1]
    table = comparison_table(con, **stored[1])
    assert table["layer"].tolist() == ["same", "near", "far"] and set(table["step_b"]) == {0}
    assert partners(con, "run-a") == ["run-b"] and partners(con, "run-b") == ["run-a"]
    assert partners(con, "nobody") == []


@pytest.fixture(scope="module")
def paired(paired_lake, tmp_path_factory) -> dict:
    lake = tmp_path_factory.mktemp("compare") / "lake"
    shutil.copytree(paired_lake["lake"], lake)
    return {"lake": lake, "student": paired_lake["student"], "teacher": paired_lake["teacher"]}


@pytest.mark.lake
def test_a_run_against_itself_is_identical(paired):
    table = compare_runs(paired["lake"], paired["student"], paired["student"]).to_pylist()
    assert [r["layer"] for r in table] == DIGITS_LAYERS.split(",")  # capture order
    for row in table:
        assert row["mean_knn_jaccard"] == pytest.approx(1.0) and row["linear_cka"] == pytest.approx(1.0)


@pytest.mark.lake
def test_student_against_teacher_per_layer(paired):
    table = compare_runs(paired["lake"], paired["student"], paired["teacher"], step_a=0, step_b=0).to_pylist()
    assert len(table) == 3
    for row in table:
        assert 0.0 <= row["mean_knn_jaccard"] < 1.0 and 0.0 < row["linear_cka"] <= 1.0
        assert row["samples"] == 300 and len(row["most_changed"]) == 20
        ids, a = load_matrix(paired["lake"], paired["student"], row["layer"], "mean", 0)
        _, b = load_matrix(paired["lake"], paired["teacher"], row["layer"], "mean", 0)
        # the figures again, by a plain float64 computation; real activations have near-ties at the k-th
        # neighbour that float32 and float64 may break differently, so a few rows may differ by a neighbour
        jaccard = loop_jaccard(a, b, 10)
        assert row["mean_knn_jaccard"] == pytest.approx(jaccard.mean(), abs=2e-3)
        assert row["linear_cka"] == pytest.approx(loop_cka(a, b), rel=1e-4)
        position = {int(s): i for i, s in enumerate(ids)}
        mine = [jaccard[position[s]] for s in row["most_changed"]]
        assert sum(m == pytest.approx(j, abs=1e-12) for m, j in zip(mine, row["most_changed_jaccard"])) >= 18
        assert max(row["most_changed_jaccard"]) <= np.sort(jaccard)[20] + 0.1
        assert row["most_changed_jaccard"] == sorted(row["most_changed_jaccard"])
    # the same input (80 z) enters both models at step 0: their first block agrees more than their last
    assert table[0]["linear_cka"] > table[-1]["linear_cka"]
    stored = connect(paired["lake"]).sql(
        "SELECT layer, mean_knn_jaccard, linear_cka FROM comparisons WHERE run_b = $b AND step_b = 0",
        params={"b": paired["teacher"]}).fetchall()
    assert sorted(stored) == sorted((r["layer"], r["mean_knn_jaccard"], r["linear_cka"]) for r in table)


@pytest.mark.lake
def test_unpaired_runs_are_refused(paired, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(paired["lake"], lake)
    other = run_ingest(IngestConfig(model="digits-edm", lake=str(lake), n=300, layers=DIGITS_LAYERS, seed=99,
                                    progress=False))
    with pytest.raises(PairingError, match="are not paired"):
        compare_runs(lake, paired["student"], other.run_id)


@pytest.mark.lake
def test_stored_comparisons_read_back_in_capture_order(paired):
    from store.compare import comparison_table, partners, stored_comparisons

    con = connect(paired["lake"])
    stored = [c for c in stored_comparisons(con) if c["run_b"] == paired["teacher"]]
    assert [(c["step_a"], c["step_b"]) for c in stored] == [(0, 0), (0, 7)]  # the teacher samples in 8 steps
    table = comparison_table(con, **stored[0])
    assert table["layer"].tolist() == DIGITS_LAYERS.split(",")
    assert partners(con, paired["student"]) == [paired["teacher"]]
    assert partners(con, paired["teacher"]) == [paired["student"]]


def test_defaults_and_messages(pair):
    row = compare_runs(pair["root"], "run-a", "run-b", layers=["near"]).to_pylist()[0]
    assert row["k"] == 10 and row["mean_knn_jaccard"] == pytest.approx(
        loop_jaccard(pair["base"][:, 2], pair["near"][:, 2], 10).mean(), abs=1e-12)
    write_vectors_run(pair["root"], "reseeded", {"same": pair["base"]}, np.arange(60) % 4, seeds=np.arange(60) + 1)
    with pytest.raises(PairingError) as refused:
        compare_runs(pair["root"], "run-a", "reseeded")
    assert str(refused.value) == ("runs run-a and reseeded are not paired: 60 of 60 samples differ in id, seed, class "
                                  "or prompt; ingest both with the same plan and --seed")
