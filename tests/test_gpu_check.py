"""`make gpu-check` runs here with tiny models on the CPU: the same code paths, figures in the output."""

from __future__ import annotations

import json

import pytest
import torch

from ingest.gpu_check import main


def test_gpu_check_measures_generator_and_ingest(tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert main(["--device", "cpu", "--tiny", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [r["model"] for r in results] == ["imagenet-64 tiny", "sdxl-1step tiny"]
    assert [(r["batch"], r["samples"], r["stored_samples"]) for r in results] == [(8, 32, 32), (2, 8, 8)]
    for r in results:
        assert r["bare_images_per_s"] > 0 and r["ingest_images_per_s"] > 0
    printed = capsys.readouterr().out.splitlines()
    for r, line in zip(results, printed):  # what the user reads is the figures measured
        assert f"generator {r['bare_images_per_s']:8.1f} img/s" in line
        assert f"ratio {r['ingest_images_per_s'] / r['bare_images_per_s']:.2f}" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_check_without_cuda_says_so(capsys):
    assert main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
