"""Paired runs: the embedded student against its teacher on the same plan, per layer."""

from __future__ import annotations

import shutil

import pytest

from ingest.run import IngestConfig, run_ingest
from store import connect
from store.compare import PairingError, compare_runs
from tests.conftest import DIGITS_LAYERS


@pytest.fixture(scope="module")
def paired(paired_lake, tmp_path_factory) -> dict:
    lake = tmp_path_factory.mktemp("compare") / "lake"
    shutil.copytree(paired_lake["lake"], lake)
    return {"lake": lake, "student": paired_lake["student"], "teacher": paired_lake["teacher"]}


def test_a_run_against_itself_is_identical(paired):
    table = compare_runs(paired["lake"], paired["student"], paired["student"]).to_pylist()
    assert [r["layer"] for r in table] == DIGITS_LAYERS.split(",")  # capture order
    for row in table:
        assert row["mean_knn_jaccard"] == pytest.approx(1.0) and row["linear_cka"] == pytest.approx(1.0)


def test_student_against_teacher_per_layer(paired):
    table = compare_runs(paired["lake"], paired["student"], paired["teacher"], step_a=0, step_b=0).to_pylist()
    assert len(table) == 3
    for row in table:
        assert 0.0 <= row["mean_knn_jaccard"] < 1.0 and 0.0 < row["linear_cka"] <= 1.0
        assert row["samples"] == 300 and len(row["most_changed"]) == 20
        assert row["most_changed_jaccard"] == sorted(row["most_changed_jaccard"])
    # the same input (80 z) enters both models at step 0: their first block agrees more than their last
    assert table[0]["linear_cka"] > table[-1]["linear_cka"]
    stored = connect(paired["lake"]).sql(
        "SELECT layer, mean_knn_jaccard, linear_cka FROM comparisons WHERE run_b = $b AND step_b = 0",
        params={"b": paired["teacher"]}).fetchall()
    assert sorted(stored) == sorted((r["layer"], r["mean_knn_jaccard"], r["linear_cka"]) for r in table)


def test_unpaired_runs_are_refused(paired, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(paired["lake"], lake)
    other = run_ingest(IngestConfig(model="digits-edm", lake=str(lake), n=300, layers=DIGITS_LAYERS, seed=99,
                                    progress=False))
    with pytest.raises(PairingError, match="are not paired"):
        compare_runs(lake, paired["student"], other.run_id)


def test_stored_comparisons_read_back_in_capture_order(paired):
    from store.compare import comparison_table, partners, stored_comparisons

    con = connect(paired["lake"])
    stored = [c for c in stored_comparisons(con) if c["run_b"] == paired["teacher"]]
    assert [(c["step_a"], c["step_b"]) for c in stored] == [(0, 0), (0, 7)]  # the teacher samples in 8 steps
    table = comparison_table(con, **stored[0])
    assert table["layer"].tolist() == DIGITS_LAYERS.split(",")
    assert partners(con, paired["student"]) == [paired["teacher"]]
    assert partners(con, paired["teacher"]) == [paired["student"]]
