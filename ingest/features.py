"""Reference features of a run, stored like activations (`python -m ingest features`, `make features`).

`extract_features` reads a run's committed samples chunk by chunk, passes their images through a fixed
image encoder (`ingest.extractors`: the digits CNN, CLIP's vision tower, DINOv2) and writes one shard per
chunk as the layer `features.<name>` of that run:

    activations/<run>/features.<name>/mean/chunk-000042.parquet

in the activations table's format (`store.lake.activations_schema(dim)`), with step 0, noise_level 0 and
pooling `mean`: so every tool that reads a run's layers with its default pooling (layouts, neighbour
graphs, compare, diversity, placement, the dashboard) reads the features unchanged. Vectors are rounded to
float16 precision by default, as ingest stores activations (`vector_precision="full"` keeps every bit).

Like ingest, it is resumable and crash-safe: each shard is written atomically (`Lake.write_parquet`), a
chunk whose features shard exists and is healthy (`Lake.shard_names`) is skipped, so repeating the command
after a crash writes exactly the missing chunks, under the same names. The extractor's identity (name,
weights' source, dim) is stored in each shard's Parquet metadata; a resumed extraction with another
extractor under the same layer name is refused. Everything (the run, its samples, the extractor, the lake)
is checked before the first write.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import itertools
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ingest.extractors import Extractor, check_name, resolve_extractor
from ingest.writer import VECTOR_PRECISIONS, round_mantissa
from store.lake import (ACTIVATIONS_WRITE_OPTIONS, Lake, activations_parts, activations_table, as_lake, check_run_id,
                        chunk_of, samples_parts)
from store.options import MAX_SAMPLES, MAX_WORKERS, check_range

POOLING = "mean"  # the pooling tools read by default
IDENTITY_KEY = b"dmd2_lens.features"  # Parquet schema metadata: the extractor's identity (JSON)


class FeaturesError(ValueError):
    """A run or lake that features cannot be extracted from or into (one line: problem; fix)."""


@dataclasses.dataclass(frozen=True)
class FeaturesResult:
    run_id: str
    layer: str
    written: list[int]  # chunks written by this call
    skipped: int  # chunks that had their features already
    samples: int  # samples whose features this call computed
    seconds: float


def committed_chunks(lake: Lake, run_id: str) -> list[int]:
    """The run's committed chunks, or one clear error when there is no such run or it has no samples."""
    check_run_id(run_id)
    chunks = sorted(lake.committed_chunks(run_id))
    if chunks:
        return chunks
    if lake.read_runs(run_id).num_rows == 0:
        known = lake.list_folders("runs")
        listed = (f"runs here: {', '.join(known[:10])}{' ...' if len(known) > 10 else ''}" if known
                  else "it holds no runs")
        raise FeaturesError(f"no run {run_id} in lake {lake.uri} ({listed}); check --run and --lake")
    raise FeaturesError(f"run {run_id} has no committed samples in lake {lake.uri} yet; ingest it first "
                        "(repeat its `make ingest` command to resume it)")


def stored_identity(lake: Lake, parts: tuple[str, ...]) -> dict | None:
    metadata = pq.read_schema(lake.path(*parts), filesystem=None if lake.is_local else lake.fs).metadata or {}
    raw = metadata.get(IDENTITY_KEY)
    return json.loads(raw) if raw else None


def done_chunks(lake: Lake, run_id: str, extractor: Extractor) -> set[int]:
    """Chunks whose features shard is there and healthy; refused if one holds another extractor's vectors."""
    layer, identity = extractor.layer, extractor.identity()
    done = set()
    for name in lake.shard_names("activations", run_id, layer, POOLING):
        chunk = chunk_of(name)
        if chunk is None:
            continue
        found = stored_identity(lake, activations_parts(run_id, layer, POOLING, chunk))
        if found != identity:
            what = f"features of {found['source']} ({found['dim']}-d)" if found else "vectors of another kind"
            raise FeaturesError(
                f"layer {layer} of run {run_id} holds {what}, not of {identity['source']} ({identity['dim']}-d); "
                f"choose another name (--name), or delete {lake.path('activations', run_id, layer)} to replace it")
        done.add(chunk)
    return done


class FeaturesLock:
    """One extraction per (run, layer) at a time on local lakes; released by the kernel if the process dies."""

    def __init__(self, lake: Lake, run_id: str, layer: str) -> None:
        self.path = Path(lake.path("activations", run_id, layer, ".features-lock")) if lake.is_local else None
        self.handle = None

    def __enter__(self) -> "FeaturesLock":
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a")  # never truncated: its time stamps stay as they were
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.handle.close()
                raise FeaturesError(f"{self.path.parent.name} of run {self.path.parent.parent.name} is being "
                                    "extracted by another process; wait for it") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()


# --- reading images, computing, writing -------------------------------------------------------------------


def image_batches(lake: Lake, run_id: str, chunk: int, batch: int) -> Iterator[tuple[np.ndarray, list[bytes]]]:
    """(sample ids, PNG bytes) of a committed chunk, `batch` at a time, streamed from its samples shard."""
    with lake.fs.open_input_file(lake.path(*samples_parts(run_id, chunk))) as handle:
        for record in pq.ParquetFile(handle).iter_batches(batch_size=batch, columns=["sample_id", "image_png"]):
            yield record.column("sample_id").to_numpy(), record.column("image_png").to_pylist()


