"""The digits data, the quality figures, and the shipped embedded models meeting the quality bar."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ingest.digits import digit_classifier, load_digits_dataset, quality, to_pixel_scale
from ingest.digits_report import generate_balanced
from ingest.models.presets import EMBEDDED_WEIGHTS


def test_dataset_is_scaled_to_unit_range():
    images, labels = load_digits_dataset()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert images.min() == -1.0 and images.max() == 1.0
    assert sorted(np.unique(labels)) == list(range(10))
    np.testing.assert_allclose(to_pixel_scale(images[:5]).max(), 16.0)


def test_quality_of_real_and_collapsed_digits():
    images, labels = load_digits_dataset()
    real = quality(images, labels)
    assert real["agreement"] > 0.97 and real["diversity_ratio"] == pytest.approx(1.0)
    first_of_class = {c: images[labels == c][0] for c in range(10)}
    collapsed = np.stack([first_of_class[c] for c in labels])
    assert quality(collapsed, labels)["diversity_ratio"] == 0.0
    noise = np.random.default_rng(0).uniform(-1, 1, images.shape).astype(np.float32)
    assert quality(noise, labels)["agreement"] < 0.3


@pytest.fixture(scope="module")
def shipped_quality() -> dict:
    report = {}
    for model in ("digits-dmd2", "digits-edm"):
        images, labels, _ = generate_balanced(model, 1000, seed=12345)
        report[model] = quality(images, labels)
    return report


def test_one_step_student_meets_the_quality_bar(shipped_quality):
    student = shipped_quality["digits-dmd2"]
    assert student["samples"] == 1000
    assert student["agreement"] >= 0.90
    assert student["diversity_ratio"] >= 0.60


def test_teacher_is_a_good_multi_step_model(shipped_quality):
    assert shipped_quality["digits-edm"]["agreement"] >= 0.90
    assert shipped_quality["digits-edm"]["diversity_ratio"] >= 0.60


def test_model_card_reports_the_measured_figures(shipped_quality):
    summary = json.loads((EMBEDDED_WEIGHTS / "training_summary.json").read_text())
    card = (EMBEDDED_WEIGHTS / "MODEL_CARD.md").read_text()
    for model, figures in shipped_quality.items():
        recorded = summary["quality"][model]
        assert recorded["agreement"] == pytest.approx(figures["agreement"], abs=0.01)
        assert recorded["diversity_ratio"] == pytest.approx(figures["diversity_ratio"], abs=0.01)
        assert f"| {model} | {recorded['agreement']:.3f} | {recorded['diversity_ratio']:.3f} |" in card
    assert summary["total_minutes"] <= 60


def test_shipped_files_are_small_fp16_safetensors():
    from safetensors import safe_open

    for model in ("digits-dmd2", "digits-edm"):
        path = EMBEDDED_WEIGHTS / f"{model}.safetensors"
        assert path.stat().st_size <= 5_000_000
        with safe_open(str(path), framework="pt") as handle:
            assert {handle.get_tensor(k).dtype.itemsize for k in handle.keys()} == {2}


def test_classifier_is_fitted_once():
    assert digit_classifier() is digit_classifier()
