"""Layout building blocks: Procrustes alignment, displacement, the neighbour audit, PCA, sampling."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from store.layouts import (LayoutParams, interpolate, layout, mean_displacement, neighbour_overlap, preprocess,
                           procrustes_align, umap_fit, weighted_position)


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


# --- against plain re-computations ---------------------------------------------------------------------

def loop_knn(fitted: np.ndarray, queries: np.ndarray, k: int):
    """(rows, cosine distances) of each query's k nearest fitted rows, one pair at a time."""
    rows, distances = [], []
    for q in queries.astype(np.float64):
        d = [1.0 - float(v @ q) / (np.linalg.norm(v) * np.linalg.norm(q)) for v in fitted.astype(np.float64)]
        nearest = sorted(range(len(d)), key=lambda j: (d[j], j))[:k]
        rows.append(nearest)
        distances.append([d[j] for j in nearest])
    return np.array(rows), np.array(distances)


def loop_weighted(xy: np.ndarray, rows: np.ndarray, distances: np.ndarray) -> np.ndarray:
    out = []
    for r, d in zip(rows, distances):
        w = [1.0 / max(float(v), 1e-6) for v in d]
        out.append([sum(wi * xy[j, c] for wi, j in zip(w, r)) / sum(w) for c in (0, 1)])
    return np.array(out)


def test_interpolation_matches_a_loop():
    rng = np.random.default_rng(5)
    fitted = rng.normal(size=(60, 5)) + 0.5
    xy = rng.uniform(-10, 10, size=(60, 2))
    rest = rng.normal(size=(25, 5)) + 0.5
    rest[3] = fitted[8] * 4.0  # distance 0: the weight is capped at 1e6
    rows, distances = loop_knn(fitted, rest, 6)
    expected = loop_weighted(xy, rows, distances)
    placed = interpolate(fitted.astype(np.float32), xy.astype(np.float32), rest.astype(np.float32), k=6)
    assert placed.dtype == np.float32 and placed.shape == (25, 2)
    np.testing.assert_allclose(placed, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(placed[3], xy[8], atol=1e-3)


def test_interpolation_beyond_the_exact_limit_searches_with_nndescent(monkeypatch):
    """Above EXACT_PLACEMENT_LIMIT fitted x placed pairs, the neighbours come from pynndescent (with the given
    seed and at least 30 candidates); on clustered data most of them are the exact ones, so most positions
    equal the plain loop's."""
    import pynndescent

    import store.layouts

    rng = np.random.default_rng(7)
    centres = rng.normal(size=(12, 8)) * 5
    fitted = centres[rng.integers(0, 12, 400)] + rng.normal(size=(400, 8))
    rest = centres[rng.integers(0, 12, 50)] + rng.normal(size=(50, 8))
    xy = rng.uniform(-10, 10, size=(400, 2))
    monkeypatch.setattr(store.layouts, "EXACT_PLACEMENT_LIMIT", 400 * 50 - 1)
    seen = []
    real = pynndescent.NNDescent
    monkeypatch.setattr(pynndescent, "NNDescent", lambda data, **kw: seen.append((len(data), kw)) or real(data, **kw))
    placed = interpolate(fitted.astype(np.float32), xy.astype(np.float32), rest.astype(np.float32), k=6, seed=3)
    assert [(n, kw["metric"], kw["n_neighbors"], kw["random_state"]) for n, kw in seen] == [(400, "cosine", 30, 3)]
    rows, distances = loop_knn(fitted, rest, 6)
    same = np.isclose(placed, loop_weighted(xy, rows, distances), rtol=1e-3, atol=1e-3).all(axis=1)
    assert placed.shape == (50, 2) and same.mean() >= 0.9
    monkeypatch.setattr(store.layouts, "EXACT_PLACEMENT_LIMIT", 400 * 50)  # at the limit: exact, no index
    interpolate(fitted.astype(np.float32), xy.astype(np.float32), rest.astype(np.float32), k=6)
    assert len(seen) == 1


def test_weighted_position_matches_a_loop():
    rng = np.random.default_rng(6)
    xy = rng.normal(size=(30, 2))
    rows = rng.integers(0, 30, size=(12, 4))
    distances = rng.uniform(0, 0.5, size=(12, 4))
    distances[0, 1] = 0.0
    distances[1, :] = 1e-9  # all capped: the plain mean
    got = weighted_position(xy, rows, distances)
    np.testing.assert_allclose(got, loop_weighted(xy, rows, distances), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], xy[rows[1]].mean(0), rtol=1e-5)
    assert got.dtype == np.float32


