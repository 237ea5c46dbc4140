"""store.metrics against hand-computed values on small matrices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from store.metrics import (knn_jaccard, knn_purity, linear_cka, mean_pairwise_distance, near_duplicate_pairs,
                           vendi_score)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 6))


def test_identical_inputs_give_jaccard_one_and_cka_one():
    assert np.all(knn_jaccard(X, X, k=5) == 1.0)
    assert linear_cka(X, X) == pytest.approx(1.0)


def test_cka_is_invariant_to_rotation_and_scale():
    rotation = ortho_group.rvs(6, random_state=1)
    assert linear_cka(X, 3.0 * X @ rotation) == pytest.approx(1.0)
    assert linear_cka(X, RNG.normal(size=(40, 6))) < 0.5


def test_cka_hand_computed():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # centred already
    b = np.array([[1.0], [0.0], [-1.0], [0.0]])  # only a's first column
    # a^T a = 2 I, b^T b = [2], b^T a = [2, 0] -> CKA = 4 / (sqrt(8) * 2)
    assert linear_cka(a, b) == pytest.approx(4 / (np.sqrt(8) * 2))


def test_jaccard_hand_computed():
    # Points on a line: each point's nearest neighbour (k = 1) is the next one over.
    a = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 0.3], [1.0, 0.7]])
    assert knn_jaccard(a, 2.5 * a, k=1).tolist() == [1.0, 1.0, 1.0, 1.0]  # scaling keeps cosine neighbours
    c = np.array([[1.0, 0.0], [1.0, 0.7], [1.0, 0.3], [1.0, 0.1]])  # rows 1 and 3 swapped in space
    # row 0: a -> {1}, c -> {3}: 0; row 1: a -> {0}, c -> {2}: 0; row 2: a -> {1}, c -> {3}: 0; row 3: a -> {2}, c -> {0}: 0
    assert knn_jaccard(a, c, k=1).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_diversity_measures_hand_computed():
    basis = np.eye(3)
    assert mean_pairwise_distance(basis) == pytest.approx(1.0)  # orthogonal: cosine distance 1
    assert mean_pairwise_distance(np.ones((4, 3))) == pytest.approx(0.0)
    assert vendi_score(basis) == pytest.approx(3.0)
    assert vendi_score(np.ones((5, 3))) == pytest.approx(1.0)
    two = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # two distinct samples, twice each
    assert vendi_score(two) == pytest.approx(2.0)


def test_purity_and_near_duplicates():
    x = np.array([[1.0, 0.0], [1.0, 0.001], [0.0, 1.0], [0.001, 1.0]])
    labels = np.array([0, 0, 1, 1])
    assert knn_purity(x, labels, k=1).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert knn_purity(x, np.array([0, 1, 0, 1]), k=1).tolist() == [0.0, 0.0, 0.0, 0.0]
    pairs = near_duplicate_pairs(x, threshold=1e-3)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (2, 3)]
    assert near_duplicate_pairs(x, threshold=1e-9) == []
