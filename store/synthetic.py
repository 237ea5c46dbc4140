"""Synthetic lakes of any size, written through the lake's schema (the contract between stages): a run
with prompts and tags, its samples (one small PNG per distinct image), a clustered 2-D layout and a
neighbour graph. For dashboard benchmarks at 1M-10M points and for tests that need text-to-image style
metadata (e.g. hostile prompts) without a text-to-image model.
"""

from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np
import pyarrow as pa
from PIL import Image

from store.lake import (EMBEDDINGS_SCHEMA, RUNS_SCHEMA, SAMPLES_SCHEMA, SCHEMA_VERSION, Lake, LayoutKey, check_run_id,
                        graph_parts, indexes_schema, runs_parts, samples_parts)
from store.layouts import LayoutParams

CHUNK = 1_000_000
LAYER, POOLING, STEP = "synthetic.block", "mean", 0


def tile_png(index: int) -> bytes:
    """A distinct 16x16 colour tile per cluster, so thumbnails are real, decodable images."""
    rng = np.random.default_rng(index)
    pixels = (rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).repeat(4, 0).repeat(4, 1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def cluster_centres(clusters: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-20, 20, (clusters, 2)).astype(np.float32)


def clustered_xy(n: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-20, 20, (clusters, 2)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    xy = centres[labels] + rng.normal(0, 1.0, (n, 2)).astype(np.float32)
    return xy.astype(np.float32), labels


def write_run(lake: Lake | str, run_id: str, n: int, prompts: list[str], tags: list[str] | None = None,
              clusters: int | None = None, seed: int = 0, graph_k: int = 10, progress: bool = False) -> LayoutKey:
    """A complete prompt-conditioned run of `n` samples with a layout and a 2-D neighbour graph."""
    from scipy.spatial import cKDTree
    from tqdm import tqdm

    lake = lake if isinstance(lake, Lake) else Lake(lake)
    check_run_id(run_id)
    clusters = clusters or len(prompts)
    xy, labels = clustered_xy(n, clusters, seed)
    prompt_of = np.arange(clusters) % len(prompts)
    tags = tags or ["synthetic"]
    tiles = [tile_png(i) for i in range(clusters)]
    ids = np.arange(n, dtype=np.int64)
    now = dt.datetime.now(dt.timezone.utc)

    bar = tqdm(total=4, desc=f"synthetic lake {run_id}", disable=not progress)
    for chunk, start in enumerate(range(0, n, CHUNK)):
        part = slice(start, min(n, start + CHUNK))
        m = part.stop - part.start
        lab = labels[part]
        prompt_codes = pa.array(prompt_of[lab].astype(np.int32))
        tag_codes = pa.array((lab % len(tags)).astype(np.int32))
        table = pa.table({
            "run_id": pa.array([run_id] * m, pa.string()),
            "sample_id": ids[part], "chunk": np.full(m, chunk, np.int32),
            "seed": (ids[part] * 7919 + seed).astype(np.int64),
            "class_id": pa.nulls(m, pa.int32()), "class_name": pa.nulls(m, pa.string()),
            "prompt": pa.DictionaryArray.from_arrays(prompt_codes, pa.array(prompts)).cast(pa.string()),
            "tags": pa.ListArray.from_arrays(np.arange(m + 1, dtype=np.int32),
                                             pa.DictionaryArray.from_arrays(tag_codes, pa.array(tags)).cast(pa.string())),
            "steps": np.ones(m, np.int16), "width": np.full(m, 16, np.int32), "height": np.full(m, 16, np.int32),
            "image_png": pa.DictionaryArray.from_arrays(pa.array(lab.astype(np.int32)), pa.array(tiles)).cast(pa.binary()),
            "thumbnail": pa.nulls(m, pa.binary()),
        }, schema=SAMPLES_SCHEMA)
        lake.write_parquet(table, *samples_parts(run_id, chunk), row_group_size=65536)
    bar.update()

    tree = cKDTree(xy)
    distances, rows = tree.query(xy, k=graph_k + 1, workers=-1)
    neighbour_ids, neighbour_d = ids[rows[:, 1:]], distances[:, 1:].astype(np.float32)
    bar.update()
    inputs = f"synthetic{seed:08d}"
    lake.write_parquet(pa.table({
        "run_id": pa.array([run_id] * n, pa.string()), "layer": pa.array([LAYER] * n, pa.string()),
        "step": np.zeros(n, np.int16), "pooling": pa.array([POOLING] * n, pa.string()), "sample_id": ids,
        "neighbour_ids": pa.FixedSizeListArray.from_arrays(pa.array(neighbour_ids.reshape(-1), pa.int64()), graph_k),
        "distances": pa.FixedSizeListArray.from_arrays(pa.array(neighbour_d.reshape(-1), pa.float32()), graph_k),
    }, schema=indexes_schema(graph_k)), *graph_parts(run_id, LAYER, POOLING, STEP, inputs), row_group_size=4096)
    bar.update()

    params = LayoutParams(seed=seed)
    digest = params.digest({"inputs": inputs, "synthetic": True})
    key = LayoutKey(run_id, LAYER, POOLING, STEP, digest)
    description = json.dumps({"synthetic": True, "inputs": inputs})
    lake.write_parquet(pa.table({
        "run_id": pa.array([run_id] * n, pa.string()), "layer": pa.array([LAYER] * n, pa.string()),
        "step": np.zeros(n, np.int16), "pooling": pa.array([POOLING] * n, pa.string()),
        "method": pa.array(["synthetic"] * n, pa.string()), "params_hash": pa.array([digest] * n, pa.string()),
        "params": pa.array([description] * n, pa.string()), "sample_id": ids,
        "x": xy[:, 0], "y": xy[:, 1], "knn_overlap": np.ones(n, np.float32),
    }, schema=EMBEDDINGS_SCHEMA), *key.parts())
    bar.update()

    event = {f.name: None for f in RUNS_SCHEMA}
    event |= {"run_id": run_id, "rank": 0, "world_size": 1, "status": "complete", "model": "synthetic",
              "layers": [LAYER], "poolings": [POOLING], "n_samples": n, "seed": seed, "config_hash": inputs,
              "plan": json.dumps({"kind": "synthetic", "prompts": len(prompts)}), "started_at": now,
              "updated_at": now, "schema_version": SCHEMA_VERSION}
    lake.write_parquet(pa.Table.from_pylist([event], schema=RUNS_SCHEMA), *runs_parts(run_id, 0, now, "complete"))
    bar.close()
    return key
