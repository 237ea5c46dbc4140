"""`make embed`: for each chosen layer of a run, the raw-space neighbour graph and a seeded 2-D layout,
aligned layer to layer, written to the lake's `embeddings` table:

    <lake>/embeddings/<run_id>/<layer>/<pooling>/step-0000-<params hash>.parquet

The params hash covers the layout parameters, the vectors' inputs hash and the alignment reference,
so asking for the same layout twice reuses the stored one.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from store.catalogue import stored_layers
from store.lake import EMBEDDINGS_SCHEMA, Lake, LayoutKey, check_run_id, chunk_of
from store.layouts import (LayoutParams, approximate_nearest_fitted, layout, mean_displacement, neighbour_overlap,
                           procrustes_align, umap_backend)
from store.neighbours import GRAPH_K, build_graph, exact_knn, normalise

AUDIT_K = 15


@dataclasses.dataclass(frozen=True)
class LayoutResult:
    run_id: str
    layer: str
    pooling: str
    step: int
    params_hash: str
    samples: int
    reused: bool
    displacement: float | None  # mean displacement from the previous layer after alignment
    mean_overlap: float  # neighbour audit, averaged over points


class EmbedError(ValueError):
    pass


def latest_run(lake: Lake) -> str:
    """The newest complete run of any model (`latest_runs`): a newer run still running, or failed, is skipped."""
    from store.views import connect

    con = connect(lake.root)
    rows = con.sql("SELECT run_id FROM latest_runs ORDER BY updated_at DESC, run_id DESC LIMIT 1").fetchall()
    if rows:
        return rows[0][0]
    newest = con.sql("SELECT run_id, status FROM runs ORDER BY updated_at DESC, run_id DESC LIMIT 1").fetchall()
    if newest:
        run_id, status = newest[0]
        raise EmbedError(f"no complete run in lake {lake.uri} (the newest, {run_id}, is {status}); repeat its "
                         "`make ingest` command to finish it, or name a run with RUN=... (--run)")
    raise EmbedError(f"no runs in lake {lake.uri}; run `make ingest` first")


def captured_layers(lake: Lake, run_id: str, pooling: str) -> list[str]:
    """Layers of a run with vectors: in the order they were captured, then features added later (by name)."""
    if lake.read_runs(check_run_id(run_id)).num_rows == 0:
        raise EmbedError(f"no run {run_id} in lake {lake.uri}; see `make sql Q=\"SELECT run_id FROM runs\"`")
    return stored_layers(lake, run_id, pooling)


def snapshot_chunks(lake: Lake, run_id: str, layers: list[str], pooling: str) -> frozenset[int]:
    """The chunks every layer is laid out from, taken once: committed (samples shard written) and with a
    usable vector shard in each of `layers`, so all layers hold the same samples even while an ingest of
    the run is still writing."""
    chunks = lake.committed_chunks(run_id)
    for layer in layers:
        chunks &= {c for c in map(chunk_of, lake.shard_names("activations", run_id, layer, pooling)) if c is not None}
    return frozenset(chunks)


def embedding_parts(run_id: str, layer: str, pooling: str, step: int, digest: str) -> tuple[str, ...]:
    return LayoutKey(run_id, layer, pooling, step, digest).parts()


def embed_run(lake: Lake | str, run_id: str | None = None, layers: list[str] | None = None,
              step: int | None = None, pooling: str = "mean", params: LayoutParams = LayoutParams(),
              align: bool = True, progress: bool = True) -> list[LayoutResult]:
    """Lay out each chosen layer (default: every captured layer of the latest complete run, last step)."""
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    run_id = run_id or latest_run(lake)
    available = captured_layers(lake, run_id, pooling)
    if not available:
        raise EmbedError(f"run {run_id} has no vectors with pooling {pooling}; a run of real images gets them from "
                         f"`make features RUN={run_id} EXTRACTOR=...`")
    chosen = layers or available
    missing = [layer for layer in chosen if layer not in available]
    if missing:
        raise EmbedError(f"layer {missing[0]} was not captured with pooling {pooling} in run {run_id}; "
                         f"captured: {', '.join(available) or '(none)'}")

    for table in ("indexes", "embeddings"):  # what a killed embed of this run left behind
        lake.remove_orphan_temporaries(table, run_id)
    chunks = snapshot_chunks(lake, run_id, chosen, pooling)
    if not chunks:
        raise EmbedError(f"run {run_id} has no committed chunk with vectors of every chosen layer yet; "
                         "wait for its first chunk, or choose layers that were captured")
    results: list[LayoutResult] = []
    previous_xy: np.ndarray | None = None
    previous_ids: np.ndarray | None = None
    chain: list[str] = []  # the layers this one is aligned through, part of its identity
    for layer in tqdm(chosen, desc=f"embed {run_id}", unit="layer", disable=not progress):
        graph = build_graph(lake, run_id, layer, pooling, step, chunks=chunks)
        layer_step = graph.step
        extra = {"inputs": graph.inputs_hash, "aligned_through": chain if align else None, "umap": umap_backend()}
        digest = params.digest(extra)
        parts = embedding_parts(run_id, layer, pooling, layer_step, digest)
        path = lake.path(*parts)
        if parts[-1] in lake.shard_names(*parts[:-1]):
            table = pq.read_table(path, filesystem=lake.fs, columns=["sample_id", "x", "y", "knn_overlap"])
            xy = np.stack([table.column("x").to_numpy(), table.column("y").to_numpy()], axis=1)
            displacement = None
            if previous_xy is not None and np.array_equal(previous_ids, graph.sample_ids):
                displacement = mean_displacement(previous_xy, xy)
            results.append(LayoutResult(run_id, layer, pooling, layer_step, digest, len(xy), True, displacement,
                                        float(np.mean(table.column("knn_overlap").to_numpy()))))
        else:
            from store.vectors import load_matrix

            ids, vectors = load_matrix(lake, run_id, layer, pooling, layer_step, chunks=chunks)
            rows = np.searchsorted(ids, graph.neighbours)  # neighbour sample ids -> row indices
            follows = align and previous_xy is not None and np.array_equal(previous_ids, ids)
            # Aligned layouts start from the previous layer's map, then are Procrustes-fitted onto it.
            xy = layout(vectors, params, knn=(rows, graph.distances), init=previous_xy if follows else None)
            displacement = None
            if follows:
                xy = procrustes_align(previous_xy, xy)
                displacement = mean_displacement(previous_xy, xy)
            overlap = neighbour_overlap(rows, xy, AUDIT_K)
            write_embedding(lake, parts, run_id, layer, pooling, layer_step, digest, params, extra, ids, xy, overlap)
            results.append(LayoutResult(run_id, layer, pooling, layer_step, digest, len(ids), False, displacement,
                                        float(overlap.mean())))
        previous_xy, previous_ids = xy, graph.sample_ids
        chain = chain + [layer]
    return results


def write_embedding(lake: Lake, parts: tuple[str, ...], run_id: str, layer: str, pooling: str, step: int,
                    digest: str, params: LayoutParams, extra: dict, ids: np.ndarray, xy: np.ndarray,
                    overlap: np.ndarray) -> None:
    n = len(ids)
    description = json.dumps(dataclasses.asdict(params) | extra)
    table = pa.table({
        "run_id": [run_id] * n,
        "layer": [layer] * n,
        "step": np.full(n, step, dtype=np.int16),
        "pooling": [pooling] * n,
        "method": ["umap"] * n,
        "params_hash": [digest] * n,
        "params": [description] * n,
        "sample_id": ids,
        "x": xy[:, 0].astype(np.float32),
        "y": xy[:, 1].astype(np.float32),
        "knn_overlap": overlap.astype(np.float32),
    }, schema=EMBEDDINGS_SCHEMA)
    lake.write_parquet(table, *parts)


def embed_subset(lake: Lake | str, base, sample_ids: np.ndarray, params: LayoutParams = LayoutParams(),
                 description: str = ""):
    """A new layout of some samples of a stored layout's layer (the dashboard's "recompute layout"):
    UMAP on just their vectors, saved beside the full one under its own params hash; returns its key.

    `base` is a `store.lake.LayoutKey`; `description` says which filter or selection chose the samples (shown
    in the layout's name, not part of its identity). The neighbour audit uses exact neighbours within the
    subset.
    """
    import hashlib

    from store.catalogue import layout_params
    from store.neighbours import EXACT_LIMIT
    from store.vectors import load_matrix

    lake = lake if isinstance(lake, Lake) else Lake(lake)
    wanted = np.unique(np.asarray(sample_ids, dtype=np.int64))
    ids, vectors = load_matrix(lake, base.run_id, base.layer, base.pooling, base.step)
    rows = np.searchsorted(ids, wanted)
    if len(wanted) < 3 or np.any(rows >= len(ids)) or np.any(ids[np.minimum(rows, len(ids) - 1)] != wanted):
        raise EmbedError(f"the subset must be at least 3 samples of layer {base.layer} of run {base.run_id}")
    subset = hashlib.sha256(wanted.tobytes()).hexdigest()[:16]
    extra = {"inputs": layout_params(lake, base).get("inputs"), "subset": subset, "subset_of": base.params_hash,
             "aligned_through": None, "umap": umap_backend()}
    digest = params.digest(extra)
    key = LayoutKey(base.run_id, base.layer, base.pooling, base.step, digest)
    if key.parts()[-1] in lake.shard_names(*key.parts()[:-1]):
        return key
    unit = normalise(vectors[rows].astype(np.float32))
    k = min(AUDIT_K, len(unit) - 1)
    knn_rows, knn_distances = exact_knn(unit, k) if len(unit) <= EXACT_LIMIT else approximate_knn(unit, k, params.seed)
    xy = layout(vectors[rows], params, knn=(knn_rows, knn_distances) if params.n_neighbors - 1 <= k else None)
    overlap = neighbour_overlap(knn_rows, xy, AUDIT_K)
    write_embedding(lake, key.parts(), base.run_id, base.layer, base.pooling, base.step, digest, params,
                    extra | {"description": description[:200]}, wanted, xy, overlap)
    return key


def warm_kernels() -> float:
    """Run what `make embed` runs, on small random vectors, so that its numba kernels are compiled into the
    cache (`python -m store warm-cache`, run by `make setup`): exact neighbours, an aligned UMAP layout and
    the neighbour audit (every layer), and the pynndescent search that places the points a sampled fit
    leaves out (~90 s of compiling otherwise paid by the first large layout; its cacheable kernels include
    every one of the neighbour graph beyond `EXACT_LIMIT` samples). Returns the seconds it took."""
    started = time.perf_counter()
    vectors = np.random.default_rng(0).normal(size=(GRAPH_K + 30, 16)).astype(np.float32)
    rows, distances = exact_knn(normalise(vectors), GRAPH_K)
    first = layout(vectors, LayoutParams(), knn=(rows, distances))
    aligned = layout(vectors, LayoutParams(), knn=(rows, distances), init=first)
    neighbour_overlap(rows, aligned, AUDIT_K)
    many = normalise(np.random.default_rng(1).normal(size=(400, 16)).astype(np.float32))
    approximate_nearest_fitted(many[:300], many[300:], LayoutParams().n_neighbors, seed=0)
    return time.perf_counter() - started
