"""Storage and peak-memory estimates from real shapes."""

from __future__ import annotations

import torch

from ingest.estimate import PeakMemoryTracer, estimate, peak_forward_bytes
from ingest.layers import discover_layers, select_layers
from ingest.models.presets import get_spec


def test_tracer_counts_live_storages_and_frees_them():
    with PeakMemoryTracer() as tracer:
        a = torch.zeros(1000)  # 4000 B
        b = a * 2  # +4000
        view = b[:10]  # same storage: +0
        del a, b  # the view keeps b's storage alive
        c = view + 1  # +40
    assert tracer.peak == 8000
    assert tracer.current == 4040
    del view, c


def test_tracer_on_meta_equals_tracer_on_cpu(tiny_edm_dir):
    # The meta dry run measures exactly what a real CPU forward allocates.
    spec = get_spec(str(tiny_edm_dir / "config.json"))
    _, meta_peak = peak_forward_bytes(spec, batch=4)
    model = spec.build().eval()
    inputs = spec.example_inputs(4, torch.device("cpu"))
    with torch.no_grad(), PeakMemoryTracer() as tracer:
        model(*inputs)
    assert meta_peak == tracer.peak > 0


def test_imagenet_estimate_counts_bytes_exactly():
    spec = get_spec("imagenet")
    layers = select_layers(discover_layers(spec), "enc.8x8_block2,dec.8x8_in0,dec.8x8_in1,enc.16x16_block2")
    est = estimate(spec, layers, ["mean", "grid2"], n=1000, batch=8)
    widths = 768 + 768 + 768 + 576
    assert est.activation_bytes == widths * 5 * 4  # mean (C) + grid2 (4C), float32
    assert est.image_bytes == 64 * 64 * 3 and est.thumbnail_bytes == 0
    assert est.total_bytes == 1000 * est.sample_bytes
    assert est.weight_bytes == 295_899_267 * 4 + 12 * 4 * 4


def test_peak_memory_grows_with_batch_and_covers_the_largest_layer():
    spec = get_spec("imagenet")
    _, peak1 = peak_forward_bytes(spec, batch=1)
    _, peak8 = peak_forward_bytes(spec, batch=8)
    largest = max(i.numel for i in discover_layers(spec)) * 4
    assert peak1 > largest * 3  # skip connections keep many maps alive at once
    assert 7 * peak1 < peak8 <= 8 * peak1 + 1e6
    weights_half, _ = peak_forward_bytes(spec, batch=1, dtype=torch.bfloat16)
    weights_full, _ = peak_forward_bytes(spec, batch=1)
    assert weights_half * 2 == weights_full
