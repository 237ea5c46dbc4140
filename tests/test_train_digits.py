"""The training script end to end at toy size: files written, loadable, and reproducible from a seed."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ingest.checkpoints import load_checkpoint
from ingest.models.edm import EDMConfig, EDMPrecond
from ingest.train_digits import DIGITS_CONFIG, dmd_sigmas, main

TOY = ["--teacher-iters", "4", "--pairs", "64", "--warmup-iters", "2", "--dmd-iters", "2", "--fake-updates", "2",
       "--batch", "16", "--eval-samples", "40", "--threads", "1"]


def train(out: Path, seed: int) -> None:
    assert main([*TOY, "--seed", str(seed), "--out", str(out)]) == 0


def test_toy_training_writes_loadable_models_and_a_card(tmp_path: Path):
    train(tmp_path, seed=3)
    for name in ("digits-edm", "digits-dmd2"):
        config = json.loads((tmp_path / f"{name}.json").read_text())
        sampler = config.pop("sampler")
        assert EDMConfig.from_dict(config) == DIGITS_CONFIG
        assert sampler["kind"] == ("one-step" if name == "digits-dmd2" else "heun")
        load_checkpoint(EDMPrecond(DIGITS_CONFIG), tmp_path / f"{name}.safetensors")
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    assert set(summary["quality"]) == {"digits-edm", "digits-dmd2", "student after warm-up only"}
    assert summary["training"]["seed"] == 3
    assert "| digits-dmd2 |" in (tmp_path / "MODEL_CARD.md").read_text()


def test_same_seed_same_weights(tmp_path: Path):
    train(tmp_path / "a", seed=5)
    train(tmp_path / "b", seed=5)
    train(tmp_path / "c", seed=6)
    same = (tmp_path / "a" / "digits-dmd2.safetensors").read_bytes() == (tmp_path / "b" / "digits-dmd2.safetensors").read_bytes()
    differ = (tmp_path / "a" / "digits-dmd2.safetensors").read_bytes() != (tmp_path / "c" / "digits-dmd2.safetensors").read_bytes()
    assert same and differ


def test_dmd_noise_levels_skip_the_extremes():
    levels = dmd_sigmas()
    assert len(levels) == 960
    assert 0.002 < levels.min() < levels.max() < 80
    assert torch.all(levels[:-1] > levels[1:])
