"""Throughput of reference-feature extraction (`python -m ingest features`), side by side with the bare
encoder on the same images, in one run:

- digits: the shipped digits feature network on scikit-learn's 1,797 real digits (CPU; part of `make bench`);
- clip / dinov2: CLIP ViT-L/14's vision tower and DINOv2-base at their real sizes with random weights (no
  download), on random 256 x 256 images stored as a run (`make gpu-check`; `--tiny` runs the same code with
  tiny encoders on the CPU).

For each: images/s of the encoder alone (images decoded and preprocessed beforehand, one batch after
another) and of `extract_features` (read PNGs from the lake, decode, preprocess, encode, write shards), and
their ratio.

    python -m ingest.features_bench [--cases digits,clip,dinov2] [--device cpu|cuda] [--tiny] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from ingest.extractors import Extractor, resolve_extractor
from ingest.features import extract_features
from ingest.real_images import ingest_folder, ingest_real_digits
from store.lake import Lake

# (hidden, layers, heads, intermediate, patch, image) of the real models; tiny ones for --tiny
REAL_SIZES = {"clip": (1024, 24, 16, 4096, 14, 224), "dinov2": (768, 12, 12, 3072, 14, 224)}
TINY_SIZES = {"clip": (32, 2, 2, 37, 8, 32), "dinov2": (32, 2, 2, 37, 8, 32)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_rate(extractor: Extractor, images: list[bytes], batch: int) -> float:
    """Images/s of the encoder alone on preprocessed batches (after one warm-up batch)."""
    batches = [extractor.preprocess(images[i:i + batch]) for i in range(0, len(images), batch)]
    with torch.inference_mode():
        extractor(batches[0])
        sync(extractor.device)
        started = time.perf_counter()
        for chunk in batches:
            extractor(chunk)
        sync(extractor.device)
    return len(images) / (time.perf_counter() - started)


def encoder_folder(family: str, sizes: tuple[int, ...], folder: Path) -> Path:
    """A randomly initialised vision encoder of `family` at `sizes`, saved as a hub repo holds it."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model

    hidden, layers, heads, intermediate, patch, image = sizes
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=intermediate, patch_size=patch, image_size=image)
    torch.manual_seed(0)
    if family == "clip":
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**common, projection_dim=768 if hidden > 64 else 16))
    else:
        model = Dinov2Model(Dinov2Config(**common))
    model.save_pretrained(folder)
    return folder


def random_image_run(lake: Path, images: Path, n: int) -> list[bytes]:
    """`n` random 256 x 256 RGB images stored as run `bench-images`; returns their PNG bytes."""
    rng = np.random.default_rng(0)
    (images / "noise").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(images / "noise" / f"{i:05d}.png")
    ingest_folder(lake, images, "bench-images", progress=False)
    return [(images / "noise" / f"{i:05d}.png").read_bytes() for i in range(n)]


def measure(lake: Path, run_id: str, extractor: Extractor, images: list[bytes], batch: int) -> dict:
    bare = bare_rate(extractor, images, batch)
    result = extract_features(lake, run_id, extractor, batch=batch, progress=False)
    rate = result.samples / result.seconds
    return {"extractor": extractor.name, "dim": extractor.dim, "images": len(images), "batch": batch,
            "device": str(extractor.device), "encoder_images_per_s": round(bare, 1),
            "extract_features_images_per_s": round(rate, 1), "ratio": round(rate / bare, 3)}


def digits_case(workdir: Path, device: str, tiny: bool) -> dict:
    lake = workdir / "digits-lake"
    ingest_real_digits(lake, "real-digits", progress=False)
    samples = Lake(lake).shard_names("samples", "real-digits")
    images = [png for name in samples for png in
              pq.read_table(Lake(lake).path("samples", "real-digits", name), columns=["image_png"])
              .column("image_png").to_pylist()]
    return measure(lake, "real-digits", resolve_extractor("digits", device), images, batch=256)


def encoder_case(family: str, workdir: Path, device: str, tiny: bool) -> dict:
    n, batch = (16, 8) if tiny else (1024, 64)
    folder = encoder_folder(family, (TINY_SIZES if tiny else REAL_SIZES)[family], workdir / family)
    lake = workdir / f"{family}-lake"
    images = random_image_run(lake, workdir / f"{family}-images", n)
    return measure(lake, "bench-images", resolve_extractor(str(folder), device, name=family), images, batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.features_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="digits,clip,dinov2", help="comma-separated: digits, clip, dinov2")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--tiny", action="store_true", help="tiny clip/dinov2 (a CPU smoke run; figures not meaningful)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in ("digits", "clip", "dinov2")]
    if unknown:
        print(f"error: unknown case {unknown[0]!r}; choose from digits, clip, dinov2", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; run this on a GPU machine (or --device cpu --tiny)", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="dmd2-lens-features-bench-") as tmp:
        for case in cases:
            workdir = Path(tmp) / case
            workdir.mkdir()
            result = (digits_case(workdir, args.device, args.tiny) if case == "digits"
                      else encoder_case(case, workdir, args.device, args.tiny))
            print(f"{case:<7} dim {result['dim']:>4}, batch {result['batch']:>3} on {result['device']}: encoder "
                  f"{result['encoder_images_per_s']:9.1f} img/s, extract_features "
                  f"{result['extract_features_images_per_s']:9.1f} img/s, ratio {result['ratio']:.2f}", flush=True)
            results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
