"""ingest.digits_report: the grid of samples (one row per class) and balanced generation with the
shipped one-step student."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ingest.digits import NUM_CLASSES, quality
from ingest.digits_report import generate_balanced, save_grid

BACKGROUND = 40  # the grid's dark gap / empty-cell value


def images_of(pixels: np.ndarray) -> np.ndarray:
    """uint8 (n, 8, 8) digits as the [-1, 1] NCHW floats the report takes; half a level above each value so
    that the conversion back to uint8 cannot land on a rounding boundary."""
    return ((pixels.astype(np.float32) + 0.5) / 127.5 - 1)[:, None]


def tile(grid: np.ndarray, row: int, col: int, scale: int, gap: int) -> np.ndarray:
    """The 8x8 cell at (row, col) of a saved grid, checked to be made of uniform scale x scale blocks."""
    cell = 8 + gap
    y, x = (gap + row * cell) * scale, (gap + col * cell) * scale
    block = grid[y: y + 8 * scale, x: x + 8 * scale]
    small = block[::scale, ::scale]
    assert np.array_equal(np.kron(small, np.ones((scale, scale), np.uint8)), block)
    return small


@pytest.mark.parametrize("per_class,scale,gap", [(16, 4, 1), (3, 2, 2), (5, 1, 1)])
def test_save_grid_size_and_tiles(tmp_path, per_class, scale, gap):
    rng = np.random.default_rng(per_class)
    labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), 4))[:37]  # unsorted; some classes short
    pixels = rng.integers(0, 256, (len(labels), 8, 8), dtype=np.uint8)
    path = tmp_path / "grid.png"
    save_grid(images_of(pixels), labels, str(path), per_class=per_class, scale=scale, gap=gap)

    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == ((per_class * (8 + gap) + gap) * scale, (NUM_CLASSES * (8 + gap) + gap) * scale)
        grid = np.asarray(image.convert("L"))
    for c in range(NUM_CLASSES):
        mine = np.flatnonzero(labels == c)  # this class's samples, in the given order
        for i in range(per_class):
            if i < len(mine):
                assert np.array_equal(tile(grid, c, i, scale, gap), pixels[mine[i]]), (c, i)
            else:
                assert (tile(grid, c, i, scale, gap) == BACKGROUND).all(), (c, i)
    # the gaps (first rows and columns) are the dark background
    assert (grid[: gap * scale] == BACKGROUND).all() and (grid[:, : gap * scale] == BACKGROUND).all()


def test_save_grid_clamps_out_of_range_values(tmp_path):
    labels = np.arange(NUM_CLASSES)
    images = np.full((NUM_CLASSES, 1, 8, 8), 3.0, np.float32)
    images[:, :, :4] = -2.5
    path = tmp_path / "clamped.png"
    save_grid(images, labels, str(path), per_class=1, scale=1, gap=1)
    grid = np.asarray(Image.open(path).convert("L"))
    for c in range(NUM_CLASSES):
        digit = tile(grid, c, 0, 1, 1)
        assert (digit[:4] == 0).all() and (digit[4:] == 255).all()


@pytest.fixture(scope="module")
def generated():
    return generate_balanced("digits-dmd2", 40, seed=5)


def test_generate_balanced(generated):
    images, labels, seconds = generated
    assert images.shape == (40, 1, 8, 8) and images.dtype == np.float32
    assert np.isfinite(images).all() and images.std() > 0.1
    assert np.array_equal(labels, np.arange(40) % NUM_CLASSES)
    assert np.array_equal(np.bincount(labels, minlength=NUM_CLASSES), np.full(NUM_CLASSES, 4))
    assert 0 < seconds < 60
    # the labels condition the samples: an independent classifier reads most of them back
    assert quality(images, labels)["agreement"] >= 0.8


def test_generate_balanced_is_seeded(generated):
    again, _, _ = generate_balanced("digits-dmd2", 40, seed=5)
    other, _, _ = generate_balanced("digits-dmd2", 40, seed=6)
    assert np.array_equal(generated[0], again)
    assert not np.allclose(generated[0], other)
