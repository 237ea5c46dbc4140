"""2-D layouts of one layer's vectors: optional standardisation and PCA, then seeded UMAP; Procrustes
alignment between layers; and the neighbour audit (how much of each point's raw-space neighbourhood
survives in 2-D).

Large layers are laid out by fitting UMAP on a seeded sample of `fit_sample` points and placing the
rest by inverse-distance k-NN interpolation among the fitted points (in the PCA space), which keeps a
1M-point layer within minutes on a small machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from store.numba_cache import cache_library_kernels


@dataclasses.dataclass(frozen=True)
class LayoutParams:
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "cosine"
    pca: int | None = 50  # reduce wider layers to this many components first; None: never
    standardize: bool = False
    seed: int = 0
    fit_sample: int = 50_000

    def digest(self, extra: dict | None = None) -> str:
        payload = json.dumps(dataclasses.asdict(self) | (extra or {}), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def preprocess(vectors: np.ndarray, params: LayoutParams) -> np.ndarray:
    """Standardise (optional) and PCA-reduce layers wider than `params.pca` (seeded, fit on a sample)."""
    data = np.asarray(vectors, dtype=np.float32)  # no copy of an already float32 matrix
    if params.standardize:
        data = (data - data.mean(0)) / np.maximum(data.std(0), 1e-6)
    if params.pca and data.shape[1] > params.pca and len(data) > params.pca:
        from sklearn.decomposition import PCA

        rng = np.random.default_rng(params.seed)
        sample = data if len(data) <= 100_000 else data[rng.choice(len(data), 100_000, replace=False)]
        pca = PCA(n_components=params.pca, random_state=params.seed, svd_solver="randomized").fit(sample)
        data = pca.transform(data).astype(np.float32)
    return data


def umap_backend() -> str:
    """`cuml` (RAPIDS GPU UMAP) when it is installed and a CUDA device is visible, else `umap-learn`;
    DMD2_LENS_UMAP=umap-learn forces the CPU implementation. Part of a layout's identity."""
    import importlib.util
    import os

    if os.environ.get("DMD2_LENS_UMAP", "") == "umap-learn" or importlib.util.find_spec("cuml") is None:
        return "umap-learn"
    import torch

    return "cuml" if torch.cuda.is_available() else "umap-learn"


def cuml_fit(data: np.ndarray, params: LayoutParams, n_neighbors: int, init: np.ndarray | None) -> np.ndarray:
    """The same layout with RAPIDS cuML on the GPU (its own k-NN search; no precomputed graph)."""
    from cuml.manifold import UMAP

    reducer = UMAP(n_neighbors=n_neighbors, min_dist=params.min_dist, metric=params.metric,
                   random_state=params.seed, n_components=2, init="spectral" if init is None else "random")
    return np.asarray(reducer.fit_transform(data), dtype=np.float32)


def umap_fit(data: np.ndarray, params: LayoutParams, knn: tuple[np.ndarray, np.ndarray] | None = None,
             init: np.ndarray | None = None) -> np.ndarray:
    """Seeded UMAP of `data`; `knn` (row indices, distances; self excluded) skips UMAP's own search;
    `init` starts from given coordinates (e.g. the previous layer's layout) instead of a spectral one."""
    n_neighbors = min(params.n_neighbors, len(data) - 1)
    if umap_backend() == "cuml":
        return cuml_fit(data, params, n_neighbors, init)
    import umap

    cache_library_kernels()
    kwargs = {}
    if knn is not None and knn[0].shape[1] >= n_neighbors - 1:
        rows = np.arange(len(data))[:, None]
        indices = np.hstack([rows, knn[0][:, : n_neighbors - 1]])
        distances = np.hstack([np.zeros((len(data), 1), np.float32), knn[1][:, : n_neighbors - 1]])
        kwargs["precomputed_knn"] = (indices, distances, None)
    if init is not None:
        centred = init - init.mean(0)
        kwargs["init"] = (10 * centred / max(np.abs(centred).max(), 1e-12)).astype(np.float64)
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=params.min_dist, metric=params.metric,
                        random_state=params.seed, n_components=2, **kwargs)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", precomputed-knn notes
        return reducer.fit_transform(data).astype(np.float32)


