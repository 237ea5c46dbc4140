"""The digits feature network: the shipped file (safetensors, under 1 MB) classifies the real digits' held-out
split with the accuracy its summary records, and training is reproducible from a seed."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ingest.digits import load_digits_dataset
from ingest.extractors import DIGITS_WEIGHTS, DigitsNetConfig, load_digits_net
from ingest.train_digits_features import NAME, accuracy, main, split

SHIPPED = DIGITS_WEIGHTS.parent
ONE_EPOCH = ["--epochs", "1", "--threads", "1", "--quiet"]


def summary(folder: Path = SHIPPED) -> dict:
    return json.loads((folder / f"{NAME}-training.json").read_text())


def test_the_shipped_network_is_small_and_safetensors():
    files = [SHIPPED / f"{NAME}.safetensors", SHIPPED / f"{NAME}.json", SHIPPED / f"{NAME}-training.json"]
    assert sum(f.stat().st_size for f in files) <= 1_000_000
    assert files[0].read_bytes()[8:9] == b"{"  # a safetensors header (length, then JSON), not a pickle
    net = load_digits_net(files[0])
    assert DigitsNetConfig.from_dict(json.loads(files[1].read_text())) == DigitsNetConfig()
    assert summary()["parameters"] == sum(p.numel() for p in net.parameters())
    assert summary()["feature_dim"] == net.head.in_features == 64


def test_the_shipped_network_has_its_recorded_held_out_accuracy():
    (_, _), (images, labels) = split()
    recorded = summary()["held_out_accuracy"]
    measured = accuracy(load_digits_net(DIGITS_WEIGHTS), images, labels)
    # the same figure; one digit of slack for another CPU's float rounding at a near tie
    assert abs(measured - recorded) <= 1 / len(labels) + 1e-9, (measured, recorded)
    assert measured >= 0.97
    assert summary()["split"].startswith("scikit-learn digits; held out: index % 5 == 0 (360 digits)")


def test_split_is_fixed_and_disjoint():
    (train_images, train_labels), (test_images, test_labels) = split()
    assert (len(train_labels), len(test_labels)) == (1437, 360)
    assert set(test_labels.tolist()) == set(range(10))
    images, labels = load_digits_dataset()
    assert torch.equal(test_images, torch.from_numpy(images[::5]))
    assert torch.equal(test_labels, torch.from_numpy(labels[::5]))
    assert torch.equal(train_images[:4], torch.from_numpy(images[[1, 2, 3, 4]]))


def test_same_seed_same_weights(tmp_path):
    for folder, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert main([*ONE_EPOCH, "--seed", str(seed), "--out", str(tmp_path / folder)]) == 0
    weights = {f: (tmp_path / f / f"{NAME}.safetensors").read_bytes() for f in "abc"}
    assert weights["a"] == weights["b"] and weights["a"] != weights["c"]
    written = summary(tmp_path / "a")
    assert written["training"]["seed"] == 3 and written["training"]["epochs"] == 1
    assert written["held_out_accuracy"] == accuracy(load_digits_net(tmp_path / "a" / f"{NAME}.safetensors"),
                                                    *split()[1])
    assert isinstance(load_digits_net(tmp_path / "a" / f"{NAME}.safetensors").features(torch.zeros(1, 1, 8, 8)),
                      torch.Tensor)
