"""The shard writer: turns generated batches into Parquet shards off the generator's critical path.

The generating thread hands each batch (images and pooled vectors, still on the model's device) to
`submit` and goes straight on with the next batch. Worker threads copy it to the host, encode PNGs and
thumbnails and round the vectors; a single writer thread assembles each finished chunk and writes its
shards (activations first, the samples shard last: the commit). Queues are bounded, so a slow disk
slows the generator down instead of filling memory. A worker's error is raised in the generating
thread at its next call.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from ingest.capture import CaptureKey
from store.lake import (ACTIVATIONS_WRITE_OPTIONS, SAMPLES_SCHEMA, VECTOR_PRECISIONS, Lake, activations_parts,
                        activations_table, constant_strings, round_mantissa, samples_parts)
from ingest.plan import SamplePlan

WORKER_NICENESS = 19  # the lowest priority: storage fills the gaps the generator leaves (docs/BENCHMARKS.md)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
THUMBNAIL_SIDE = 64
PNG_COMPRESS_LEVEL = 6
# PNGs are compressed already: zstd on top would only cost time.
SAMPLES_COMPRESSION = {name: "zstd" for name in SAMPLES_SCHEMA.names} | {"image_png": "none", "thumbnail": "none"}
def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """uint8 HWC (C = 1 or 3) to PNG bytes (see `encode_pngs`)."""
    return encode_pngs(pixels[None], compress_level)[0]


def encode_pngs(images: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> list[bytes]:
    """uint8 NHWC (C = 1, 3 or 4) to one PNG each: every row "Up"-filtered, then deflated.

    About twice as fast as Pillow's encoder for 64x64 images, and the deflate step releases the GIL,
    so encoder threads really run in parallel. Files are within a few percent of Pillow's size. The
    filter runs on the whole batch at once and the header is shared, so a small image costs little
    more than its deflate (the GIL is held as briefly as possible: the generator needs it too).
    """
    count, height, width, channels = images.shape
    rows = images.reshape(count, height, width * channels)
    filtered = np.empty((count, height, width * channels + 1), dtype=np.uint8)
    filtered[:, :, 0] = 2  # filter type Up: each byte minus the byte above it (mod 256)
    filtered[:, 0, 1:] = rows[:, 0]
    np.subtract(rows[:, 1:], rows[:, :-1], out=filtered[:, 1:, 1:], dtype=np.uint8)
    color_type = {1: 0, 3: 2, 4: 6}[channels]  # grey, RGB, RGBA
    header = PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
    end = _png_chunk(b"IEND", b"")
    return [header + _png_chunk(b"IDAT", zlib.compress(image, compress_level)) + end for image in filtered]


def encode_thumbnails(images: np.ndarray, side: int = THUMBNAIL_SIDE) -> list[bytes | None]:
    """`encode_thumbnail` of each NHWC image; no work per image when they are all that small already."""
    if max(images.shape[1:3]) <= side:
        return [None] * len(images)
    return [encode_thumbnail(image, side) for image in images]


def encode_thumbnail(pixels: np.ndarray, side: int = THUMBNAIL_SIDE) -> bytes | None:
    """A WebP of at most `side` pixels, or None when the image is that small already."""
    height, width = pixels.shape[:2]
    if max(height, width) <= side:
        return None
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=80)
    return buffer.getvalue()


def no_tags(n: int) -> pa.Array:
    """`n` empty tag lists, built from buffers."""
    return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()))


def _yield_to_generator() -> None:
    """Lower this worker thread's CPU priority (Linux: per thread), so that when the generator itself
    runs on the CPU, encoding fills the gaps between its ops rather than stretching them."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
    except (AttributeError, OSError):
        pass


@dataclasses.dataclass
class Batch:
    """One generated batch as handed over by the generating thread."""

    chunk: int
    rows: SamplePlan
    images: torch.Tensor  # uint8 NHWC, any device
    vectors: dict[CaptureKey, torch.Tensor]  # (layer, step, pooling) -> (B, D), any device


@dataclasses.dataclass
class PreparedBatch:
    rows: SamplePlan
    png: list[bytes]
    thumbnails: list[bytes | None]
    height: int
    width: int
    vectors: dict[tuple[str, str], np.ndarray]  # (layer, pooling) -> (B, steps, D) float32


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What every row of a run's shards repeats."""

    run_id: str
    class_names: tuple[str, ...]
    step_levels: tuple[float, ...]  # noise level each captured step starts from
    vector_precision: str = "half"  # a key of VECTOR_PRECISIONS
    png_compress_level: int = PNG_COMPRESS_LEVEL


