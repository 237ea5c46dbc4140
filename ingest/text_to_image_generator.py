"""Sampling DMD2's text-to-image generators (beside `ingest/generator.py`'s EDM generator).

Facts (see `../shared/docs/dmd2_models.md`): only the UNet is replaced, by a plain
`UNet2DConditionModel` state dict (fp16 for SDXL, fp32 for SD1.5), or, for `sdxl-4step-lora`, a LoRA
fused into the base UNet. Sampling is diffusers' `LCMScheduler` from the base scheduler config at the
preset's explicit timesteps ([399] for SDXL 1-step, [999, 749, 499, 249] for 4-step, [999] for SD1.5),
guidance 0, from unscaled N(0, I) latents; the UNet predicts epsilon. Between steps LCM re-noises the
denoised estimate with fresh noise, drawn here from a per-sample generator so that any sample
regenerates alone. The SDXL VAE decodes in fp32 (it overflows in fp16) unless another VAE is chosen.

The UNet is built from the base config on `meta` and its weights adopted with `assign=True`, so a 5 GB
fp16 checkpoint is never held twice and stays fp16.

CLIP reads 77 tokens of a prompt. diffusers logs the cut-off text of every long prompt in every batch, and
transformers a warning per tokenizer (a run of 9 prompts printed 65 KB): those are silenced while prompts
are encoded, and a run's plan gets one line instead, `note: 3 of 9 prompts are longer than 77 tokens; ...`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ingest.hub import BASE_UNET_FP16
from ingest.models.text_to_image import (TextToImageFamily, UNetDenoiser, build_unet_denoiser, read_unet_config,
                                         unet_hookable_layers)
from ingest.samplers import per_sample_noise, tag_step


class TextToImageError(ValueError):
    pass


def load_pipeline(family: TextToImageFamily, base_dir: Path, unet: nn.Module, dtype: torch.dtype):
    """The base pipeline's text encoders, tokenizers, VAE and scheduler around our UNet."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if not (base_dir / "model_index.json").is_file():
        raise TextToImageError(f"{base_dir}: not a diffusers pipeline folder (no model_index.json); "
                               f"pass the {family.base_repo} folder with --base")
    if family.name == "sdxl":
        return StableDiffusionXLPipeline.from_pretrained(base_dir, unet=unet, dtype=dtype)
    return StableDiffusionPipeline.from_pretrained(base_dir, unet=unet, dtype=dtype, safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)


def load_unet(base_dir: Path, checkpoint: Path | None, lora: Path | None) -> nn.Module:
    """DMD2's UNet: the base config with the checkpoint's weights (strict, adopted as stored), or the base
    UNet itself when a LoRA will be fused into it."""
    from ingest.checkpoints import load_checkpoint

    config = read_unet_config(base_dir / "unet" / "config.json")
    if lora is not None:
        from diffusers import UNet2DConditionModel

        variant = "fp16" if (base_dir / BASE_UNET_FP16).is_file() else None
        return UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet", variant=variant)
    with torch.device("meta"):
        denoiser = build_unet_denoiser(config)
    load_checkpoint(denoiser.unet, checkpoint)
    return denoiser.unet


def check_float_dtypes(module: nn.Module, source: str) -> None:
    """A checkpoint mixing fp16 and fp32 tensors is a conversion mistake: refuse it in one line."""
    kinds = sorted({str(p.dtype).removeprefix("torch.") for p in module.parameters() if p.is_floating_point()})
    if len(kinds) > 1:
        raise TextToImageError(f"{source}: mixes {' and '.join(kinds)} tensors; re-save it in one dtype")


