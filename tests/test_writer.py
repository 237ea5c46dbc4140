"""Shard writer: encodings, vector rounding, chunk assembly and error propagation."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from store.lake import Lake
from ingest.plan import class_plan
from ingest.writer import Batch, RunInfo, ShardWriter, encode_png, encode_thumbnail, round_mantissa


def test_round_mantissa_keeps_float16_precision_and_float32_range():
    values = np.array([1.0, 1 / 3, -123456.789, 1e-30, 3e38, 0.0, np.inf, np.nan], dtype=np.float32)
    rounded = round_mantissa(values, 10)
    assert rounded.dtype == np.float32
    finite = np.isfinite(values)
    rel = np.abs(rounded[finite] - values[finite]) / np.maximum(np.abs(values[finite]), 1e-38)
    assert rel.max() <= 2**-11
    assert rounded[4] > 1e38 and rounded[3] > 0  # no float16 overflow or underflow
    assert np.isinf(rounded[6]) and np.isnan(rounded[7])
    assert (rounded[finite].view(np.uint32) & 0x1FFF == 0).all()  # low 13 bits cleared
    assert np.array_equal(round_mantissa(values[finite], 23), values[finite])
    # independently: within float16's normal range, 10 mantissa bits round as numpy's float16 cast (ties aside:
    # numpy rounds them to even, round_mantissa away from zero)
    normal = np.random.default_rng(0).uniform(-6e4, 6e4, 10_000).astype(np.float32)
    normal = normal[(np.abs(normal) > 1e-4) & (normal.view(np.uint32) & 0x1FFF != 0x1000)]
    np.testing.assert_array_equal(round_mantissa(normal, 10), normal.astype(np.float16).astype(np.float32))


def test_png_and_thumbnail_round_trip():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (100, 80, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(rgb)))), rgb)
    gray = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(gray)))), gray[..., 0])
    thumb = Image.open(io.BytesIO(encode_thumbnail(rgb)))
    assert thumb.format == "WEBP" and max(thumb.size) == 64
    assert encode_thumbnail(gray) is None  # small images are their own thumbnail


def make_batch(chunk: int, rows, steps: int = 2, dim: int = 6) -> Batch:
    n = len(rows)
    images = torch.from_numpy(np.stack([np.full((4, 4, 3), i, dtype=np.uint8) for i in rows.sample_id]))
    vectors = {("layer.a", s, "mean"): torch.from_numpy(
        np.stack([np.full(dim, 100 * i + s, dtype=np.float32) for i in rows.sample_id])) for s in range(steps)}
    assert images.shape[0] == n
    return Batch(chunk, rows, images, vectors)


def test_chunks_are_written_with_activations_before_samples(tmp_path):
    lake = Lake(tmp_path)
    plan = class_plan(10, seed=0, n=10)
    writer = ShardWriter(lake, RunInfo("r", tuple("abcdefghij"), (80.0, 10.0), vector_precision="full"), workers=2)
    writer.submit(make_batch(0, plan.take(slice(0, 3))))
    writer.submit(make_batch(0, plan.take(slice(3, 5))))
    writer.end_chunk(0)
    writer.submit(make_batch(1, plan.take(slice(5, 10))))
    writer.end_chunk(1)
    writer.close()
    assert sorted(writer.written_chunks) == [0, 1]
    samples = pq.read_table(tmp_path / "samples" / "r" / "chunk-000000.parquet").to_pylist()
    assert [s["sample_id"] for s in samples] == [0, 1, 2, 3, 4]
    assert samples[2]["class_name"] == "abcdefghij"[samples[2]["class_id"]]
    assert samples[2]["steps"] == 2 and samples[2]["width"] == 4 and samples[2]["thumbnail"] is None
    assert np.asarray(Image.open(io.BytesIO(samples[2]["image_png"])))[0, 0, 0] == 2
    acts = pq.read_table(tmp_path / "activations" / "r" / "layer.a" / "mean" / "chunk-000001.parquet")
    vector_type = acts.schema.field("vector").type
    assert vector_type.list_size == 6 and vector_type.value_type == "float"
    rows = acts.to_pylist()
    assert [(r["sample_id"], r["step"], r["noise_level"]) for r in rows[:3]] == [(5, 0, 80.0), (5, 1, 10.0), (6, 0, 80.0)]
    assert rows[1]["vector"] == [501.0] * 6
    for chunk, ids in [(0, range(5)), (1, range(5, 10))]:  # every row of every shard: its sample's, its step's
        stored = pq.read_table(tmp_path / "activations" / "r" / "layer.a" / "mean" / f"chunk-{chunk:06d}.parquet")
        keys = list(zip(stored.column("sample_id").to_pylist(), stored.column("step").to_pylist()))
        assert keys == [(i, s) for i in ids for s in range(2)]
        vectors = np.stack(stored.column("vector").to_numpy(zero_copy_only=False))
        np.testing.assert_array_equal(vectors, [[100.0 * i + s] * 6 for i, s in keys])
        images = pq.read_table(tmp_path / "samples" / "r" / f"chunk-{chunk:06d}.parquet").to_pylist()
        assert [r["sample_id"] for r in images] == list(ids)
        for r in images:
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r["image_png"]))),
                                          np.full((4, 4, 3), r["sample_id"], dtype=np.uint8))


def test_worker_errors_reach_the_generating_thread_and_nothing_is_committed(tmp_path):
    lake = Lake(tmp_path)
    plan = class_plan(10, seed=0, n=4)
    writer = ShardWriter(lake, RunInfo("r", tuple("abcdefghij"), (80.0, 10.0)), workers=1)
    bad = make_batch(0, plan, steps=1)  # one step captured, two expected
    writer.submit(bad)
    writer.end_chunk(0)
    with pytest.raises(RuntimeError, match="captured 1 steps, expected 2"):
        writer.close()
    assert lake.committed_chunks("r") == set()
