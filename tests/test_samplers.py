"""Samplers: DMD2's one-step call, a Heun sampler that solves the probability-flow ODE, step tagging."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ingest.capture import ActivationCapture
from ingest.samplers import SamplerConfig, karras_sigmas, sample, to_uint8


class GaussianDenoiser(nn.Module):
    """The exact denoiser for data ~ N(0, s^2): D(x, sigma) = x s^2 / (s^2 + sigma^2)."""

    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = s
        self.block = nn.Identity()  # a hookable layer
        self.calls: list[float] = []

    def forward(self, x, sigma, labels=None):
        self.calls.append(float(sigma[0]))
        sigma = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
        return self.block(x * self.s**2 / (self.s**2 + sigma**2))


def test_karras_sigmas():
    sigmas = karras_sigmas(8, 0.002, 80.0)
    assert len(sigmas) == 9 and sigmas[-1] == 0.0
    assert sigmas[0] == pytest.approx(80.0) and sigmas[-2] == pytest.approx(0.002)
    assert all(a > b for a, b in zip(sigmas, sigmas[1:]))
    assert karras_sigmas(1, 0.002, 80.0) == [80.0, 0.0]
    with pytest.raises(ValueError):
        karras_sigmas(0, 0.002, 80.0)


def test_one_step_is_dmd2s_call():
    model = GaussianDenoiser(0.5)
    z = torch.randn(4, 3, 2, 2)
    out = sample(model, z, None, SamplerConfig())
    assert model.calls == [80.0]
    assert torch.allclose(out, 80 * z * 0.25 / (0.25 + 6400))


def test_heun_solves_the_probability_flow_ode_to_second_order():
    s = 0.5
    z = torch.randn(16, 1, 4, 4, dtype=torch.float64)
    exact = 80 * z * s / math.sqrt(s**2 + 80**2)  # x(0) = x(T) * s / sqrt(s^2 + sigma_T^2)
    errors = {}
    for steps in (16, 64, 128):
        out = sample(GaussianDenoiser(s), z.float(), None, SamplerConfig(kind="heun", steps=steps))
        errors[steps] = (out.double() - exact).abs().max().item()
    assert errors[128] < 5e-3
    assert errors[64] < errors[16] / 10  # 4x the steps, ~16x smaller error


def test_heun_captures_each_step_once_and_skips_corrector_evaluations():
    model = GaussianDenoiser(0.5)
    config = SamplerConfig(kind="heun", steps=5)
    with ActivationCapture({"block": model.block}, ["mean"]) as capture:
        sample(model, torch.randn(2, 3, 4, 4), None, config, capture)
    captured = capture.collect()
    assert len(model.calls) == 2 * 5 - 1  # the last step is Euler (sigma_next = 0)
    assert sorted(step for _, step, _ in captured) == [0, 1, 2, 3, 4]
    assert model.calls[0::2] == pytest.approx(config.sigmas()[:-1])


def test_to_uint8_follows_dmd2():
    images = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0]).reshape(1, 1, 2, 3)
    pixels = to_uint8(images)
    assert pixels.shape == (1, 2, 3, 1) and pixels.dtype == torch.uint8
    assert pixels.flatten().tolist() == [0, 0, 127, 254, 255, 255]