class ShardWriter:
    def __init__(self, lake: Lake, info: RunInfo, workers: int = 2, max_pending_batches: int = 4) -> None:
        self.lake = lake
        self.info = info
        self._prepare = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare",
                                           initializer=_yield_to_generator)
        self._write = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write", initializer=_yield_to_generator)
        self._slots = threading.BoundedSemaphore(max_pending_batches)
        self._chunks: dict[int, list[Future]] = {}
        self._writes: list[Future] = []
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self.written_chunks: list[int] = []

    # --- generating thread ------------------------------------------------------------------------

    def submit(self, batch: Batch) -> None:
        self._raise_pending_error()
        self._slots.acquire()
        future = self._prepare.submit(self._prepare_batch, batch)
        future.add_done_callback(lambda _f: self._slots.release())
        self._chunks.setdefault(batch.chunk, []).append(future)

    def end_chunk(self, chunk: int) -> None:
        """All batches of `chunk` are submitted: write it once they are prepared."""
        self._raise_pending_error()
        parts = self._chunks.pop(chunk)
        self._writes.append(self._write.submit(self._write_chunk, chunk, parts))
        self._writes = [w for w in self._writes if not w.done() or w.exception()]

    def close(self) -> None:
        """Wait for everything submitted; raise the first worker error, if any."""
        try:
            for future in self._writes:
                future.result()
        finally:
            self._prepare.shutdown(wait=True, cancel_futures=True)
            self._write.shutdown(wait=True, cancel_futures=True)
        self._raise_pending_error()

    def abort(self) -> None:
        """Stop without writing chunks that are not yet written (their data is simply regenerated)."""
        self._chunks.clear()
        self._prepare.shutdown(wait=True, cancel_futures=True)
        self._write.shutdown(wait=True, cancel_futures=True)

    def _raise_pending_error(self) -> None:
        for future in self._writes:
            if future.done() and future.exception() is not None:
                raise future.exception()

    # --- worker threads ---------------------------------------------------------------------------

    def _prepare_batch(self, batch: Batch) -> PreparedBatch:
        pixels = batch.images.cpu().numpy()
        steps = len(self.info.step_levels)
        grouped: dict[tuple[str, str], list[np.ndarray]] = {}
        for (layer, step, pooling), tensor in sorted(batch.vectors.items(), key=lambda kv: kv[0][1]):
            grouped.setdefault((layer, pooling), []).append(tensor.float().cpu().numpy())
        vectors = {}
        for key, per_step in grouped.items():
            if len(per_step) != steps:
                raise RuntimeError(f"layer {key[0]} captured {len(per_step)} steps, expected {steps}")
            vectors[key] = round_mantissa(np.stack(per_step, axis=1), VECTOR_PRECISIONS[self.info.vector_precision])
        return PreparedBatch(
            rows=batch.rows,
            png=encode_pngs(pixels, self.info.png_compress_level),
            thumbnails=encode_thumbnails(pixels),
            height=pixels.shape[1],
            width=pixels.shape[2],
            vectors=vectors,
        )

    def _write_chunk(self, chunk: int, parts: list[Future]) -> None:
        prepared: list[PreparedBatch] = [f.result() for f in parts]
        for (layer, pooling), table in self._activation_tables(prepared).items():
            self.lake.write_parquet(table, *activations_parts(self.info.run_id, layer, pooling, chunk),
                                    **ACTIVATIONS_WRITE_OPTIONS)
        self.lake.write_parquet(self._samples_table(chunk, prepared), *samples_parts(self.info.run_id, chunk),
                                compression=SAMPLES_COMPRESSION)
        with self._lock:
            self.written_chunks.append(chunk)

    def _samples_table(self, chunk: int, prepared: list[PreparedBatch]) -> pa.Table:
        rows = [p.rows for p in prepared]
        n = sum(len(r) for r in rows)
        class_ids = np.concatenate([r.class_id for r in rows]) if rows[0].class_id is not None else None
        prompts = [t for r in rows for t in r.prompt_texts()] if rows[0].prompt_index is not None else None
        tags = ([list(r.prompts[i].tags) for r in rows for i in r.prompt_index]
                if rows[0].prompt_index is not None else no_tags(n))
        names = self.info.class_names
        columns = {
            "run_id": constant_strings(self.info.run_id, n),
            "sample_id": np.concatenate([r.sample_id for r in rows]),
            "chunk": np.full(n, chunk, dtype=np.int32),
            "seed": np.concatenate([r.seed for r in rows]),
            "class_id": class_ids.astype(np.int32) if class_ids is not None else pa.nulls(n, pa.int32()),
            "class_name": (pa.array(names, pa.string()).take(class_ids) if class_ids is not None
                           else pa.nulls(n, pa.string())),
            "prompt": prompts if prompts is not None else pa.nulls(n, pa.string()),
            "tags": tags,
            "steps": np.full(n, len(self.info.step_levels), dtype=np.int16),
            "width": np.concatenate([np.full(len(p.rows), p.width, dtype=np.int32) for p in prepared]),
            "height": np.concatenate([np.full(len(p.rows), p.height, dtype=np.int32) for p in prepared]),
            "image_png": [b for p in prepared for b in p.png],
            "thumbnail": [t for p in prepared for t in p.thumbnails],
        }
        return pa.table(columns, schema=SAMPLES_SCHEMA)

    def _activation_tables(self, prepared: list[PreparedBatch]) -> dict[tuple[str, str], pa.Table]:
        sample_ids = np.concatenate([p.rows.sample_id for p in prepared])
        return {(layer, pooling): activations_table(self.info.run_id, layer, pooling, sample_ids, self.info.step_levels,
                                                    np.concatenate([p.vectors[(layer, pooling)] for p in prepared]),
                                                    self.info.vector_precision)
                for layer, pooling in prepared[0].vectors}