def test_procrustes_matches_scipy_on_noisy_data():
    from scipy.linalg import orthogonal_procrustes

    rng = np.random.default_rng(8)
    reference = rng.normal(size=(80, 2)) * [3.0, 1.0] + [5.0, -2.0]
    moving = (reference @ np.array([[0.6, -0.8], [0.8, 0.6]])) * 0.3 + [1.0, 4.0] + 0.2 * rng.normal(size=(80, 2))
    ref_c, mov_c = reference - reference.mean(0), moving - moving.mean(0)
    rotation, _ = orthogonal_procrustes(mov_c, ref_c)
    rotated = mov_c @ rotation
    scale = (rotated * ref_c).sum() / (rotated**2).sum()  # least-squares scale
    expected = rotated * scale + reference.mean(0)
    aligned = procrustes_align(reference, moving)
    assert aligned.dtype == np.float32
    np.testing.assert_allclose(aligned, expected, atol=1e-4)
    from store.layouts import procrustes_fit

    other = rng.normal(size=(5, 2))
    np.testing.assert_allclose(procrustes_fit(reference, moving)(other),
                               (other - moving.mean(0)) @ rotation * scale + reference.mean(0), atol=1e-9)
    same = procrustes_align(reference, np.full((80, 2), 3.0))  # a collapsed layout: no division by zero
    assert np.isfinite(same).all() and np.allclose(same, reference.mean(0), atol=1e-4)
    tiny = procrustes_align(reference, reference * 1e-3 - 2.0)  # a small layout is scaled up, not clamped
    np.testing.assert_allclose(tiny, reference, atol=1e-3)


def test_mean_displacement_and_neighbour_overlap_match_loops():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(50, 2)) * [2.0, 0.5] + [3.0, 3.0]
    b = a + rng.normal(size=(50, 2)) * 0.3
    radius = np.sqrt(np.mean([((p - a.mean(0)) ** 2).sum() for p in a]))
    expected = np.mean([np.linalg.norm(p - q) for p, q in zip(a, b)]) / radius
    assert mean_displacement(a, b) == pytest.approx(expected, rel=1e-12)
    assert mean_displacement(np.zeros((3, 2)), np.ones((3, 2))) == pytest.approx(np.sqrt(2) / 1e-12)

    xy = rng.normal(size=(60, 2))
    raw = np.array([rng.permutation(60)[:12] for _ in range(60)])
    for k in (5, 12, 15):
        kk = min(k, 12)
        planar = [set(sorted(range(60), key=lambda j: (np.linalg.norm(xy[j] - xy[i]), j))[1:kk + 1]) for i in range(60)]
        expected = [len(set(raw[i, :kk]) & planar[i]) / kk for i in range(60)]
        got = neighbour_overlap(raw, xy, k=k)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-6)
    tiny = neighbour_overlap(raw[:4, :10] % 4, xy[:4])  # k capped at n - 1
    assert tiny.shape == (4,) and np.all(tiny <= 1)


