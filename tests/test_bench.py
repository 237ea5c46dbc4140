"""The ingest benchmark runs end to end (at toy sizes; the figures themselves come from `make bench`) and its
figures hang together: the split adds up, the storage floor follows from the CPU times, the formats differ."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ingest.bench import main, smooth_images, vector_formats


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert main(["--quick", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_overhead_split_is_consistent(quick_results):
    split = quick_results["overhead"]
    bare, capture, ingest = split["bare_s"], split["capture_s"], split["ingest_s"]
    assert 0 < bare and 0 < capture and 0 < ingest
    # the seconds are reported rounded to 1 ms, the ratios computed before rounding
    assert split["capture_over_bare"] == pytest.approx(capture / bare, rel=0.03)
    assert split["storage_over_capture"] == pytest.approx(ingest / capture, rel=0.03)
    assert split["ingest_over_bare"] == pytest.approx(ingest / bare, rel=0.03)
    # The floor: (capture's CPU time + storage's CPU time) / (cores x capture's wall time), at least 1.
    capture_cpu = split["capture_cpu_per_wall"] * capture
    floor = max(1.0, (capture_cpu + split["storage_cpu_s"]) / ((os.cpu_count() or 1) * capture))
    assert split["storage_cpu_s"] > 0
    assert split["storage_floor_over_capture"] == pytest.approx(floor, abs=0.02)


def test_writer_figures(quick_results):
    for key in ("writer", "writer_3_threads"):
        writer = quick_results[key]
        assert writer["samples_per_s"] > 0
        # PNGs of the photo-like test images (4-12 KB, see below) plus 4 x 768 vectors at ~2 bytes each
        assert 4000 + 4 * 768 < writer["bytes_per_sample"] < 12288 + 4 * 768 * 4
        assert writer["image_bytes_per_sample"] + writer["activation_bytes_per_sample"] == pytest.approx(
            writer["bytes_per_sample"], abs=1)


def test_vector_formats_read_back_and_differ_in_size(tmp_path):
    results = {r["format"].split(":")[0].split(" (")[0]: r for r in vector_formats(rows=4096, dim=64, workdir=tmp_path)}
    assert set(results) == {"half", "full", "format 1"}
    assert all(r["read_MB_per_s"] > 0 and r["rows"] == 4096 for r in results.values())
    # float16 precision keeps 2 of 4 bytes per value: about half the space of full float32
    assert results["half"]["bytes_per_vector"] < 0.65 * results["full"]["bytes_per_vector"]
    assert results["full"]["bytes_per_vector"] > 0.8 * 64 * 4


def test_vector_formats_refuse_a_reader_that_returns_wrong_values(tmp_path, monkeypatch):
    import store.vectors

    real = store.vectors.load_matrix

    def off_by_one_row(*args, **kwargs):
        ids, matrix = real(*args, **kwargs)
        return ids, np.roll(matrix, 1, axis=0)

    monkeypatch.setattr(store.vectors, "load_matrix", off_by_one_row)
    with pytest.raises(RuntimeError, match="read back other values"):
        vector_formats(rows=256, dim=8, workdir=tmp_path)


def test_synthetic_images_compress_like_photos():
    from ingest.writer import encode_png

    images = smooth_images(8)
    sizes = [len(encode_png(img.numpy())) for img in images]
    assert images.shape == (8, 64, 64, 3)
    assert 4000 < sum(sizes) / len(sizes) < 12288  # between flat colour and incompressible noise
