"""Layout building blocks: Procrustes alignment, displacement, the neighbour audit, PCA, sampling."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from store.layouts import (LayoutParams, interpolate, layout, mean_displacement, neighbour_overlap, preprocess,
                           procrustes_align)


def test_procrustes_recovers_a_rotated_scaled_shifted_copy():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(200, 2)).astype(np.float32)
    angle = 1.1
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (reference @ rotation * 3.5 + [10, -4]) * [1, -1]  # with a reflection too
    aligned = procrustes_align(reference, moved)
    np.testing.assert_allclose(aligned, reference, atol=1e-4)
    assert mean_displacement(reference, aligned) < 1e-4
    assert mean_displacement(reference, moved) > 1


def test_neighbour_overlap_is_one_when_the_map_is_the_space():
    rng = np.random.default_rng(1)
    xy = rng.normal(size=(300, 2)).astype(np.float32)
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    raw = np.argsort(d, axis=1)[:, :15]
    assert neighbour_overlap(raw, xy).min() == 1.0
    shuffled = raw[rng.permutation(300)]
    assert neighbour_overlap(shuffled, xy).mean() < 0.2


def test_pca_only_for_wide_layers():
    rng = np.random.default_rng(2)
    wide, narrow = rng.normal(size=(400, 128)), rng.normal(size=(400, 32))
    assert preprocess(wide, LayoutParams(pca=50)).shape == (400, 50)
    assert preprocess(narrow, LayoutParams(pca=50)).shape == (400, 32)
    assert preprocess(wide, LayoutParams(pca=None)).shape == (400, 128)
    standardized = preprocess(narrow * 7 + 3, LayoutParams(pca=None, standardize=True))
    np.testing.assert_allclose(standardized.std(0), 1, atol=1e-3)


def test_interpolation_places_copies_on_their_originals():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(50, 8)).astype(np.float32)
    xy = rng.normal(size=(50, 2)).astype(np.float32)
    placed = interpolate(data, xy, data[:5] * 2, k=5)  # same directions: cosine distance 0
    np.testing.assert_allclose(placed, xy[:5], atol=1e-3)


def test_sampled_fit_places_every_point_and_is_seeded():
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(4, 16)) * 5
    labels = rng.integers(0, 4, 600)
    data = (centres[labels] + rng.normal(size=(600, 16))).astype(np.float32)
    params = LayoutParams(fit_sample=300, pca=None, seed=7)
    xy = layout(data, params)
    assert xy.shape == (600, 2) and np.isfinite(xy).all()
    np.testing.assert_array_equal(xy, layout(data, params))
    # clusters stay apart: each point's nearest map neighbour has its label
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).mean() > 0.95


@pytest.mark.skipif(importlib.util.find_spec("cuml") is not None, reason="RAPIDS cuML is installed here")
def test_umap_backend_is_umap_learn_without_cuml(monkeypatch):
    from store.layouts import umap_backend

    assert umap_backend() == "umap-learn"
    monkeypatch.setenv("DMD2_LENS_UMAP", "umap-learn")
    assert umap_backend() == "umap-learn"
