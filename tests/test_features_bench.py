"""The feature-extraction benchmark, as a CPU smoke run with tiny encoders: every case reports both rates and
their ratio, and a GPU request without CUDA is one line and exit 2."""

from __future__ import annotations

import json

import torch

from ingest.features_bench import main


def test_every_case_reports_encoder_and_extraction_rates(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--tiny", "--device", "cpu", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [r["extractor"] for r in results] == ["digits", "clip", "dinov2"]
    for r in results:
        assert r["encoder_images_per_s"] > 0 and r["extract_features_images_per_s"] > 0
        assert abs(r["ratio"] - r["extract_features_images_per_s"] / r["encoder_images_per_s"]) < 0.01
    assert results[0]["images"] == 1797 and results[0]["dim"] == 64
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_cuda_without_a_gpu_and_unknown_cases_are_one_line(capsys):
    assert main(["--cases", "nope"]) == 2
    if not torch.cuda.is_available():
        assert main(["--device", "cuda"]) == 2
    assert capsys.readouterr().err.count("\n") == (1 if torch.cuda.is_available() else 2)
