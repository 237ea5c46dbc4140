"""Embed and neighbour benchmarks on synthetic clustered vectors of realistic widths, side by side:

- neighbour graph build time, recall@10 against exact search (1,000 random queries), with faiss's HNSW
  and hnswlib building the same k = 50 graph of all points from the same vectors as reference columns
  (`pip install -e '.[bench]'`; they are never needed at run time);
- query latency of "k nearest neighbours of sample S" from the stored graph through DuckDB (cold, one
  SQL query each) and from the graph held in memory (what a server does), against the exact DuckDB scan
  (`knn_exact`), and the ratio of the DuckDB lookup to the scan;
- layout time (sampled fit + placement), and trustworthiness (k = 15, on 5,000 points) against a full
  umap-learn fit where that is feasible.

    python -m store.bench [--sizes 100000,1000000] [--dims 768,1280] [--no-peers] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from store.lake import SAMPLES_SCHEMA


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 100) -> np.ndarray:
    """Gaussian clusters with uneven sizes and per-dimension scales, like pooled activations."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (clusters, dim)).astype(np.float32)
    weights = rng.dirichlet(np.full(clusters, 0.5))
    labels = rng.choice(clusters, n, p=weights)
    data = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        part = slice(start, start + 100_000)
        data[part] = centres[labels[part]] + rng.normal(0, 0.6, (len(labels[part]), dim)).astype(np.float32)
    data *= rng.gamma(2.0, 0.5, (1, dim)).astype(np.float32)
    return data


def peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_lake(data: np.ndarray, root: Path) -> None:
    """The vectors as one run's activation shards in the default vector format (committed chunks of 65,536)."""
    from store.lake import (ACTIVATIONS_WRITE_OPTIONS, VECTOR_PRECISIONS, Lake, activations_parts, activations_table,
                            round_mantissa, samples_parts)

    lake = Lake(root)
    for chunk, start in enumerate(range(0, len(data), 65536)):
        part = round_mantissa(data[start: start + 65536], VECTOR_PRECISIONS["half"])
        ids = np.arange(start, start + len(part))
        table = activations_table("bench", "l", "mean", ids, np.zeros(1), part[:, None, :], "half")
        lake.write_parquet(table, *activations_parts("bench", "l", "mean", chunk), **ACTIVATIONS_WRITE_OPTIONS)
        columns = {f.name: pa.nulls(len(part), f.type) for f in SAMPLES_SCHEMA}
        columns |= {"run_id": pa.array(["bench"] * len(part)), "sample_id": pa.array(ids)}
        lake.write_parquet(pa.table(columns, schema=SAMPLES_SCHEMA), *samples_parts("bench", chunk))
    (root / "runs" / "bench").mkdir(parents=True, exist_ok=True)


