"""store.metrics against hand-computed values on small matrices, and against plain loop-based
re-computations (written here, formula by formula) on data where a wrong formula gives another number."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ortho_group

from store.metrics import (cosine_knn, knn_jaccard, knn_purity, linear_cka, mean_pairwise_distance,
                           near_duplicate_pairs, vendi_score)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 6))


# --- plain re-computations ---------------------------------------------------------------------------

def cosine(u, v) -> float:
    dot = sum(a * b for a, b in zip(u, v))
    return 1.0 - dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def loop_knn(x, k) -> list[list[int]]:
    """Each row's k nearest other rows by cosine distance, ties (equal to 1e-9) by index."""
    return [[j for _, j in sorted((round(cosine(x[i], x[j]), 9), j) for j in range(len(x)) if j != i)[:k]]
            for i in range(len(x))]


def loop_cka(a, b) -> float:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = a a^T, L = b b^T and the centring matrix H."""
    n = len(a)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ (a @ a.T) @ h, h @ (b @ b.T) @ h
    hsic = lambda p, q: sum(p[i, j] * q[j, i] for i in range(n) for j in range(n))  # trace(p q)
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def loop_vendi(x) -> float:
    n = len(x)
    kernel = np.array([[1.0 - cosine(x[i], x[j]) for j in range(n)] for i in range(n)])
    eigenvalues = np.linalg.eigvalsh(kernel / n)
    return math.exp(-sum(e * math.log(e) for e in eigenvalues if e > 1e-12))


# --- knn and Jaccard ---------------------------------------------------------------------------------

def test_cosine_knn_matches_a_loop_with_ties_by_index():
    x = RNG.normal(size=(25, 4))
    x[7] = x[3] * 2.0  # the same direction (scaled exactly): ties between rows 3, 7 and 12
    x[12] = x[3] * 2.0**-30  # a tiny row: cosine ignores scale
    assert cosine_knn(x, 6).tolist() == loop_knn(x, 6)
    assert cosine_knn(x, 2)[3].tolist() == [7, 12] and cosine_knn(x, 2)[7].tolist() == [3, 12]


def test_identical_inputs_give_jaccard_one_and_cka_one():
    assert np.all(knn_jaccard(X, X, k=5) == 1.0)
    assert linear_cka(X, X) == pytest.approx(1.0)


def test_jaccard_matches_a_loop_on_partly_shared_neighbourhoods():
    a = RNG.normal(size=(30, 5))
    b = a + 0.6 * RNG.normal(size=(30, 5))  # neighbourhoods partly kept
    na, nb = loop_knn(a, 4), loop_knn(b, 4)
    expected = [len(set(p) & set(q)) / len(set(p) | set(q)) for p, q in zip(na, nb)]
    got = knn_jaccard(a, b, k=4)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert 0 < np.mean(got) < 1 and len(set(np.round(got, 6))) > 2  # a spread of overlaps, not all 0 or 1
    assert knn_jaccard(a, b).shape == (30,) and np.allclose(knn_jaccard(a, b), knn_jaccard(a, b, k=10))


def test_jaccard_hand_computed():
    # Points on a line: each point's nearest neighbour (k = 1) is the next one over.
    a = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 0.3], [1.0, 0.7]])
    assert knn_jaccard(a, 2.5 * a, k=1).tolist() == [1.0, 1.0, 1.0, 1.0]  # scaling keeps cosine neighbours
    c = np.array([[1.0, 0.0], [1.0, 0.7], [1.0, 0.3], [1.0, 0.1]])  # rows 1 and 3 swapped in space
    assert knn_jaccard(a, c, k=1).tolist() == [0.0, 0.0, 0.0, 0.0]
    # k = 2: row 0 has {1, 2} in a and {3, 2} in c: 1 shared of 3
    assert knn_jaccard(a, c, k=2)[0] == pytest.approx(1 / 3)


def test_paired_metrics_refuse_different_rows():
    with pytest.raises(ValueError, match="paired matrices need the same rows; got 40 and 39"):
        knn_jaccard(X, X[:-1])
    with pytest.raises(ValueError, match="paired matrices need the same rows; got 40 and 39"):
        linear_cka(X, X[:-1])


# --- CKA -----------------------------------------------------------------------------------------------

def test_cka_centres_its_inputs():
    a = RNG.normal(size=(30, 5)) + [3.0, -2.0, 5.0, 0.5, 1.0]  # far from centred
    b = a[:, :3] @ RNG.normal(size=(3, 4)) + 0.5 * RNG.normal(size=(30, 4)) + 7.0
    expected = loop_cka(a, b)
    assert linear_cka(a, b) == pytest.approx(expected, rel=1e-12)
    uncentred = np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))
    assert abs(uncentred - expected) > 0.05  # centring matters on this data
    assert linear_cka(a + 100.0, b - 50.0) == pytest.approx(expected, rel=1e-9)  # shifts do not


def test_cka_with_different_widths_and_integer_input():
    a = RNG.integers(-5, 6, size=(20, 3))
    b = RNG.normal(size=(20, 7)) + a[:, :1]
    assert linear_cka(a, b) == pytest.approx(loop_cka(a.astype(float), b), rel=1e-12)
    assert linear_cka(b, a) == pytest.approx(loop_cka(a.astype(float), b), rel=1e-12)  # symmetric
    assert isinstance(linear_cka(a, b), float)


def test_cka_is_invariant_to_rotation_and_scale():
    rotation = ortho_group.rvs(6, random_state=1)
    assert linear_cka(X, 3.0 * X @ rotation) == pytest.approx(1.0)
    assert linear_cka(X, RNG.normal(size=(40, 6))) < 0.5


def test_cka_hand_computed():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # centred already
    b = np.array([[1.0], [0.0], [-1.0], [0.0]])  # only a's first column
    # a^T a = 2 I, b^T b = [2], b^T a = [2, 0] -> CKA = 4 / (sqrt(8) * 2)
    assert linear_cka(a, b) == pytest.approx(4 / (np.sqrt(8) * 2))
    assert linear_cka(a + 10, b + 3) == pytest.approx(4 / (np.sqrt(8) * 2))


# --- diversity measures ----------------------------------------------------------------------------

def test_mean_pairwise_distance_matches_a_loop():
    x = RNG.normal(size=(12, 4)) + [1.0, 0.5, 0.0, 0.0]
    x[5] *= 1e-4  # a short row counts by its direction
    pairs = [(i, j) for i in range(12) for j in range(12) if i != j]
    expected = sum(cosine(x[i], x[j]) for i, j in pairs) / len(pairs)
    assert mean_pairwise_distance(x) == pytest.approx(expected, rel=1e-12)
    assert mean_pairwise_distance(x[:2]) == pytest.approx(cosine(x[0], x[1]), rel=1e-12)
    assert mean_pairwise_distance(x[:1]) == 0.0 and mean_pairwise_distance(x[:0]) == 0.0


def test_vendi_matches_a_loop():
    x = RNG.normal(size=(15, 4)) + [2.0, 0.0, 0.0, 0.0]
    x[3] *= 1e-5
    assert vendi_score(x) == pytest.approx(loop_vendi(x), rel=1e-10)
    assert 1.5 < vendi_score(x) < 4.0  # neither all alike nor all distinct


def test_diversity_measures_hand_computed():
    basis = np.eye(3)
    assert mean_pairwise_distance(basis) == pytest.approx(1.0)  # orthogonal: cosine distance 1
    assert mean_pairwise_distance(np.ones((4, 3))) == pytest.approx(0.0)
    assert vendi_score(basis) == pytest.approx(3.0)
    assert vendi_score(np.ones((5, 3))) == pytest.approx(1.0)
    two = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # two distinct samples, twice each
    assert vendi_score(two) == pytest.approx(2.0)


def test_purity_matches_a_loop():
    x = RNG.normal(size=(24, 3))
    labels = np.array([0, 1, 2] * 8)
    labels[x[:, 0] > 0.8] = 1  # labels partly follow the space
    neighbours = loop_knn(x, 5)
    expected = [sum(labels[j] == labels[i] for j in neighbours[i]) / 5 for i in range(24)]
    np.testing.assert_allclose(knn_purity(x, labels, k=5), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(knn_purity(x, list(labels)), knn_purity(x, labels, k=10))


def test_purity_and_near_duplicates():
    x = np.array([[1.0, 0.0], [1.0, 0.001], [0.0, 1.0], [0.001, 1.0]])
    labels = np.array([0, 0, 1, 1])
    assert knn_purity(x, labels, k=1).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert knn_purity(x, np.array([0, 1, 0, 1]), k=1).tolist() == [0.0, 0.0, 0.0, 0.0]
    pairs = near_duplicate_pairs(x, threshold=1e-3)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (2, 3)]
    assert near_duplicate_pairs(x, threshold=1e-9) == []


def test_near_duplicates_match_a_loop_closest_first():
    x = RNG.normal(size=(10, 3))
    x[6] = x[2] + 0.01 * RNG.normal(size=3)
    x[9] = x[4] * 3.0  # distance 0
    x[8] = x[2] + 0.03 * RNG.normal(size=3)
    threshold = 0.02
    expected = sorted((cosine(x[i], x[j]), i, j) for i in range(10) for j in range(i + 1, 10)
                      if cosine(x[i], x[j]) <= threshold)
    got = near_duplicate_pairs(x, threshold)
    assert [(i, j) for i, j, _ in got] == [(i, j) for _, i, j in expected] and len(got) >= 3
    np.testing.assert_allclose([d for *_, d in got], [d for d, *_ in expected], atol=1e-12)
    assert all(type(i) is int and type(j) is int and type(d) is float for i, j, d in got)
    default = near_duplicate_pairs(x)
    assert [(i, j) for i, j, _ in default] == [(i, j) for d, i, j in expected if d <= 0.01]
    tied = near_duplicate_pairs(np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]))
    assert [(i, j) for i, j, _ in tied] == [(0, 1), (2, 3)]  # equal distances: by index


def test_cka_computes_in_float64_from_float32_input():
    a = (RNG.normal(size=(50, 6)) + 3.0).astype(np.float32)
    b = (a[:, :4] + RNG.normal(size=(50, 4))).astype(np.float32)
    assert linear_cka(a, b) == pytest.approx(loop_cka(a.astype(np.float64), b.astype(np.float64)), rel=1e-12)
