"""The handwritten digits the embedded models learn, and the quality figures they are judged by.

scikit-learn ships 1,797 labelled 8x8 digits with pixel values 0..16; the generators work in [-1, 1].
Quality of generated digits, as reported in the model card:

- agreement: how often a logistic-regression classifier trained on the real digits predicts the
  label the generator was conditioned on;
- diversity ratio: the mean pairwise L2 distance within a class, averaged over classes, divided by the
  same figure for the real digits (1.0 = as varied as the data; a collapsed generator tends to 0).
"""

from __future__ import annotations

import functools

import numpy as np

NUM_CLASSES = 10
CLASS_NAMES = [str(i) for i in range(NUM_CLASSES)]
PIXEL_MAX = 16.0


def load_digits_dataset() -> tuple[np.ndarray, np.ndarray]:
    """Real digits as float32 (N, 1, 8, 8) in [-1, 1] and int64 labels (N,)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images.astype(np.float32) / PIXEL_MAX) * 2 - 1
    return images[:, None, :, :], data.target.astype(np.int64)


def to_pixel_scale(images: np.ndarray) -> np.ndarray:
    """[-1, 1] images (N, 1, 8, 8) to flat 0..16 feature vectors (N, 64), as the classifier expects."""
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    return np.clip((flat + 1) / 2 * PIXEL_MAX, 0, PIXEL_MAX)


@functools.lru_cache(maxsize=1)
def digit_classifier():
    """Logistic regression fitted on all real digits (deterministic)."""
    from sklearn.linear_model import LogisticRegression

    images, labels = load_digits_dataset()
    classifier = LogisticRegression(max_iter=5000)
    classifier.fit(to_pixel_scale(images), labels)
    return classifier


def mean_pairwise_distance(vectors: np.ndarray) -> float:
    """Mean L2 distance over all unordered pairs of rows."""
    n = len(vectors)
    if n < 2:
        return 0.0
    squared = (vectors**2).sum(1)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2 * vectors @ vectors.T, 0.0)
    return float(np.sqrt(d2)[np.triu_indices(n, k=1)].mean())


def within_class_diversity(images: np.ndarray, labels: np.ndarray) -> float:
    """Mean pairwise L2 within each class (in 0..16 pixel units), averaged over the classes present."""
    flat = to_pixel_scale(images)
    per_class = [mean_pairwise_distance(flat[labels == c]) for c in np.unique(labels)]
    return float(np.mean(per_class))


@functools.lru_cache(maxsize=1)
def real_diversity() -> float:
    images, labels = load_digits_dataset()
    return within_class_diversity(images, labels)


def quality(images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Agreement with the conditioning labels and diversity ratio of generated digits in [-1, 1]."""
    labels = np.asarray(labels)
    predicted = digit_classifier().predict(to_pixel_scale(images))
    diversity = within_class_diversity(images, labels)
    return {
        "agreement": float((predicted == labels).mean()),
        "diversity": diversity,
        "diversity_ratio": diversity / real_diversity(),
        "samples": int(len(labels)),
    }
