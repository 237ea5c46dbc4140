"""Ingest benchmarks (`make bench`): overhead of capture + storage, writer throughput, bytes per
sample, and vector-loading speed per storage format. Comparisons are measured side by side in one
process and reported as ratios; absolute figures depend on the (shared, noisy) machine.

    python -m ingest.bench [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- 1. overhead ratio: ingest vs the bare generator ----------------------------------------------


def overhead_ratio(n: int, batch: int, repeats: int, workdir: Path) -> dict:
    """Wall time of `ingest` / wall time of the bare generator, same plan and batches, alternated."""
    from ingest.generator import EDMGenerator
    from ingest.models.presets import get_spec, load_denoiser
    from ingest.plan import class_plan
    from ingest.run import IngestConfig, run_ingest

    spec = get_spec("digits-dmd2")
    generator = EDMGenerator(spec, load_denoiser(spec), torch.device("cpu"))
    plan = class_plan(10, seed=0, n=n)

    def bare() -> None:
        for start in range(0, n, batch):
            generator.generate(plan.take(slice(start, start + batch)))

    def ingest(i: int) -> None:
        run_ingest(IngestConfig(lake=str(workdir / f"overhead-{i}"), n=n, seed=0, batch=batch, layers="all",
                                poolings=("mean",), progress=False))

    bare()  # warm up both paths once
    ingest(-1)
    bare_times, ingest_times = [], []
    for i in range(repeats):
        bare_times.append(timed(bare))
        ingest_times.append(timed(lambda: ingest(i)))
    b, g = statistics.median(bare_times), statistics.median(ingest_times)
    return {"samples": n, "batch": batch, "layers": "all 16, mean", "bare_s": round(b, 3), "ingest_s": round(g, 3),
            "ratio": round(g / b, 3), "target": "<= 1.15"}


# --- 2. writer throughput and bytes per sample ----------------------------------------------------


def smooth_images(n: int, side: int = 64, seed: int = 0) -> torch.Tensor:
    """Photo-like test images: upsampled random low-frequency fields plus mild pixel noise (uint8 NHWC).

    Pure noise would not compress at all and flatter colours would compress too well; real 64x64
    ImageNet samples take about 8-10 KB as PNG, and these take about the same.
    """
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (n, 3, side // 8, side // 8)).astype(np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
    fine += torch.from_numpy(rng.normal(0, 6, fine.shape).astype(np.float32))
    return fine.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def writer_throughput(n: int, batch: int, workdir: Path, workers: int) -> dict:
    """Samples/s of the shard writer alone, fed synthetic ImageNet-64-sized batches."""
    from store.lake import Lake
    from ingest.plan import class_plan
    from ingest.writer import Batch, RunInfo, ShardWriter

    images = smooth_images(batch)
    rng = np.random.default_rng(1)
    layers = ["enc.8x8_block2", "dec.8x8_in0", "dec.8x8_in1", "dec.8x8_block0"]
    vectors = {(layer, 0, "mean"): torch.from_numpy(rng.gamma(2.0, 0.5, (batch, 768)).astype(np.float32))
               for layer in layers}
    plan = class_plan(1000, seed=0, n=n)
    lake_dir = workdir / f"writer-{workers}"
    names = tuple(f"class {i}" for i in range(1000))
    writer = ShardWriter(Lake(lake_dir), RunInfo("bench", names, (80.0,)), workers=workers)
    chunk_size = 4096
    start = time.perf_counter()
    for chunk_start in range(0, n, chunk_size):
        chunk = chunk_start // chunk_size
        for s in range(chunk_start, min(n, chunk_start + chunk_size), batch):
            rows = plan.take(slice(s, s + batch))
            writer.submit(Batch(chunk, rows, images[: len(rows)], {k: v[: len(rows)] for k, v in vectors.items()}))
        writer.end_chunk(chunk)
    writer.close()
    seconds = time.perf_counter() - start
    samples_bytes = sum(p.stat().st_size for p in (lake_dir / "samples").rglob("*.parquet"))
    activation_bytes = sum(p.stat().st_size for p in (lake_dir / "activations").rglob("*.parquet"))
    return {
        "samples": n,
        "workers": workers,
        "samples_per_s": round(n / seconds),
        "target": ">= 5000",
        "bytes_per_sample": round((samples_bytes + activation_bytes) / n),
        "image_bytes_per_sample": round(samples_bytes / n),
        "activation_bytes_per_sample": round(activation_bytes / n),
        "bytes_target": "<= 20000",
    }


# --- 3. loading vectors: formats side by side -----------------------------------------------------


def vector_formats(rows: int, dim: int, workdir: Path) -> list[dict]:
    """Read speed into a numpy matrix and size on disk, per storage format, same data."""
    from ingest.writer import round_mantissa
    from store.lake import chunk_name
    from store.vectors import load_matrix

    rng = np.random.default_rng(2)
    centres = rng.normal(0, 1, (64, dim)).astype(np.float32)
    data = (centres[rng.integers(0, 64, rows)] + rng.normal(0, 0.3, (rows, dim)).astype(np.float32))
    data *= rng.gamma(2.0, 0.5, (1, dim)).astype(np.float32)
    shard_rows = 65536
    results = []
    formats = {
        "fixed-size list, float32, zstd (full)": (23, "zstd", True),
        "fixed-size list, fp16-rounded float32, zstd (default)": (10, "zstd", True),
        "variable list, float32, zstd": (23, "zstd", False),
        "fixed-size list, float32, uncompressed": (23, "none", True),
    }
    for label, (bits, codec, fixed) in formats.items():
        folder = workdir / "formats" / label.split(" (")[0].replace(",", "").replace(" ", "_")
        lake_dir = folder / "lake"
        values = round_mantissa(data, bits)
        for chunk, start in enumerate(range(0, rows, shard_rows)):
            part = values[start:start + shard_rows]
            flat = pa.array(part.reshape(-1))
            vector = (pa.FixedSizeListArray.from_arrays(flat, dim) if fixed else
                      pa.ListArray.from_arrays(pa.array(np.arange(0, part.size + 1, dim, dtype=np.int32)), flat))
            table = pa.table({"run_id": ["bench"] * len(part), "sample_id": np.arange(start, start + len(part)),
                              "layer": ["l"] * len(part), "step": np.zeros(len(part), np.int16),
                              "noise_level": np.zeros(len(part), np.float32), "pooling": ["mean"] * len(part),
                              "vector": vector})
            out = lake_dir / "activations" / "bench" / "l" / "mean"
            out.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, out / chunk_name(chunk), compression=codec)
        size = sum(p.stat().st_size for p in lake_dir.rglob("*.parquet"))
        best = float("inf")
        for _ in range(3):
            if fixed:
                seconds = timed(lambda: load_matrix(str(lake_dir), "bench", "l", "mean", step=0, committed_only=False))
            else:
                seconds = timed(lambda: pq.read_table(lake_dir / "activations", columns=["vector"])
                                .column("vector").combine_chunks().flatten().to_numpy().reshape(rows, dim))
            best = min(best, seconds)
        results.append({"format": label, "rows": rows, "dim": dim, "bytes_per_vector": round(size / rows),
                        "read_MB_per_s": round(rows * dim * 4 / best / 1e6), "target": ">= 500"})
        shutil.rmtree(folder)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, figures not meaningful)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    quick = args.quick
    workdir = Path(tempfile.mkdtemp(prefix="dmd2-bench-"))
    try:
        results = {
            "overhead": overhead_ratio(n=256 if quick else 8192, batch=128, repeats=1 if quick else 3, workdir=workdir),
            "writer": writer_throughput(n=512 if quick else 32768, batch=256, workdir=workdir, workers=2),
            "writer_3_threads": writer_throughput(n=512 if quick else 32768, batch=256, workdir=workdir, workers=3),
            "vector_formats": vector_formats(rows=4096 if quick else 1_000_000, dim=768, workdir=workdir),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