EXACT_PLACEMENT_LIMIT = 2e9  # fitted x placed pairs above which placement searches with pynndescent


def interpolate(fitted_data: np.ndarray, fitted_xy: np.ndarray, rest: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Place `rest` at the inverse-distance-weighted mean of its k nearest fitted points (cosine)."""
    from store.neighbours import exact_knn, normalise

    fitted_unit, rest_unit = normalise(fitted_data), normalise(rest)
    if len(fitted_unit) * len(rest_unit) <= EXACT_PLACEMENT_LIMIT:
        rows, distances = exact_knn(fitted_unit, k, queries=rest_unit, exclude_self=False)
    else:
        rows, distances = approximate_nearest_fitted(fitted_unit, rest_unit, k, seed)
    return weighted_position(fitted_xy, rows, distances)


def approximate_nearest_fitted(fitted_unit: np.ndarray, rest_unit: np.ndarray, k: int,
                               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest fitted points of each of the rest (unit vectors, cosine) from a pynndescent index of the
    fitted points: (rows, distances), each (len(rest), k)."""
    from pynndescent import NNDescent

    cache_library_kernels()
    index = NNDescent(fitted_unit, metric="cosine", n_neighbors=max(2 * k, 30), random_state=seed, verbose=False)
    return index.query(rest_unit, k=k)


def weighted_position(xy: np.ndarray, rows: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """The inverse-distance-weighted mean of each query's neighbours' positions (rows index `xy`)."""
    weights = 1.0 / np.maximum(distances, 1e-6)
    weights /= weights.sum(1, keepdims=True)
    return np.einsum("nk,nkd->nd", weights, xy[rows]).astype(np.float32)


def layout(vectors: np.ndarray, params: LayoutParams, knn: tuple[np.ndarray, np.ndarray] | None = None,
           init: np.ndarray | None = None) -> np.ndarray:
    """(n, 2) coordinates for the rows of `vectors`, optionally starting from `init` (n, 2)."""
    data = preprocess(vectors, params)
    if len(data) <= params.fit_sample:
        return umap_fit(data, params, knn, init)
    rng = np.random.default_rng(params.seed)
    fitted = np.sort(rng.choice(len(data), params.fit_sample, replace=False))
    rest = np.setdiff1d(np.arange(len(data)), fitted)
    xy = np.empty((len(data), 2), dtype=np.float32)
    xy[fitted] = umap_fit(data[fitted], params, init=None if init is None else init[fitted])
    xy[rest] = interpolate(data[fitted], xy[fitted], data[rest], params.n_neighbors, params.seed)
    return xy


def procrustes_fit(reference: np.ndarray, moving: np.ndarray):
    """The rotation (or reflection), uniform scale and shift taking `moving` onto `reference` (same rows),
    as a function applicable to any points in `moving`'s coordinates."""
    ref_mean, mov_mean = reference.mean(0), moving.mean(0)
    ref, mov = reference - ref_mean, moving - mov_mean
    u, s, vt = np.linalg.svd(mov.T @ ref)
    rotation = u @ vt
    scale = s.sum() / max((mov**2).sum(), 1e-12)
    return lambda xy: (xy - mov_mean) @ rotation * scale + ref_mean


def procrustes_align(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """`moving` rotated (or reflected), uniformly scaled and shifted onto `reference` (same rows)."""
    return procrustes_fit(reference, moving)(moving).astype(np.float32)


def mean_displacement(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between the same points of two layouts, in units of `a`'s RMS radius."""
    radius = np.sqrt(((a - a.mean(0)) ** 2).sum(1).mean())
    return float(np.linalg.norm(a - b, axis=1).mean() / max(radius, 1e-12))


def neighbour_overlap(raw_neighbours: np.ndarray, xy: np.ndarray, k: int = 15) -> np.ndarray:
    """Per point: share of its k raw-space neighbours (row indices) that are among its k nearest in 2-D."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, raw_neighbours.shape[1], len(xy) - 1)
    _, planar = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy)
    planar = planar[:, 1:]
    raw = raw_neighbours[:, :k]
    hits = (raw[:, :, None] == planar[:, None, :]).any(2).sum(1)
    return (hits / k).astype(np.float32)
