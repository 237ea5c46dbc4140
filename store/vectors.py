"""Load one layer's pooled vectors from the lake into a numpy matrix, fast.

DuckDB is the query engine, but for a whole (run, layer, pooling, step) matrix pyarrow reads the
shards straight into one contiguous float32 buffer: the fixed-size list's values are already laid
out row by row, so no per-row Python work happens.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from store.lake import Lake, chunk_name


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
    dataset = ds.dataset(paths, format="parquet", filesystem=lake.fs)
    table = dataset.to_table(columns=["sample_id", "step", "vector"], use_threads=True)
    steps = table.column("step").to_numpy()
    if step is None:
        step = int(steps.max())
    keep = steps == step
    if not keep.any():
        raise MissingLayerError(f"step {step} was not captured for layer {layer} of run {run_id}")
    column = table.column("vector")
    if not pa.types.is_fixed_size_list(column.type):
        raise MissingLayerError(f"vectors of layer {layer} are not fixed-size lists; was the lake written by ingest?")
    # One copy, straight from Arrow's buffers into the matrix, keeping only the rows of `step`.
    matrix = np.empty((int(keep.sum()), column.type.list_size), dtype=np.float32)
    source = target = 0
    for chunk in column.chunks:
        values = chunk.flatten().to_numpy().reshape(len(chunk), -1)
        rows = keep[source: source + len(chunk)]
        picked = values if rows.all() else values[rows]
        matrix[target: target + len(picked)] = picked
        source += len(chunk)
        target += len(picked)
    table = table.filter(pa.array(keep)) if not keep.all() else table
    ids = table.column("sample_id").to_numpy()
    order = np.argsort(ids, kind="stable")
    if not np.all(order == np.arange(len(order))):
        ids, matrix = ids[order], matrix[order]
    return ids, matrix