def exact_top10(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Each query's 10 nearest other rows by cosine, exactly (computed before the data is dropped)."""
    from store.neighbours import exact_knn, normalise

    truth, _ = exact_knn(normalise(data), 11, queries=normalise(data[queries]), exclude_self=False)
    return np.array([row[row != q][:10] for row, q in zip(truth, queries)])


def recall_at_10(truth: np.ndarray, neighbours: np.ndarray, queries: np.ndarray) -> float:
    hits = [len(set(truth[i]) & set(neighbours[q, :10])) / 10 for i, q in enumerate(queries)]
    return float(np.mean(hits))


def faiss_hnsw_graph(unit: np.ndarray, k: int) -> np.ndarray:
    """k nearest other points of every point from faiss's HNSW (M 32, efSearch 64), inner product on unit rows."""
    import faiss

    index = faiss.IndexHNSWFlat(unit.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.add(unit)
    index.hnsw.efSearch = 64
    _, found = index.search(unit, k + 1)
    return without_self(found, k)


def hnswlib_graph(unit: np.ndarray, k: int) -> np.ndarray:
    """k nearest other points of every point from hnswlib (M 16, ef_construction 200, ef 64), cosine."""
    import hnswlib

    index = hnswlib.Index(space="cosine", dim=unit.shape[1])
    index.init_index(max_elements=len(unit), M=16, ef_construction=200, random_seed=0)
    index.add_items(unit)
    index.set_ef(64)
    found, _ = index.knn_query(unit, k=k + 1)
    return without_self(found, k)


def without_self(found: np.ndarray, k: int) -> np.ndarray:
    """Each row's first k entries other than the row itself (a search of all points finds each one itself)."""
    rows = np.arange(len(found))[:, None]
    keep = found != rows
    keep[keep.sum(axis=1) > k, -1] = False  # the point was not found: drop the last candidate instead
    return found[keep].reshape(len(found), k).astype(np.int64)


PEERS = {"faiss HNSW (M 32, efSearch 64)": ("faiss", faiss_hnsw_graph),
         "hnswlib (M 16, ef 64)": ("hnswlib", hnswlib_graph)}


def bench_peers(lake: Path, truth: np.ndarray, queries: np.ndarray, k: int) -> list[dict]:
    """The same k-NN graph of all points from each peer library, on the same vectors, in the same run."""
    import importlib.util

    from store.neighbours import normalise_in_place
    from store.vectors import load_matrix

    results = []
    for name, (module, build) in PEERS.items():
        if importlib.util.find_spec(module) is None:
            results.append({"peer": name, "build_s": None, "missing": "pip install -e '.[bench]'"})
            continue
        _, vectors = load_matrix(str(lake), "bench", "l", "mean")
        start = time.perf_counter()
        graph = build(normalise_in_place(vectors), k)
        seconds = time.perf_counter() - start
        results.append({"peer": name, "build_s": round(seconds, 1), "recall_at_10": round(recall_at_10(truth, graph, queries), 4)})
        print(json.dumps({"n": len(graph), **results[-1]}), file=sys.stderr, flush=True)  # a long run shows each as it ends
        del vectors, graph
    return results


def bench_neighbours(n: int, dim: int, workdir: Path, peers: bool = True) -> dict:
    from store.neighbours import GRAPH_K, build_graph
    from store.views import connect

    data = clustered(n, dim)
    lake = workdir / f"lake-{n}-{dim}"
    write_lake(data, lake)
    rng = np.random.default_rng(1)
    queries = rng.choice(n, min(n, 1000), replace=False)
    truth = exact_top10(data, queries)
    del data  # the build loads the vectors from the lake, as `make embed` does; measure that peak alone
    start = time.perf_counter()
    graph = build_graph(str(lake), "bench", "l", "mean")
    build_s = time.perf_counter() - start
    recall = recall_at_10(truth, graph.neighbours, queries)  # sample ids equal row indices here
    print(json.dumps({"n": n, "dim": dim, "ours_build_s": round(build_s, 1), "recall_at_10": round(recall, 4)}),
          file=sys.stderr, flush=True)
    peak_gb = peak_rss_gb()

    memory = []
    for q in queries[:200]:
        t = time.perf_counter()
        graph.of(int(q), 10)
        memory.append(time.perf_counter() - t)
    con = connect(lake)
    lookup = []
    for q in queries[:50]:
        t = time.perf_counter()
        con.sql(f"SELECT neighbour_ids[1:10], distances[1:10] FROM neighbours WHERE sample_id = {int(q)}").fetchall()
        lookup.append(time.perf_counter() - t)
    scans = []
    for q in queries[:3]:
        t = time.perf_counter()
        con.sql(f"SELECT * FROM knn_exact('bench', {int(q)}, 'l', 'mean', 0, 10)").fetchall()
        scans.append(time.perf_counter() - t)
    peer_results = bench_peers(lake, truth, queries, GRAPH_K) if peers else []
    shutil.rmtree(lake)
    median_query, median_scan = statistics.median(lookup), statistics.median(scans)
    median_memory = statistics.median(memory)
    return {"n": n, "dim": dim, "build_s": round(build_s, 1), "recall_at_10": round(recall, 4),
            "peers": peer_results, "peak_rss_gb": round(peak_gb, 1),
            "median_query_ms": round(median_query * 1e3, 2), "median_in_memory_query_ms": round(median_memory * 1e3, 4),
            "exact_duckdb_scan_ms": round(median_scan * 1e3), "speedup": round(median_scan / median_query)}


def bench_layout(n: int, dim: int, full_fit_limit: int) -> dict:
    from sklearn.manifold import trustworthiness

    from store.layouts import LayoutParams, layout, preprocess

    data = clustered(n, dim, seed=2)
    params = LayoutParams()
    start = time.perf_counter()
    xy = layout(data, params)
    layout_s = time.perf_counter() - start
    rng = np.random.default_rng(3)
    probe = rng.choice(n, min(n, 5000), replace=False)
    reduced = preprocess(data, params)
    result = {"n": n, "dim": dim, "fit_sample": min(n, params.fit_sample), "layout_s": round(layout_s, 1),
              "trustworthiness": round(float(trustworthiness(reduced[probe], xy[probe], n_neighbors=15)), 4)}
    if n <= full_fit_limit and n > params.fit_sample:
        full = layout(data, LayoutParams(fit_sample=n))
        result["full_fit_trustworthiness"] = round(float(trustworthiness(reduced[probe], full[probe], n_neighbors=15)), 4)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m store.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dims", default="768,1280")
    parser.add_argument("--full-fit-limit", type=int, default=100_000, help="largest n that also gets a full UMAP fit")
    parser.add_argument("--skip-layouts", action="store_true", help="neighbour figures only")
    parser.add_argument("--no-peers", action="store_true", help="leave out the faiss and hnswlib reference columns")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="dmd2-store-bench-"))
    results: dict[str, list] = {"neighbours": [], "layouts": []}
    try:
        for n in map(int, args.sizes.split(",")):
            for dim in map(int, args.dims.split(",")):
                results["neighbours"].append(bench_neighbours(n, dim, workdir, peers=not args.no_peers))
                print(json.dumps(results["neighbours"][-1]), flush=True)
                if not args.skip_layouts:
                    results["layouts"].append(bench_layout(n, dim, args.full_fit_limit))
                    print(json.dumps(results["layouts"][-1]), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
