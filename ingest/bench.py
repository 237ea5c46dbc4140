"""Ingest benchmarks (`make bench`): overhead of capture + storage, writer throughput, bytes per
sample, and vector-loading speed per storage format. Comparisons are measured side by side in one
process and reported as ratios; absolute figures depend on the (shared, noisy) machine.

    python -m ingest.bench [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- 1. overhead, split: bare generator / + capture hooks / full ingest ---------------------------


def overhead_split(n: int, batch: int, repeats: int, workdir: Path) -> dict:
    """Wall times of the same plan and batches three ways, alternated within each repeat (medians):
    the bare generator; the generator with capture hooks pooling all 16 layers (vectors kept in memory,
    nothing stored); and `ingest` itself (capture plus encoding and writing the shards)."""
    from ingest.capture import ActivationCapture
    from ingest.generator import EDMGenerator
    from ingest.models.presets import get_spec, load_denoiser
    from ingest.plan import class_plan
    from ingest.run import IngestConfig, run_ingest

    spec = get_spec("digits-dmd2")
    generator = EDMGenerator(spec, load_denoiser(spec), torch.device("cpu"))
    plan = class_plan(10, seed=0, n=n)
    batches = [plan.take(slice(start, start + batch)) for start in range(0, n, batch)]

    def bare() -> None:
        for rows in batches:
            generator.generate(rows)

    def captured() -> None:
        with ActivationCapture(generator.layers, ["mean"]) as capture:
            for rows in batches:
                generator.generate(rows, capture)
                capture.collect()

    def ingest(i: int) -> None:
        run_ingest(IngestConfig(lake=str(workdir / f"overhead-{i}"), n=n, seed=0, batch=batch, layers="all",
                                poolings=("mean",), progress=False))

    bare(), captured(), ingest(-1)  # warm up every path once
    times: dict[str, list[float]] = {"bare": [], "capture": [], "ingest": []}
    for i in range(repeats):
        times["bare"].append(timed(bare))
        times["capture"].append(timed(captured))
        times["ingest"].append(timed(lambda: ingest(i)))
    bare_s, capture_s, ingest_s = (statistics.median(times[k]) for k in ("bare", "capture", "ingest"))
    capture_cpu = cpu_seconds(captured)
    storage_cpu = storage_cpu_seconds(generator, batches, workdir)
    cores = os.cpu_count() or 1
    return {"samples": n, "batch": batch, "layers": "all 16, mean", "bare_s": round(bare_s, 3),
            "capture_s": round(capture_s, 3), "ingest_s": round(ingest_s, 3),
            "capture_over_bare": round(capture_s / bare_s, 3),
            "storage_over_capture": round(ingest_s / capture_s, 3),
            "ingest_over_bare": round(ingest_s / bare_s, 3),
            "target": "ingest_over_bare <= 1.15, or storage_over_capture <= 1.05",
            "capture_cpu_per_wall": round(capture_cpu / capture_s, 2),
            "storage_cpu_s": round(storage_cpu, 3),
            # With every core busy generating, storage's CPU work can only be added: ingest cannot take
            # less than (capture's + storage's CPU time) / cores.
            "storage_floor_over_capture": round(max(1.0, (capture_cpu + storage_cpu) / (cores * capture_s)), 3)}


def cpu_seconds(work) -> float:
    """CPU time (all threads of this process) that `work()` takes."""
    start = time.process_time()
    work()
    return time.process_time() - start


def storage_cpu_seconds(generator, batches: list, workdir: Path) -> float:
    """CPU time of ingest's storage alone: the shard writer fed the same batches, captured beforehand."""
    from ingest.capture import ActivationCapture
    from ingest.writer import Batch, RunInfo, ShardWriter
    from store.lake import Lake

    chunk_size = 1024  # ingest's default
    per_chunk = max(1, chunk_size // len(batches[0]))
    with ActivationCapture(generator.layers, ["mean"]) as capture:
        done = [(rows, generator.generate(rows, capture), capture.collect()) for rows in batches]

    def store() -> None:
        writer = ShardWriter(Lake(workdir / "storage-alone"), RunInfo("bench", generator.spec.class_names,
                                                                      tuple(generator.step_levels)))
        for i, (rows, images, vectors) in enumerate(done):
            writer.submit(Batch(i // per_chunk, rows, images, vectors))
            if (i + 1) % per_chunk == 0 or i + 1 == len(done):
                writer.end_chunk(i // per_chunk)
        writer.close()

    return cpu_seconds(store)


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


def format_1_table(part: np.ndarray, start: int) -> pa.Table:
    """Activations as written before vector formats were recorded: nullable lists, dictionary + zstd."""
    n, dim = part.shape
    return pa.table({"run_id": ["bench"] * n, "sample_id": np.arange(start, start + n), "layer": ["l"] * n,
                     "step": np.zeros(n, np.int16), "noise_level": np.zeros(n, np.float32), "pooling": ["mean"] * n,
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), dim)})


def vector_formats(rows: int, dim: int, workdir: Path) -> list[dict]:
    """Read speed of `store.vectors.load_matrix` into a numpy matrix and size on disk, per vector format, same
    data: the two formats ingest writes now (store.lake.VECTOR_FORMATS) and format 1, which older lakes hold."""
    from ingest.writer import VECTOR_PRECISIONS, round_mantissa
    from store.lake import ACTIVATIONS_WRITE_OPTIONS, Lake, VECTOR_FORMATS, activations_parts, activations_table
    from store.vectors import load_matrix

    rng = np.random.default_rng(2)
    centres = rng.normal(0, 1, (64, dim)).astype(np.float32)
    data = (centres[rng.integers(0, 64, rows)] + rng.normal(0, 0.3, (rows, dim)).astype(np.float32))
    data *= rng.gamma(2.0, 0.5, (1, dim)).astype(np.float32)
    shard_rows = 65536
    labels = {"half": f"half (default): {VECTOR_FORMATS['half']}", "full": f"full: {VECTOR_FORMATS['full']}",
              "format 1": "format 1 (lakes written before): float32 rounded to float16 precision, dictionary + zstd"}
    results = []
    for name, label in labels.items():
        lake = Lake(workdir / "formats" / name.replace(" ", "-"))
        values = round_mantissa(data, VECTOR_PRECISIONS["full" if name == "full" else "half"])
        for chunk, start in enumerate(range(0, rows, shard_rows)):
            part = values[start:start + shard_rows]
            if name == "format 1":
                lake.write_parquet(format_1_table(part, start), *activations_parts("bench", "l", "mean", chunk))
            else:
                table = activations_table("bench", "l", "mean", np.arange(start, start + len(part)), np.zeros(1),
                                          part[:, None, :], name)
                lake.write_parquet(table, *activations_parts("bench", "l", "mean", chunk), **ACTIVATIONS_WRITE_OPTIONS)
        size = sum(p.stat().st_size for p in lake.local_root().rglob("*.parquet"))
        _, loaded = load_matrix(lake, "bench", "l", "mean", step=0, committed_only=False)
        if not np.array_equal(loaded, values):  # a fast read of the wrong numbers is no result
            raise RuntimeError(f"vector format {name!r} read back other values than were written")
        del loaded
        seconds = min(timed(lambda: load_matrix(lake, "bench", "l", "mean", step=0, committed_only=False))
                      for _ in range(5))
        results.append({"format": label, "rows": rows, "dim": dim, "bytes_per_vector": round(size / rows),
                        "read_MB_per_s": round(rows * dim * 4 / seconds / 1e6), "target": ">= 1000 (default)"})
        shutil.rmtree(lake.local_root())
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
            "overhead": overhead_split(n=256 if quick else 8192, batch=128, repeats=1 if quick else 3, workdir=workdir),
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
