"""Load one layer's pooled vectors from the lake into a numpy matrix, fast.

DuckDB is the query engine, but for a whole (run, layer, pooling, step) matrix pyarrow reads the
shards, a thread per shard, straight into one contiguous float32 buffer: the fixed-size list's values
are already laid out row by row, so no per-row Python work happens.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from store.lake import Lake, chunk_name


READ_THREADS = min(16, 2 * (os.cpu_count() or 1))  # two per core: one decodes while the other waits on a read


class MissingLayerError(ValueError):
    pass


def shard_paths(lake: Lake, run_id: str, layer: str, pooling: str) -> list[str]:
    names = lake.shard_names("activations", run_id, layer, pooling)
    return [lake.path("activations", run_id, layer, pooling, n) for n in names]


def load_matrix(lake: Lake | str, run_id: str, layer: str, pooling: str = "mean", step: int | None = None,
                committed_only: bool = True, chunks: frozenset[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sample ids int64 (n,), vectors float32 (n, dim)) sorted by sample id, for one step.

    `step` None means the last captured step. With `committed_only`, rows of chunks whose samples
    shard is missing (a crash between the two writes) are left out. `chunks` reads exactly those chunks (a
    snapshot taken once, so that several layers read while an ingest is writing hold the same samples).
    """
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    paths = shard_paths(lake, run_id, layer, pooling)
    if chunks is not None or committed_only:
        wanted = {chunk_name(c) for c in (chunks if chunks is not None else lake.committed_chunks(run_id))}
        paths = [p for p in paths if p.rsplit("/", 1)[1] in wanted]
    if not paths:
        raise MissingLayerError(f"no vectors for run {run_id}, layer {layer}, pooling {pooling}; "
                                "see the `captured` view for what exists")
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        # First the small columns of every shard (which rows belong to `step`), then each shard's vectors
        # read and copied into the matrix by one thread and dropped at once: the decoded shards are never
        # all in memory together. One shard per thread: shards may differ in vector format
        # (store.lake.VECTOR_FORMATS), which a single dataset scan would have to reconcile.
        schemas_and_heads = list(pool.map(lambda path: read_head(lake, path), paths))
        dim = vector_width([schema for schema, _ in schemas_and_heads], layer)
        heads = [head for _, head in schemas_and_heads]
        steps = [head.column("step").to_numpy() for head in heads]
        if step is None:
            step = int(max(s.max(initial=0) for s in steps))
        keeps = [s == step for s in steps]
        counts = [int(k.sum()) for k in keeps]
        if not sum(counts):
            raise MissingLayerError(f"step {step} was not captured for layer {layer} of run {run_id}")
        matrix = np.empty((sum(counts), dim), dtype=np.float32)
        ids = np.empty(sum(counts), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        jobs = [(lake, path, head, keep, start) for path, head, keep, start, count in
                zip(paths, heads, keeps, starts, counts) if count]
        list(pool.map(lambda job: copy_rows(*job, matrix, ids), jobs))
    order = np.argsort(ids, kind="stable")
    if not np.all(order == np.arange(len(order))):
        ids, matrix = ids[order], matrix[order]
    return ids, matrix


def read_head(lake: Lake, path: str) -> tuple[pa.Schema, pa.Table]:
    """A shard's schema and its small columns (`sample_id`, `step`), from one opening of the file."""
    with lake.fs.open_input_file(path) as source:
        shard = pq.ParquetFile(source)
        return shard.schema_arrow, shard.read(columns=["sample_id", "step"], use_threads=False)


def read_vectors(lake: Lake, path: str) -> pa.ChunkedArray:
    return pq.read_table(path, columns=["vector"], filesystem=lake.fs, use_threads=False).column("vector")


def vector_width(schemas: list[pa.Schema], layer: str) -> int:
    widths = set()
    for schema in schemas:
        kind = schema.field("vector").type
        if not pa.types.is_fixed_size_list(kind):
            raise MissingLayerError(f"vectors of layer {layer} are not fixed-size lists; was the lake written by ingest?")
        widths.add(kind.list_size)
    if len(widths) > 1:
        raise MissingLayerError(f"vectors of layer {layer} have different widths {sorted(widths)} in different shards")
    return widths.pop()


def copy_rows(lake: Lake, path: str, head: pa.Table, keep: np.ndarray, start: int, matrix: np.ndarray,
              ids: np.ndarray) -> None:
    """Read the shard's vectors and copy its kept rows into matrix[start:] and ids[start:] (numpy's copies
    release the GIL, so the threads copy in parallel)."""
    vectors = read_vectors(lake, path)
    if len(vectors) != len(head):
        raise MissingLayerError(f"shard {path} changed while it was read; read the layer again")
    sample_ids = head.column("sample_id").to_numpy()
    target = start
    source = 0
    for chunk in vectors.chunks:
        values = chunk.flatten().to_numpy().reshape(len(chunk), -1)
        rows = keep[source: source + len(chunk)]
        picked = values if rows.all() else values[rows]
        matrix[target: target + len(picked)] = picked
        ids[target: target + len(picked)] = sample_ids[source: source + len(chunk)][rows]
        source += len(chunk)
        target += len(picked)