@dataclasses.dataclass
class TextToImageGenerator:
    """DMD2 text-to-image sampling with capture hooks on the UNet's blocks."""

    spec: object  # ModelSpec
    family: TextToImageFamily
    pipe: object  # StableDiffusion(XL)Pipeline
    denoiser: UNetDenoiser
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    noted_prompts: tuple = dataclasses.field(default=(), repr=False, compare=False)  # the plan's, once noted

    @classmethod
    def load(cls, spec, base_dir: Path, checkpoint: Path, device: torch.device, dtype: torch.dtype,
             vae: str | None = None) -> "TextToImageGenerator":
        family = spec.text_to_image
        if device.type == "cpu" and dtype == torch.float16:
            raise TextToImageError("fp16 on CPU is not supported by torch's convolutions; use --dtype fp32 or bf16")
        lora = checkpoint if spec.lora else None
        unet = load_unet(base_dir, None if lora else checkpoint, lora)
        check_float_dtypes(unet, str(checkpoint))
        with quiet_diffusers():
            unet = unet.to(dtype=dtype)  # fp16 weights stay fp16 when fp16 is asked for (no copy then)
        pipe = load_pipeline(family, base_dir, unet, dtype)
        if lora is not None:
            pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
            pipe.fuse_lora(lora_scale=1.0)
            pipe.unload_lora_weights()  # keeps the fused weights, drops the adapter layers
        vae_dtype = dtype
        if vae:
            pipe.vae = load_vae(vae, dtype)
        elif family.vae_fp32:
            vae_dtype = torch.float32
        with quiet_diffusers():  # notes about casting modules that have no fp32-only parts
            pipe.vae.to(dtype=vae_dtype)
            pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return cls(spec, family, pipe, UNetDenoiser(pipe.unet).eval(), device, dtype, vae_dtype)

    @property
    def layers(self) -> dict[str, nn.Module]:
        return unet_hookable_layers(self.denoiser)

    @property
    def step_levels(self) -> list[float]:
        return self.spec.sampler.levels()

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text states (and SDXL's pooled embedding) for each prompt, no guidance."""
        if self.family.name == "sdxl":
            text, _, pooled, _ = self.pipe.encode_prompt(prompt=prompts, device=self.device, num_images_per_prompt=1,
                                                         do_classifier_free_guidance=False)
            return text.to(self.dtype), pooled.to(self.dtype)
        text, _ = self.pipe.encode_prompt(prompts, self.device, 1, False)
        return text.to(self.dtype), None

    def generate(self, rows, capture=None) -> torch.Tensor:
        """uint8 NHWC images for plan rows that carry prompts."""
        from diffusers import LCMScheduler


        prompts = rows.prompt_texts()
        self.note_long_prompts(rows.prompts)
        height, width, _ = self.spec.image_shape
        scale = self.pipe.vae_scale_factor
        channels = self.pipe.unet.config.in_channels
        latents = per_sample_noise(rows.seed, (channels, height // scale, width // scale)).to(self.device, self.dtype)
        renoise = [torch.Generator().manual_seed(int(s) ^ 0x5EED) for s in rows.seed]  # per sample, reproducible
        scheduler = LCMScheduler.from_config(self.pipe.scheduler.config)
        with quiet_diffusers():  # it warns that DMD2's timesteps are not LCM's own: they are not meant to be
            scheduler.set_timesteps(timesteps=list(self.spec.sampler.timesteps), device=self.device)
        with torch.inference_mode():
            with quiet_tokenizers():  # the per-prompt truncation warnings; note_long_prompts said it once
                text, pooled = self.encode(prompts)
            time_ids = None
            if pooled is not None:
                time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=self.device,
                                        dtype=self.dtype).repeat(len(prompts), 1)
            for step, t in enumerate(scheduler.timesteps):
                tag_step(capture, step)
                eps = self.denoiser(latents, t.expand(len(prompts)), text, pooled, time_ids)
                latents = scheduler.step(eps, t, latents, generator=renoise, return_dict=False)[0]
            vae = self.pipe.vae
            decoded = vae.decode(latents.to(self.vae_dtype) / vae.config.scaling_factor, return_dict=False)[0]
        return ((decoded.float() + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def note_long_prompts(self, prompts: tuple) -> None:
        """Once per plan (its `prompts`, the same tuple in every batch of a run): one line on stderr saying how
        many of its prompts CLIP truncates, if any."""
        if prompts is self.noted_prompts:
            return
        self.noted_prompts = prompts
        line = long_prompts_note([p.text for p in prompts], self.pipe.tokenizer)
        if line:
            tqdm.write(line, file=sys.stderr)


def long_prompts_note(texts: list[str], tokenizer, block: int = 1024) -> str | None:
    """`note: 3 of 9 prompts are longer than 77 tokens; ...`, counted with the pipeline's tokenizer (start
    and end tokens included, as diffusers truncates), or None when every prompt fits."""
    limit = tokenizer.model_max_length
    with quiet_tokenizers():
        long = sum(len(ids) > limit for start in range(0, len(texts), block)
                   for ids in tokenizer(texts[start:start + block]).input_ids)
    if not long:
        return None
    are, their = ("is", "its") if long == 1 else ("are", "their")
    return (f"note: {long} of {len(texts)} prompts {are} longer than {limit} tokens; CLIP reads only {their} first "
            f"{limit} tokens")


@contextlib.contextmanager
def quiet_tokenizers():
    """transformers' and diffusers' warnings off: "Token indices sequence length is longer than ..." and "The
    following part of your input was truncated because CLIP can only handle ...", per prompt and batch."""
    from transformers.utils import logging as transformers_logging

    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with quiet_diffusers():
            yield
    finally:
        transformers_logging.set_verbosity(level)


@contextlib.contextmanager
def quiet_diffusers():
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def load_vae(name: str, dtype: torch.dtype) -> nn.Module:
    """An fp16-safe AutoencoderKL or a tiny AutoencoderTiny, from a folder or a hub repository id."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    path = Path(name)
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
    kind = (config or {}).get("_class_name") or ("AutoencoderTiny" if "tae" in name.lower() else "AutoencoderKL")
    cls = AutoencoderTiny if kind == "AutoencoderTiny" else AutoencoderKL
    return cls.from_pretrained(name, dtype=dtype)
