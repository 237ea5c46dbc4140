"""True nearest neighbours in raw activation space, persisted in the lake as a k-NN graph.

For every (run, layer, step, pooling) the graph holds each sample's `GRAPH_K` nearest other samples
by cosine distance, exactly re-ranked on the raw vectors:

    <lake>/indexes/<run_id>/<layer>/<pooling>/step-0000-<inputs hash>.parquet

Up to `EXACT_LIMIT` samples it is computed exactly (blocked matrix products); beyond, pynndescent
proposes candidates that are then re-ranked exactly. The file name carries a hash of the inputs (the
committed vector shards and the parameters), so the graph is rebuilt only when they change. Storing the
graph, not a pickled search structure, keeps the lake free of executable content and makes neighbours
queryable from SQL too (`neighbours` view).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from store.lake import Lake, chunk_name, graph_parts, indexes_schema
from store.numba_cache import cache_library_kernels
from store.vectors import MissingLayerError, load_matrix, shard_paths

GRAPH_K = 50
EXACT_LIMIT = 50_000
BLOCK_ROWS = 4096
GRAPH_ROW_GROUP = 4096
# NN-descent's settings by number of points: (extra neighbours it keeps beyond k, candidates it tries per
# point and iteration). Measured at 768 dims (docs/BENCHMARKS.md, neighbour graphs against faiss and
# hnswlib): at 100k, (0, 20) reaches recall@10 0.971 in 54 s, sooner than faiss's HNSW (62 s, 0.964),
# where (10, 80) took 145 s for 0.999; at 1M the larger setting is what keeps recall@10 above 0.95.
NND_SETTINGS = ((200_000, 0, 20), (None, 10, 80))  # (up to this many points, extra, candidates)


def nndescent_settings(n: int) -> tuple[int, int]:
    """(extra neighbours, candidates per iteration) for a graph of n points."""
    for limit, extra, candidates in NND_SETTINGS:
        if limit is None or n <= limit:
            return extra, candidates
    raise AssertionError("the last setting has no limit")

@dataclasses.dataclass(frozen=True)
class NeighbourGraph:
    sample_ids: np.ndarray  # (n,)
    neighbours: np.ndarray  # (n, k) sample ids, nearest first
    distances: np.ndarray  # (n, k) cosine distances
    inputs_hash: str
    step: int  # the sampling step whose vectors it indexes

    def of(self, sample_id: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        row = np.searchsorted(self.sample_ids, sample_id)
        if row >= len(self.sample_ids) or self.sample_ids[row] != sample_id:
            raise KeyError(f"sample {sample_id} is not in this layer's graph")
        return self.neighbours[row, :k], self.distances[row, :k]


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def normalise_in_place(vectors: np.ndarray) -> np.ndarray:
    """Unit rows without a second copy (1M x 1280 float32 is 5 GB; pynndescent makes one more)."""
    for start in range(0, len(vectors), BLOCK_ROWS):
        block = vectors[start: start + BLOCK_ROWS]
        block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return vectors


def exact_knn(unit: np.ndarray, k: int, queries: np.ndarray | None = None,
              exclude_self: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Row indices and cosine distances of the k nearest rows of `unit` for each query (unit vectors)."""
    queries = unit if queries is None else queries
    k = min(k, len(unit) - (1 if exclude_self else 0))
    indices = np.empty((len(queries), k), dtype=np.int64)
    distances = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), BLOCK_ROWS):
        block = 1.0 - queries[start: start + BLOCK_ROWS] @ unit.T
        if exclude_self:
            rows = np.arange(len(block))
            block[rows, start + rows] = np.inf
        part = np.argpartition(block, k - 1, axis=1)[:, :k]
        part_d = np.take_along_axis(block, part, axis=1)
        order = np.lexsort((part, part_d), axis=1)  # by distance, then index: deterministic ties
        indices[start: start + len(block)] = np.take_along_axis(part, order, axis=1)
        distances[start: start + len(block)] = np.take_along_axis(part_d, order, axis=1)
    return indices, distances


