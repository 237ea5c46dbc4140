"""Comparison and diversity metrics over activation matrices, for paired runs and per-class diagnosis.

- `knn_jaccard`: per sample, |A ∩ B| / |A ∪ B| of its k nearest neighbours in two spaces (same samples);
- `linear_cka`: linear centred kernel alignment of two matrices with the same rows (Kornblith et al.
  2019), invariant to orthogonal transforms and isotropic scaling of either side;
- `mean_pairwise_distance`, `knn_purity`, `near_duplicate_pairs`: diversity and mode-collapse signals;
- `vendi_score`: exp of the entropy of the eigenvalues of K/n for the cosine similarity kernel K
  (Friedman & Dieng 2023): the effective number of distinct samples, 1 for identical ones, n for
  orthogonal ones.
"""

from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_knn(x: np.ndarray, k: int) -> np.ndarray:
    """Row indices of each row's k nearest other rows by cosine distance (exact; ties by index)."""
    unit = _unit(x)
    distances = 1.0 - unit @ unit.T
    np.fill_diagonal(distances, np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(len(x)), distances.shape), distances), axis=1)
    return order[:, :k]


def knn_jaccard(a: np.ndarray, b: np.ndarray, k: int = 10) -> np.ndarray:
    """Per row: Jaccard overlap of its k-NN sets in `a` and in `b` (rows are the same samples)."""
    if len(a) != len(b):
        raise ValueError(f"paired matrices need the same rows; got {len(a)} and {len(b)}")
    na, nb = cosine_knn(a, k), cosine_knn(b, k)
    return np.array([len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in zip(na, nb)])


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA between two representations of the same samples (columns may differ in number)."""
    if len(a) != len(b):
        raise ValueError(f"paired matrices need the same rows; got {len(a)} and {len(b)}")
    a = np.asarray(a, dtype=np.float64) - np.mean(a, axis=0)
    b = np.asarray(b, dtype=np.float64) - np.mean(b, axis=0)
    cross = np.linalg.norm(b.T @ a, "fro") ** 2
    return float(cross / (np.linalg.norm(a.T @ a, "fro") * np.linalg.norm(b.T @ b, "fro")))


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean cosine distance over all distinct pairs of rows."""
    unit = _unit(x)
    n = len(unit)
    if n < 2:
        return 0.0
    similarity_sum = np.square(unit.sum(axis=0)).sum() - n  # sum over i != j of <u_i, u_j>
    return float(1.0 - similarity_sum / (n * (n - 1)))


def knn_purity(x: np.ndarray, labels: np.ndarray, k: int = 10) -> np.ndarray:
    """Per row: the share of its k nearest neighbours that carry its own label."""
    neighbours = cosine_knn(x, k)
    labels = np.asarray(labels)
    return (labels[neighbours] == labels[:, None]).mean(axis=1)


def near_duplicate_pairs(x: np.ndarray, threshold: float = 0.01) -> list[tuple[int, int, float]]:
    """Pairs (i < j) whose cosine distance is at most `threshold`, closest first."""
    unit = _unit(x)
    distances = 1.0 - unit @ unit.T
    i, j = np.nonzero(np.triu(distances <= threshold, k=1))
    pairs = sorted(zip(i.tolist(), j.tolist(), distances[i, j].tolist()), key=lambda p: (p[2], p[0], p[1]))
    return [(a, b, float(d)) for a, b, d in pairs]


def vendi_score(x: np.ndarray) -> float:
    """exp(entropy of the eigenvalues of K / n), K the cosine similarity kernel of the rows."""
    unit = _unit(x)
    eigenvalues = np.linalg.eigvalsh(unit @ unit.T / len(unit))
    eigenvalues = eigenvalues[eigenvalues > 1e-12]
    return float(np.exp(-np.sum(eigenvalues * np.log(eigenvalues))))