def test_preprocess_standardises_and_projects_on_the_top_components():
    rng = np.random.default_rng(10)
    scales = np.concatenate([np.linspace(10, 3, 8), np.full(56, 0.5)])  # a clear gap after 8 components
    data = rng.normal(size=(300, 64)) * scales + 40.0
    standard = preprocess(data, LayoutParams(pca=None, standardize=True))
    expected = [[(data[i, j] - data[:, j].mean()) / data[:, j].std() for j in range(64)] for i in range(300)]
    np.testing.assert_allclose(standard, expected, atol=1e-4)
    assert standard.dtype == np.float32
    flat = preprocess(np.ones((5, 3)) * 7, LayoutParams(pca=None, standardize=True))
    assert np.allclose(flat, 0)  # a constant column: no division by zero
    reduced = preprocess(data, LayoutParams(pca=8))
    centred = data - data.mean(0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    top = eigenvectors[:, ::-1][:, :8]
    expected = centred @ top
    for c in range(8):  # each component equal to the exact one up to its sign
        sign = np.sign(reduced[:, c] @ expected[:, c])
        np.testing.assert_allclose(reduced[:, c] * sign, expected[:, c], rtol=0, atol=0.02 * np.abs(expected[:, c]).max())
    assert reduced.dtype == np.float32
    assert preprocess(data[:8], LayoutParams(pca=8)).shape == (8, 64)  # too few rows: left as it is
    assert preprocess(data[:, :8], LayoutParams(pca=8)).shape == (300, 8)


def test_layout_fits_a_sample_and_places_the_rest(monkeypatch):
    import store.layouts

    fits = []

    def fake_fit(data, params, knn=None, init=None):  # deterministic stand-in for UMAP
        fits.append((len(data), knn, None if init is None else init.copy()))
        return (data[:, :2] * 10).astype(np.float32)

    monkeypatch.setattr(store.layouts, "umap_fit", fake_fit)
    rng = np.random.default_rng(11)
    data = rng.normal(size=(120, 6)).astype(np.float32)
    params = LayoutParams(fit_sample=50, pca=None, seed=4, n_neighbors=7)
    init = rng.normal(size=(120, 2)).astype(np.float32)
    xy = layout(data, params, init=init)
    fitted = np.sort(np.random.default_rng(4).choice(120, 50, replace=False))
    rest = np.setdiff1d(np.arange(120), fitted)
    np.testing.assert_array_equal(xy[fitted], data[fitted, :2] * 10)
    rows, distances = loop_knn(data[fitted], data[rest], 7)
    np.testing.assert_allclose(xy[rest], loop_weighted(data[fitted, :2] * 10, rows, distances), rtol=1e-4, atol=1e-4)
    assert fits[0][0] == 50 and fits[0][1] is None and np.array_equal(fits[0][2], init[fitted])
    knn = (np.zeros((50, 3), int), np.zeros((50, 3), np.float32))
    small = layout(data[:50], params, knn=knn)
    assert fits[-1][0] == 50 and fits[-1][1] is knn and fits[-1][2] is None  # all fitted: the knn is used
    np.testing.assert_array_equal(small, data[:50, :2] * 10)
    layout(data[:51], params)
    assert fits[-1][0] == 50  # one more than the sample: sampled


def test_umap_fit_passes_the_graph_and_the_start(monkeypatch):
    import umap

    import store.layouts

    calls = []

    class FakeUMAP:
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def fit_transform(self, data):
            return np.asarray(data, dtype=np.float64)[:, :2]

    monkeypatch.setattr(umap, "UMAP", FakeUMAP)
    monkeypatch.setattr(store.layouts, "umap_backend", lambda: "umap-learn")
    rng = np.random.default_rng(12)
    data = rng.normal(size=(20, 4))
    rows = np.array([[(i + j) % 20 for j in range(1, 9)] for i in range(20)])
    distances = np.arange(160, dtype=np.float32).reshape(20, 8) / 100
    params = LayoutParams(n_neighbors=6, min_dist=0.3, metric="euclidean", seed=9)
    init = rng.normal(size=(20, 2)) * 4 + 2
    out = umap_fit(data, params, knn=(rows, distances), init=init)
    assert out.dtype == np.float32 and np.array_equal(out, data[:, :2].astype(np.float32))
    kwargs = calls[-1]
    assert {k: kwargs[k] for k in ("n_neighbors", "min_dist", "metric", "random_state", "n_components")} == \
        {"n_neighbors": 6, "min_dist": 0.3, "metric": "euclidean", "random_state": 9, "n_components": 2}
    indices, dists, forest = kwargs["precomputed_knn"]
    assert forest is None
    np.testing.assert_array_equal(indices, np.hstack([np.arange(20)[:, None], rows[:, :5]]))  # self first
    np.testing.assert_array_equal(dists, np.hstack([np.zeros((20, 1)), distances[:, :5]]))
    centred = init - init.mean(0)
    np.testing.assert_allclose(kwargs["init"], 10 * centred / np.abs(centred).max())
    assert kwargs["init"].dtype == np.float64 and np.abs(kwargs["init"]).max() == pytest.approx(10)
    umap_fit(data, params, knn=(rows[:, :4], distances[:, :4]))  # too few neighbours: UMAP searches itself
    assert "precomputed_knn" not in calls[-1] and "init" not in calls[-1]
    umap_fit(data, params, knn=(rows[:, :5], distances[:, :5]))  # n_neighbors - 1 is enough
    assert "precomputed_knn" in calls[-1]
    umap_fit(data[:4], params)
    assert calls[-1]["n_neighbors"] == 3  # capped at n - 1


def test_cuml_backend_when_installed_with_a_gpu(monkeypatch):
    import sys
    import types

    import torch

    from store.layouts import cuml_fit, umap_backend

    calls = []

    class FakeCumlUMAP:
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def fit_transform(self, data):
            return np.asarray(data)[:, :2]

    module = types.ModuleType("cuml")
    manifold = types.ModuleType("cuml.manifold")
    manifold.UMAP = FakeCumlUMAP
    module.manifold = manifold
    monkeypatch.setitem(sys.modules, "cuml", module)
    monkeypatch.setitem(sys.modules, "cuml.manifold", manifold)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "cuml" else None)
    monkeypatch.delenv("DMD2_LENS_UMAP", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert umap_backend() == "cuml"
    monkeypatch.setenv("DMD2_LENS_UMAP", "umap-learn")
    assert umap_backend() == "umap-learn"
    monkeypatch.setenv("DMD2_LENS_UMAP", "cuml")
    assert umap_backend() == "cuml"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert umap_backend() == "umap-learn"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    data = np.arange(30, dtype=np.float64).reshape(10, 3)
    params = LayoutParams(n_neighbors=4, min_dist=0.2, metric="cosine", seed=5)
    out = umap_fit(data, params, init=np.zeros((10, 2)))
    assert out.dtype == np.float32 and np.array_equal(out, data[:, :2])
    assert calls[-1] == {"n_neighbors": 4, "min_dist": 0.2, "metric": "cosine", "random_state": 5, "n_components": 2,
                         "init": "random"}
    cuml_fit(data, params, 3, None)
    assert calls[-1]["init"] == "spectral" and calls[-1]["n_neighbors"] == 3


def test_params_digest():
    params = LayoutParams()
    assert params.digest() == LayoutParams().digest() and len(params.digest()) == 16
    assert params.digest() != LayoutParams(seed=1).digest() != params.digest({"inputs": "x"})
    assert params.digest({"inputs": "x"}) == params.digest({"inputs": "x"}) != params.digest({"inputs": "y"})
    import hashlib
    import json

    expected = hashlib.sha256(json.dumps({"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "pca": 50,
                                          "standardize": False, "seed": 0, "fit_sample": 50_000, "inputs": "x"},
                                         sort_keys=True).encode()).hexdigest()[:16]
    assert params.digest({"inputs": "x"}) == expected
