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
    for r in results:
        assert r["bare_images_per_s"] > 0 and r["ingest_images_per_s"] > 0
        assert abs(r["ratio"] - r["ingest_images_per_s"] / r["bare_images_per_s"]) < 1e-9
    assert "ratio" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_check_without_cuda_says_so(capsys):
    assert main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
