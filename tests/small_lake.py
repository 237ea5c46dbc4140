"""Small lakes written in a test, in milliseconds, through the lake's own schemas: a class-conditional run of
given activation vectors (samples, activations of any layers and steps, a run event) and, optionally, a
layout of given coordinates. For tests of the modules that read the lake (compare, diversity, placement,
neighbour graphs) on data whose every figure can be computed again in the test; no model, no UMAP.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from store.lake import (EMBEDDINGS_SCHEMA, RUNS_SCHEMA, SAMPLES_SCHEMA, SCHEMA_VERSION, Lake, LayoutKey,
                        activations_parts, activations_table, runs_parts, samples_parts)


def write_vectors_run(root: Path | str, run_id: str, layers: dict[str, np.ndarray], class_ids: np.ndarray,
                      seeds: np.ndarray | None = None, chunk_size: int = 64, names: dict[int, str] | None = None) -> Lake:
    """A complete run: `layers` maps a layer name to its vectors, (n, dim) or (n, steps, dim); sample i has
    id i, class `class_ids[i]` and seed `seeds[i]` (default: i); chunks of `chunk_size` samples."""
    lake = Lake(root)
    class_ids = np.asarray(class_ids, dtype=np.int32)
    n = len(class_ids)
    seeds = np.arange(n, dtype=np.int64) if seeds is None else np.asarray(seeds, dtype=np.int64)
    for chunk, start in enumerate(range(0, n, chunk_size)):
        ids = np.arange(start, min(n, start + chunk_size), dtype=np.int64)
        lake.write_parquet(samples_table(run_id, ids, chunk, seeds[ids], class_ids[ids], names or {}),
                           *samples_parts(run_id, chunk))
        for layer, vectors in layers.items():
            steps = vectors if vectors.ndim == 3 else vectors[:, None, :]
            table = activations_table(run_id, layer, "mean", ids, np.zeros(steps.shape[1], np.float32),
                                      steps[ids].astype(np.float32), "full")
            lake.write_parquet(table, *activations_parts(run_id, layer, "mean", chunk))
    now = dt.datetime.now(dt.timezone.utc)
    event = {f.name: None for f in RUNS_SCHEMA}
    event |= {"run_id": run_id, "rank": 0, "world_size": 1, "status": "complete", "model": "test-vectors",
              "layers": list(layers), "poolings": ["mean"], "n_samples": n, "seed": 0, "config_hash": "test",
              "plan": json.dumps({"kind": "test"}), "started_at": now, "updated_at": now,
              "schema_version": SCHEMA_VERSION}
    lake.write_parquet(pa.Table.from_pylist([event], schema=RUNS_SCHEMA), *runs_parts(run_id, 0, now, "complete"))
    return lake


def samples_table(run_id: str, ids: np.ndarray, chunk: int, seeds: np.ndarray, class_ids: np.ndarray,
                  names: dict[int, str]) -> pa.Table:
    m = len(ids)
    columns = {f.name: pa.nulls(m, f.type) for f in SAMPLES_SCHEMA}
    columns |= {"run_id": pa.array([run_id] * m, pa.string()), "sample_id": pa.array(ids),
                "chunk": pa.array(np.full(m, chunk, np.int32)), "seed": pa.array(seeds),
                "class_id": pa.array(class_ids, pa.int32()),
                "class_name": pa.array([names.get(int(c), str(c)) for c in class_ids], pa.string()),
                "steps": pa.array(np.ones(m, np.int16)), "width": pa.array(np.full(m, 8, np.int32)),
                "height": pa.array(np.full(m, 8, np.int32))}
    return pa.table(columns, schema=SAMPLES_SCHEMA)


def write_layout(lake: Lake, run_id: str, layer: str, xy: np.ndarray, sample_ids: np.ndarray | None = None,
                 step: int = 0, params_hash: str = "0123456789abcdef") -> LayoutKey:
    """A layout of `layer` at `step` with these coordinates (row i: sample `sample_ids[i]`, default i)."""
    n = len(xy)
    ids = np.arange(n, dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
    key = LayoutKey(run_id, layer, "mean", step, params_hash)
    lake.write_parquet(pa.table({
        "run_id": pa.array([run_id] * n, pa.string()), "layer": pa.array([layer] * n, pa.string()),
        "step": np.full(n, step, np.int16), "pooling": pa.array(["mean"] * n, pa.string()),
        "method": pa.array(["test"] * n, pa.string()), "params_hash": pa.array([params_hash] * n, pa.string()),
        "params": pa.array(["{}"] * n, pa.string()), "sample_id": ids,
        "x": np.asarray(xy[:, 0], np.float32), "y": np.asarray(xy[:, 1], np.float32),
        "knn_overlap": np.ones(n, np.float32),
    }, schema=EMBEDDINGS_SCHEMA), *key.parts())
    return key


def plant_temporary(folder: Path, alive: bool = False) -> Path:
    """A hidden temporary shard as `Lake.write_parquet` names it, left by a writer that was killed (a process
    that has exited) or, with `alive`, by one still writing (this process)."""
    import os
    import socket
    import subprocess
    import sys
    import uuid

    if alive:
        pid = os.getpid()
    else:
        ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        pid = int(ended.stdout)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".chunk-000000.parquet.{socket.gethostname()}~{pid}-{uuid.uuid4().hex}.tmp"
    path.write_bytes(b"half a shard")
    return path
