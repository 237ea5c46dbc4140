"""The benchmark script runs end to end (at toy sizes; the figures themselves come from `make bench`)."""

from __future__ import annotations

import json

from ingest.bench import main, smooth_images


def test_quick_bench_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["overhead"]["ratio"] > 0.5
    assert results["writer"]["samples_per_s"] > 0 and results["writer"]["bytes_per_sample"] > 3000
    formats = {r["format"]: r for r in results["vector_formats"]}
    assert len(formats) == 4
    full = formats["fixed-size list, float32, zstd (full)"]["bytes_per_vector"]
    half = formats["fixed-size list, fp16-rounded float32, zstd (default)"]["bytes_per_vector"]
    assert half < 0.7 * full  # rounding to float16 precision really saves space


def test_synthetic_images_compress_like_photos():
    from ingest.writer import encode_png

    images = smooth_images(8)
    sizes = [len(encode_png(img.numpy())) for img in images]
    assert images.shape == (8, 64, 64, 3)
    assert 4000 < sum(sizes) / len(sizes) < 12288  # between flat colour and incompressible noise
