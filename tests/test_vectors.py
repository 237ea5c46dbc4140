"""Loading one layer's vectors into numpy: equal to what DuckDB reads, per step, committed chunks only, and
exactly the values written in every vector format a lake may hold (store.lake.VECTOR_FORMATS and format 1)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.run import IngestConfig, run_ingest
from ingest.writer import VECTOR_PRECISIONS, round_mantissa
from store import connect
from store.lake import (ACTIVATIONS_WRITE_OPTIONS, SAMPLES_SCHEMA, UNRECORDED_VECTOR_FORMAT, Lake, activations_parts,
                        activations_table, chunk_name, samples_parts, vector_format)
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


DIM = 24


def format_1_table(ids: np.ndarray, vectors: np.ndarray) -> pa.Table:
    """A shard as written before vector formats were recorded: nullable lists, default options."""
    n, steps, dim = vectors.shape
    return pa.table({"run_id": ["r"] * (n * steps), "sample_id": np.repeat(ids, steps), "layer": ["l"] * (n * steps),
                     "step": np.tile(np.arange(steps, dtype=np.int16), n),
                     "noise_level": np.tile(np.arange(steps, dtype=np.float32), n), "pooling": ["mean"] * (n * steps),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)})


def commit(lake: Lake, chunk: int, ids: np.ndarray) -> None:
    """The chunk's samples shard (metadata only): what makes its vectors committed."""
    columns = {f.name: pa.nulls(len(ids), f.type) for f in SAMPLES_SCHEMA}
    columns |= {"run_id": pa.array(["r"] * len(ids)), "sample_id": pa.array(ids)}
    lake.write_parquet(pa.table(columns, schema=SAMPLES_SCHEMA), *samples_parts("r", chunk))


@pytest.fixture
def mixed_lake(tmp_path):
    """Three chunks of one layer, one per format, two steps each, ids shuffled across chunks."""
    lake = Lake(tmp_path / "lake")
    rng = np.random.default_rng(0)
    ids = rng.permutation(90).astype(np.int64).reshape(3, 30)
    raw = rng.normal(0, 3, (3, 30, 2, DIM)).astype(np.float32)
    stored = {}
    for chunk, kind in enumerate(["half", "full", "format 1"]):
        values = round_mantissa(raw[chunk], VECTOR_PRECISIONS["full" if kind == "full" else "half"])
        if kind == "format 1":
            table, options = format_1_table(ids[chunk], values), {}
        else:
            table = activations_table("r", "l", "mean", ids[chunk], np.arange(2), values, kind)
            options = ACTIVATIONS_WRITE_OPTIONS
        lake.write_parquet(table, *activations_parts("r", "l", "mean", chunk), **options)
        commit(lake, chunk, ids[chunk])
        for row, sample in enumerate(ids[chunk]):
            stored[int(sample)] = values[row]
    return lake, stored, raw, ids


def test_every_format_reads_back_exactly_the_values_written(mixed_lake):
    lake, stored, _, _ = mixed_lake
    for step in (0, 1):
        ids, matrix = load_matrix(lake, "r", "l", "mean", step=step)
        assert list(ids) == sorted(stored)
        expected = np.stack([stored[int(i)][step] for i in ids])
        assert matrix.dtype == np.float32 and matrix.shape == (90, DIM)
        assert np.array_equal(matrix, expected)


def test_half_precision_is_float16_rounding_and_full_keeps_every_bit(mixed_lake):
    lake, _, raw, ids = mixed_lake
    got, matrix = load_matrix(lake, "r", "l", "mean", step=0)
    position = {int(s): k for k, s in enumerate(got)}
    half = matrix[[position[int(s)] for s in ids[0]]]
    full = matrix[[position[int(s)] for s in ids[1]]]
    assert np.array_equal(half, raw[0, :, 0].astype(np.float16).astype(np.float32))  # numpy's own rounding
    assert np.array_equal(full, raw[1, :, 0])


def test_each_shard_records_its_format(mixed_lake):
    lake, _, _, _ = mixed_lake
    formats = [vector_format(pq.read_schema(lake.path(*activations_parts("r", "l", "mean", c)))) for c in range(3)]
    assert formats == ["half", "full", UNRECORDED_VECTOR_FORMAT]
    schema = pq.read_schema(lake.path(*activations_parts("r", "l", "mean", 0)))
    assert not schema.field("vector").nullable and not schema.field("vector").type.value_field.nullable
    encodings = pq.ParquetFile(lake.path(*activations_parts("r", "l", "mean", 0))).metadata.row_group(0)
    vector_column = [encodings.column(i) for i in range(encodings.num_columns)
                     if encodings.column(i).path_in_schema.startswith("vector")][0]
    assert "BYTE_STREAM_SPLIT" in vector_column.encodings and vector_column.compression == "ZSTD"


def test_duckdb_reads_every_format_with_the_same_values(mixed_lake):
    lake, stored, _, _ = mixed_lake
    con = connect(lake.root)
    rows = con.sql("SELECT sample_id, step, vector FROM activations WHERE run_id = 'r' ORDER BY sample_id, step").fetchall()
    assert len(rows) == 180
    for sample, step, vector in rows:
        assert np.array_equal(np.asarray(vector, dtype=np.float32), stored[sample][step])


def test_uncommitted_chunks_and_missing_steps(mixed_lake):
    lake, stored, _, ids = mixed_lake
    os.remove(lake.path(*samples_parts("r", 1)))  # chunk 1's commit is gone
    got, _ = load_matrix(lake, "r", "l", "mean", step=1)
    assert sorted(got) == sorted(int(s) for s in np.concatenate([ids[0], ids[2]]))
    got, _ = load_matrix(lake, "r", "l", "mean", step=1, chunks=frozenset({1}))
    assert sorted(got) == sorted(int(s) for s in ids[1])
    with pytest.raises(MissingLayerError, match="step 5"):
        load_matrix(lake, "r", "l", "mean", step=5)
    with pytest.raises(MissingLayerError, match="no vectors"):
        load_matrix(lake, "r", "other", "mean")
    assert chunk_name(1) not in os.listdir(lake.path("samples", "r"))


def test_last_step_is_the_default(mixed_lake):
    lake, stored, _, _ = mixed_lake
    ids, matrix = load_matrix(lake, "r", "l", "mean")
    assert np.array_equal(matrix, np.stack([stored[int(i)][1] for i in ids]))


def test_shards_someone_else_wrote_with_other_vector_shapes_are_refused(mixed_lake):
    """A lake file of another width, or with variable-length vectors, is one clear error, not a misread."""
    lake = mixed_lake[0]
    wide = format_1_table(np.array([1000, 1001]), np.ones((2, 2, DIM + 1), np.float32))
    lake.write_parquet(wide, *activations_parts("r", "l", "mean", 3))
    commit(lake, 3, np.array([1000, 1001]))
    with pytest.raises(MissingLayerError, match=rf"different widths \[{DIM}, {DIM + 1}\] in different shards"):
        load_matrix(lake, "r", "l")
    ragged = format_1_table(np.array([1000, 1001]), np.ones((2, 2, DIM), np.float32))
    ragged = ragged.set_column(6, "vector", pa.array([[1.0]] * 4, pa.list_(pa.float32())))
    lake.write_parquet(ragged, *activations_parts("r", "l", "mean", 3))
    with pytest.raises(MissingLayerError, match="are not fixed-size lists"):
        load_matrix(lake, "r", "l")
