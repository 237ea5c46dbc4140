"""Measure the shipped digits models: `python -m ingest.digits_report [--n 1000] [--grid digits.png]`.

Generates `n` samples per model (balanced labels, fixed seed), prints the model card's quality figures
and the generation time, and optionally saves a grid of samples (one row per class) as a PNG.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from ingest.digits import NUM_CLASSES, quality
from ingest.models.presets import get_spec, load_denoiser
from ingest.samplers import sample, to_uint8

MODELS = ("digits-dmd2", "digits-edm")


def generate_balanced(model: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(images in [-1, 1], labels, seconds spent sampling) for `n` samples, labels 0..9 in turn."""
    spec = get_spec(model)
    denoiser = load_denoiser(spec)
    labels = torch.arange(n) % NUM_CLASSES
    noise = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    images = sample(denoiser, noise, F.one_hot(labels, NUM_CLASSES).float(), spec.sampler)
    return images.numpy(), labels.numpy(), time.perf_counter() - start


def save_grid(images: np.ndarray, labels: np.ndarray, path: str, per_class: int = 16, scale: int = 4,
              gap: int = 1) -> None:
    """One row per class, `per_class` samples each, enlarged `scale` times, with a dark gap between digits."""
    from PIL import Image

    pixels = to_uint8(torch.from_numpy(images))[..., 0].numpy()
    cell = 8 + gap
    grid = np.full((NUM_CLASSES * cell + gap, per_class * cell + gap), 40, dtype=np.uint8)
    for c in range(NUM_CLASSES):
        for i, digit in enumerate(pixels[labels == c][:per_class]):
            grid[gap + c * cell: gap + c * cell + 8, gap + i * cell: gap + i * cell + 8] = digit
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.digits_report", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--grid", help="save a PNG grid of each model's samples, named GRID with the model name added")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    report = {}
    for model in MODELS:
        images, labels, seconds = generate_balanced(model, args.n, args.seed)
        report[model] = quality(images, labels) | {"seconds": round(seconds, 2)}
        if args.grid:
            stem, _, ext = args.grid.rpartition(".")
            save_grid(images, labels, f"{stem}-{model}.{ext}")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
