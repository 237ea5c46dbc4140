"""Sampling the text-to-image generators on tiny pipelines built in code: DMD2's timesteps, per-sample
noise (a sample regenerates alone), fp16 weights adopted as stored."""

from __future__ import annotations

import pytest
import torch

from ingest.generator import make_generator
from ingest.models.presets import get_spec
from tests.test_text_to_image import CPU, plan, record_unet_calls


@pytest.mark.parametrize("preset, expected", [("sdxl-1step", [399]), ("sdxl-4step", [999, 749, 499, 249])])
def test_sdxl_samples_at_the_preset_timesteps(bases, preset, expected):
    spec = get_spec(preset, bases["sdxl"])
    generator = make_generator(spec, bases["sdxl_bin"], CPU, torch.float32)
    calls = record_unet_calls(generator)
    images = generator.generate(plan(3))
    assert calls == expected  # one UNet call per step, at DMD2's timesteps (not LCM's defaults)
    assert images.shape == (3, *spec.image_shape) and images.dtype == torch.uint8
    assert generator.pipe.unet.dtype == torch.float32 and generator.pipe.vae.dtype == torch.float32


def test_same_seed_regenerates_the_same_image_alone(bases):
    spec = get_spec("sdxl-4step", bases["sdxl"])
    generator = make_generator(spec, bases["sdxl_safetensors"], CPU, torch.float32)
    rows = plan(4)
    together = generator.generate(rows)
    alone = generator.generate(rows.take(slice(2, 3)))
    assert torch.equal(together[2], alone[0])
    assert not torch.equal(together[0], together[1])


def test_fp16_checkpoint_is_adopted_as_stored(bases):
    from ingest.text_to_image_generator import load_unet

    unet = load_unet(bases["sdxl"], bases["sdxl_bin"], lora=None)
    assert {p.dtype for p in unet.parameters()} == {torch.float16}  # no upcast copy while loading
