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
from ingest.writer import (Batch, RunInfo, ShardWriter, encode_png, encode_pngs, encode_thumbnail, encode_thumbnails,
                           round_mantissa)


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


def test_a_batch_of_pngs_decodes_to_each_image():
    rng = np.random.default_rng(1)
    for shape in [(5, 9, 7, 3), (3, 8, 8, 1), (2, 6, 4, 4)]:
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        encoded = encode_pngs(images)
        assert len(encoded) == shape[0]
        for image, png in zip(images, encoded):
            decoded = np.asarray(Image.open(io.BytesIO(png)))
            assert np.array_equal(decoded.reshape(image.shape), image)
            assert png == encode_png(image)
    big = rng.integers(0, 256, (2, 100, 80, 3), dtype=np.uint8)
    assert encode_thumbnails(big) == [encode_thumbnail(image) for image in big] and None not in encode_thumbnails(big)
    assert encode_thumbnails(big[:, :64, :64]) == [None, None]


def test_writer_threads_run_at_the_lowest_priority(tmp_path):
    import os
    import threading

    from ingest.writer import WORKER_NICENESS

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    writer = ShardWriter(Lake(tmp_path), RunInfo("r", ("a",), (80.0,)))
    levels = [writer._prepare.submit(niceness).result(), writer._write.submit(niceness).result()]
    writer.close()
    assert levels == [WORKER_NICENESS, WORKER_NICENESS] == [19, 19]
    assert niceness() == 0  # the generating thread keeps its priority