def read_ahead(items: Iterator, depth: int) -> Iterator:
    """`items`, pulling up to `depth` ahead of the consumer (so their preprocessing runs meanwhile)."""
    queue = collections.deque(itertools.islice(items, depth))
    while queue:
        yield queue.popleft()
        queue.extend(itertools.islice(items, 1))


def chunk_vectors(lake: Lake, run_id: str, chunk: int, extractor: Extractor, batch: int, pool: ThreadPoolExecutor,
                  ahead: int, bar: tqdm) -> tuple[np.ndarray, np.ndarray]:
    """(sample ids, (n, dim) float32 features) of one chunk; the next `ahead` batches are decoded and
    preprocessed in `pool` while the encoder runs."""
    pending: Iterator[tuple[np.ndarray, Future]] = (
        (ids, pool.submit(extractor.preprocess, pngs)) for ids, pngs in image_batches(lake, run_id, chunk, batch))
    ids, vectors = [], []
    for batch_ids, prepared in read_ahead(pending, depth=ahead):
        vectors.append(extractor(prepared.result()))
        ids.append(batch_ids)
        bar.update(len(batch_ids))
    return np.concatenate(ids), np.concatenate(vectors)


def features_table(run_id: str, extractor: Extractor, ids: np.ndarray, vectors: np.ndarray, precision: str) -> pa.Table:
    """One chunk's features as activation rows (step 0, noise level 0, pooling mean), identity in the metadata."""
    rounded = round_mantissa(vectors, VECTOR_PRECISIONS[precision])[:, None, :]  # one step
    return activations_table(run_id, extractor.layer, POOLING, ids, np.zeros(1, dtype=np.float32), rounded, precision,
                             metadata={IDENTITY_KEY: json.dumps(extractor.identity()).encode()})


def chunk_rows(lake: Lake, run_id: str, chunks: list[int]) -> int:
    """Samples in these committed chunks, from their shards' footers."""
    fs = None if lake.is_local else lake.fs
    return sum(pq.read_metadata(lake.path(*samples_parts(run_id, c)), filesystem=fs).num_rows for c in chunks)


def write_chunks(lake: Lake, run_id: str, extractor: Extractor, chunks: list[int], batch: int, precision: str,
                 workers: int, progress: bool) -> int:
    """Compute and store the features of these chunks, one atomic shard each; returns the samples done."""
    bar = tqdm(total=chunk_rows(lake, run_id, chunks), desc=f"{extractor.layer} {run_id}", unit="sample",
               disable=not progress, smoothing=0.1)
    done = 0
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            for chunk in chunks:
                ids, vectors = chunk_vectors(lake, run_id, chunk, extractor, batch, pool, workers, bar)
                table = features_table(run_id, extractor, ids, vectors, precision)
                lake.write_parquet(table, *activations_parts(run_id, extractor.layer, POOLING, chunk),
                                   **ACTIVATIONS_WRITE_OPTIONS)
                done += len(ids)
    finally:
        bar.close()
    return done


def check_numbers(batch: int, workers: int, vector_precision: str) -> None:
    check_range("--batch", batch, 1, MAX_SAMPLES)
    check_range("--workers", workers, 1, MAX_WORKERS)
    if vector_precision not in VECTOR_PRECISIONS:
        raise FeaturesError(f"unknown --vector-precision {vector_precision}; use {' or '.join(VECTOR_PRECISIONS)}")


def extract_features(lake: Lake | str | Path, run_id: str, extractor: str | Extractor, device: str = "auto",
                     batch: int = 256, progress: bool = True, name: str | None = None, workers: int = 2,
                     vector_precision: str = "half") -> FeaturesResult:
    """Store the features of every committed sample of `run_id` that has none yet as layer `features.<name>`
    (see the module's docstring). `extractor`: a preset (digits, clip, dinov2), a folder, a digits
    `.safetensors` file, a hub repo id, or an `Extractor` (used on its own device); `device` auto: cuda when
    torch sees one. `workers` threads decode and preprocess images ahead of the encoder."""
    started = time.perf_counter()
    lake = as_lake(lake)
    check_numbers(batch, workers, vector_precision)
    chunks = committed_chunks(lake, run_id)
    if isinstance(extractor, str):
        extractor = resolve_extractor(extractor, device, name)
    elif name is not None:
        extractor = dataclasses.replace(extractor, name=check_name(name))
    lake.ensure_writable()
    with FeaturesLock(lake, run_id, extractor.layer):
        done = done_chunks(lake, run_id, extractor)
        todo = [c for c in chunks if c not in done]
        lake.remove_orphan_temporaries("activations", run_id, extractor.layer)
        samples = write_chunks(lake, run_id, extractor, todo, batch, vector_precision, workers,
                               progress) if todo else 0
    return FeaturesResult(run_id, extractor.layer, todo, len(chunks) - len(todo), samples,
                          time.perf_counter() - started)
