"""Pooled activation capture: values, step tagging, tuple outputs, and hooks that never leak."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ingest.capture import ActivationCapture, pool, pooled_width
from ingest.models.presets import edm_hookable_layers


def numpy_pool(x: np.ndarray, method: str) -> np.ndarray:
    """Independent reference: pooling written directly in numpy."""
    b, c, h, w = x.shape
    if method == "mean":
        return x.reshape(b, c, -1).mean(axis=2)
    if method == "max":
        return x.reshape(b, c, -1).max(axis=2)
    if method == "grid2":
        quads = x.reshape(b, c, 2, h // 2, 2, w // 2).mean(axis=(3, 5))  # (b, c, row, col)
        return quads.reshape(b, c * 4)
    raise AssertionError(method)


@pytest.mark.parametrize("method", ["mean", "max", "grid2"])
def test_captured_vectors_equal_pooled_reference_activations(tiny_edm, tiny_edm_io, method):
    layers = edm_hookable_layers(tiny_edm)
    with ActivationCapture(layers, [method]) as capture, torch.no_grad():
        tiny_edm(tiny_edm_io["input/x"], tiny_edm_io["input/sigma"], tiny_edm_io["input/class_labels"])
        captured = capture.collect()
    assert len(captured) == len(layers) == 16
    for name in layers:
        reference = tiny_edm_io[f"act/model.{name}"].numpy().astype(np.float64)
        vector = captured[(name, 0, method)]
        assert vector.shape == (6, pooled_width(reference.shape[1], method))
        assert vector.dtype == torch.float32
        np.testing.assert_allclose(vector.numpy(), numpy_pool(reference, method), atol=1e-4)


def test_pool_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(torch.zeros(1, 2, 4, 4), "median")
    with pytest.raises(ValueError, match="feature map"):
        pool(torch.zeros(2, 4), "mean")


def test_grid2_layout_is_channel_major():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    out = pool(x, "grid2")[0]
    # channel 0 quadrants: top-left (0,1,4,5) -> 2.5, top-right 4.5, bottom-left 10.5, bottom-right 12.5
    assert out[:4].tolist() == [2.5, 4.5, 10.5, 12.5]
    assert out[4:].tolist() == [v + 16 for v in [2.5, 4.5, 10.5, 12.5]]


class TupleBlock(nn.Module):
    """Like diffusers' down blocks: returns (hidden_states, residuals)."""

    def forward(self, x):
        return x * 2, (x, x)


def test_tuple_outputs_use_first_element_and_steps_are_tagged():
    block = TupleBlock()
    x = torch.randn(3, 5, 4, 4)
    with ActivationCapture({"down": block}, ["mean", "max"]) as capture:
        for step in range(3):
            capture.step = step
            block(x + step)
        with capture.paused():
            block(x)  # e.g. a Heun corrector evaluation: not recorded
    captured = capture.collect()
    assert sorted(captured) == sorted((("down", s, p) for s in range(3) for p in ["mean", "max"]))
    for step in range(3):
        assert torch.allclose(captured[("down", step, "mean")], ((x + step) * 2).mean(dim=(2, 3)))


def test_firing_twice_in_one_step_is_an_error():
    block = TupleBlock()
    with ActivationCapture({"down": block}, ["mean"]):
        block(torch.zeros(1, 1, 2, 2))
        with pytest.raises(RuntimeError, match="fired twice in step 0"):
            block(torch.zeros(1, 1, 2, 2))


def test_no_hook_left_after_failing_forward(tiny_edm):
    layers = edm_hookable_layers(tiny_edm)
    assert all(not m._forward_hooks for m in tiny_edm.modules())
    with pytest.raises(RuntimeError):
        with ActivationCapture(layers, ["mean", "grid2"]) as capture, torch.no_grad():
            assert capture.active and all(m._forward_hooks for m in layers.values())
            tiny_edm(torch.zeros(2, 3, 7, 7), torch.ones(2), None)  # wrong resolution: raises mid-forward
    assert not capture.active
    assert all(not m._forward_hooks for m in tiny_edm.modules())


def test_capture_validates_arguments(tiny_edm):
    with pytest.raises(ValueError, match="unknown pooling"):
        ActivationCapture(edm_hookable_layers(tiny_edm), ["avg"])
    with pytest.raises(ValueError, match="no layers"):
        ActivationCapture({}, ["mean"])