def approximate_knn(unit: np.ndarray, k: int, seed: int, candidates: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """pynndescent candidates (`candidates` per point, by default k plus a few chosen by size, searched on
    the raw unit vectors), re-ranked exactly, so the distances returned are exact and only recall depends
    on the approximation.

    Searching a PCA-reduced copy instead was both slower (the PCA) and worse: at 100k x 768 recall@10
    fell from 0.997 to 0.87 with 128 components, since within-cluster order lives in the minor ones.
    """
    from pynndescent import NNDescent

    cache_library_kernels()
    extra, tried = nndescent_settings(len(unit))
    candidates = min(candidates or k + extra, len(unit) - 1)
    index = NNDescent(unit, metric="cosine", n_neighbors=candidates + 1, random_state=seed, low_memory=True,
                      max_candidates=tried, verbose=False)
    proposals, _ = index.neighbor_graph
    indices = np.empty((len(unit), k), dtype=np.int64)
    distances = np.empty((len(unit), k), dtype=np.float32)
    block = max(1, 2**27 // (proposals.shape[1] * unit.shape[1] * 4))  # ~128 MB of gathered vectors
    for start in range(0, len(unit), block):
        cand = proposals[start: start + block]
        rows = np.arange(start, start + len(cand))
        exact = 1.0 - np.einsum("nd,nkd->nk", unit[rows], unit[np.maximum(cand, 0)])
        exact[(cand < 0) | (cand == rows[:, None])] = np.inf
        order = np.argsort(exact, axis=1, kind="stable")[:, :k]
        indices[rows] = np.take_along_axis(cand, order, axis=1)
        distances[rows] = np.take_along_axis(exact, order, axis=1)
    return indices, distances


def inputs_hash(lake: Lake, run_id: str, layer: str, pooling: str, step: int, params: dict,
                chunks: frozenset[int] | None = None) -> str:
    """Digest of the committed vector shards (name and size; only `chunks` when given) and the parameters."""
    committed = {chunk_name(c) for c in (chunks if chunks is not None else lake.committed_chunks(run_id))}
    shards = []
    for path in shard_paths(lake, run_id, layer, pooling):
        name = path.rsplit("/", 1)[1]
        if name in committed:
            shards.append((name, lake.fs.get_file_info(path).size))
    payload = json.dumps({"shards": shards, "step": step, "params": params}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def graph_path(lake: Lake, run_id: str, layer: str, pooling: str, step: int, digest: str) -> tuple[str, ...]:
    return graph_parts(run_id, layer, pooling, step, digest)


def build_graph(lake: Lake | str, run_id: str, layer: str, pooling: str = "mean", step: int | None = None,
                k: int = GRAPH_K, seed: int = 0, chunks: frozenset[int] | None = None) -> NeighbourGraph:
    """Load the persisted graph if its inputs are unchanged, else compute and persist it (of the run's
    committed chunks, or of exactly `chunks`)."""
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    step = resolve_step(lake, run_id, layer, pooling, step)
    params = {"k": k, "metric": "cosine", "exact_limit": EXACT_LIMIT, "seed": seed, "nndescent": NND_SETTINGS}
    digest = inputs_hash(lake, run_id, layer, pooling, step, params, chunks)
    parts = graph_path(lake, run_id, layer, pooling, step, digest)
    if parts[-1] in lake.shard_names(*parts[:-1]):
        return read_graph(lake, parts, digest, step)
    ids, vectors = load_matrix(lake, run_id, layer, pooling, step, chunks=chunks)  # only when it must be built
    unit = normalise_in_place(vectors)
    rows, distances = exact_knn(unit, k) if len(unit) <= EXACT_LIMIT else approximate_knn(unit, k, seed)
    neighbour_ids = ids[rows]
    k_used = neighbour_ids.shape[1]
    table = pa.table({
        "run_id": [run_id] * len(ids),
        "layer": [layer] * len(ids),
        "step": np.full(len(ids), step, dtype=np.int16),
        "pooling": [pooling] * len(ids),
        "sample_id": ids,
        "neighbour_ids": pa.FixedSizeListArray.from_arrays(pa.array(neighbour_ids.reshape(-1)), k_used),
        "distances": pa.FixedSizeListArray.from_arrays(pa.array(distances.reshape(-1), pa.float32()), k_used),
    }, schema=indexes_schema(k_used))
    # Small row groups: a lookup by sample_id then reads one group, not the whole graph.
    lake.write_parquet(table, *parts, row_group_size=GRAPH_ROW_GROUP)
    return NeighbourGraph(ids, neighbour_ids, distances, digest, step)


def read_graph(lake: Lake, parts: tuple[str, ...], digest: str, step: int) -> NeighbourGraph:
    table = pq.read_table(lake.path(*parts), filesystem=lake.fs, columns=["sample_id", "neighbour_ids", "distances"])
    k = table.schema.field("neighbour_ids").type.list_size
    n = table.num_rows
    neighbours = table.column("neighbour_ids").combine_chunks().flatten().to_numpy().reshape(n, k)
    distances = table.column("distances").combine_chunks().flatten().to_numpy().reshape(n, k)
    return NeighbourGraph(table.column("sample_id").to_numpy(), neighbours, distances, digest, step)


def resolve_step(lake: Lake, run_id: str, layer: str, pooling: str, step: int | None) -> int:
    return step if step is not None else captured_steps(lake, run_id, layer, pooling)[-1]


def captured_steps(lake: Lake | str, run_id: str, layer: str, pooling: str = "mean") -> list[int]:
    """The sampling steps a run captured for a layer (every chunk holds the same), in order."""
    import pyarrow.dataset as ds

    lake = lake if isinstance(lake, Lake) else Lake(lake)
    paths = shard_paths(lake, run_id, layer, pooling)
    if not paths:
        raise MissingLayerError(f"no vectors for run {run_id}, layer {layer}, pooling {pooling}; "
                                "see the `captured` view for what exists")
    steps = ds.dataset(paths[:1], format="parquet", filesystem=lake.fs).to_table(columns=["step"]).column("step")
    return sorted({int(s) for s in steps.to_pylist()})


def neighbours_of_vector(lake: Lake | str, run_id: str, layer: str, vector: np.ndarray, k: int = 10,
                         pooling: str = "mean", step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest stored samples of a vector that is not in the lake: (sample ids, distances)."""
    ids, vectors = load_matrix(lake, run_id, layer, pooling, step)
    query = normalise(np.asarray(vector, dtype=np.float32).reshape(1, -1))
    if query.shape[1] != vectors.shape[1]:
        raise ValueError(f"vector has {query.shape[1]} values; layer {layer} has {vectors.shape[1]}")
    rows, distances = exact_knn(normalise(vectors), k, queries=query, exclude_self=False)
    return ids[rows[0]], distances[0]

