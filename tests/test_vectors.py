"""Loading one layer's vectors into numpy: equal to what DuckDB reads, per step, committed chunks only."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ingest.run import IngestConfig, run_ingest
from store import connect
from store.vectors import MissingLayerError, load_matrix


def test_matrix_equals_duckdb(digits_lake):
    run_id = digits_lake["result"].run_id
    ids, matrix = load_matrix(str(digits_lake["lake"]), run_id, "enc.8x8_block0", "grid2")
    assert ids.tolist() == list(range(300)) and matrix.shape == (300, 128) and matrix.dtype == np.float32
    rows = connect(digits_lake["lake"]).sql(
        "SELECT sample_id, vector FROM activations WHERE layer = 'enc.8x8_block0' AND pooling = 'grid2' "
        "ORDER BY sample_id").fetchall()
    np.testing.assert_array_equal(matrix, np.array([r[1] for r in rows], dtype=np.float32))


def test_steps_of_a_multi_step_run(tmp_path):
    result = run_ingest(IngestConfig(model="digits-edm", lake=str(tmp_path), n=12, layers="dec.2x2_in0",
                                     chunk_size=5, batch=4, progress=False))
    ids, last = load_matrix(str(tmp_path), result.run_id, "dec.2x2_in0")
    _, step7 = load_matrix(str(tmp_path), result.run_id, "dec.2x2_in0", step=7)
    _, first = load_matrix(str(tmp_path), result.run_id, "dec.2x2_in0", step=0)
    assert ids.tolist() == list(range(12))
    np.testing.assert_array_equal(last, step7)
    assert not np.allclose(first, last)
    with pytest.raises(MissingLayerError, match="step 8 was not captured"):
        load_matrix(str(tmp_path), result.run_id, "dec.2x2_in0", step=8)


def test_uncommitted_chunks_and_missing_layers(tmp_path, digits_lake):
    lake = tmp_path / "lake"
    shutil.copytree(digits_lake["lake"], lake)
    run_id = digits_lake["result"].run_id
    folder = lake / "activations" / run_id / "enc.2x2_block0" / "mean"
    shutil.copy(folder / "chunk-000000.parquet", folder / "chunk-000099.parquet")  # no samples shard: a crash
    ids, _ = load_matrix(str(lake), run_id, "enc.2x2_block0")
    assert len(ids) == 300
    assert len(load_matrix(str(lake), run_id, "enc.2x2_block0", committed_only=False)[0]) == 428
    with pytest.raises(MissingLayerError, match="no vectors for run .* layer dec.8x8_up"):
        load_matrix(str(lake), run_id, "dec.8x8_up")
