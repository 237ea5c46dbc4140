"""Sampling the text-to-image generators on tiny pipelines built in code: DMD2's timesteps, per-sample
noise (a sample regenerates alone), fp16 weights adopted as stored."""

from __future__ import annotations

import logging

import pytest
import torch

from ingest.generator import make_generator
from ingest.models.presets import get_spec
from ingest.plan import Prompt, prompt_plan
from ingest.run import IngestConfig, run_ingest
from tests.conftest import TINY_PROMPTS
from tests.test_text_to_image import CPU, plan, record_unet_calls

# The tiny pipelines' tokenizer makes a token of every word: these are longer than CLIP's 77 tokens.
LONG_PROMPTS = ["a red cat " * 30, "mountains at dawn, " * 40, "word " * 100]
PER_PROMPT_WARNINGS = ("truncated because CLIP", "Token indices sequence length")


@pytest.fixture()
def library_logs(caplog):
    """What diffusers and transformers log: their loggers keep their own stderr handlers and do not propagate,
    so caplog's handler is attached to them for the test."""
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


def per_prompt_warnings(caplog) -> list[str]:
    return [r.getMessage()[:200] for r in caplog.records if any(w in r.getMessage() for w in PER_PROMPT_WARNINGS)]


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


def test_long_prompts_are_noted_once_per_run_not_per_prompt(bases, capfd, library_logs):
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    generator = make_generator(get_spec("sdxl-1step", bases["sdxl"]), bases["sdxl_bin"], CPU, torch.float32)
    rows = prompt_plan([Prompt(p) for p in TINY_PROMPTS + LONG_PROMPTS], seed=0, per_prompt=2)  # 12 samples
    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    capfd.readouterr()
    for start in range(0, len(rows), 4):  # three batches, as a run makes them
        generator.generate(rows.take(slice(start, start + 4)))
    err = capfd.readouterr().err
    assert err.count("note: 3 of 6 prompts are longer than 77 tokens; CLIP reads only their first 77 tokens\n") == 1
    assert not any(warning in err for warning in PER_PROMPT_WARNINGS), err[:2000]
    assert per_prompt_warnings(library_logs) == []
    assert (diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()) == levels  # restored
    generator.generate(prompt_plan([Prompt(p) for p in TINY_PROMPTS], seed=0).take(slice(0, 2)))
    assert capfd.readouterr().err == ""  # a plan whose prompts all fit: no note


def test_a_run_of_nine_prompts_prints_one_note(bases, tmp_path, capfd, library_logs):
    """The report's case: 9 prompts, 3 of them long, printed 65 KB of truncation warnings."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(TINY_PROMPTS * 2 + LONG_PROMPTS) + "\n")
    config = IngestConfig(model="sdxl-1step", base=str(bases["sdxl"]), checkpoint=str(bases["sdxl_bin"]),
                          prompts=str(prompts), batch=2, chunk_size=4, lake=str(tmp_path / "lake"), progress=False)
    capfd.readouterr()
    assert run_ingest(config).generated == 9
    err = capfd.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes == ["note: 3 of 9 prompts are longer than 77 tokens; CLIP reads only their first 77 tokens"]
    assert not any(warning in err for warning in PER_PROMPT_WARNINGS), err[:2000]
    assert per_prompt_warnings(library_logs) == []
