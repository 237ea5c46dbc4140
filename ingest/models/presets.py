"""Named generators the tool knows: how to build each one, feed it, and where its hookable layers are.

A preset is a plain `ModelSpec` value; `PRESETS` lists them all explicitly. A path to an EDM
`config.json` (DMD2's format) works wherever a preset name does, for custom EDM generators.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ingest.models.edm import IMAGENET64, EDMConfig, EDMPrecond
from ingest.hub import DMD2_REPO, HubFile
from ingest.models.text_to_image import (SD15, SDXL, TextToImageFamily, build_unet_denoiser, example_inputs_for,
                                         latent_scale, read_unet_config, unet_hookable_layers)
from ingest.samplers import LCMSampler, SamplerConfig

EMBEDDED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
IMAGENET_CLASSES = Path(__file__).resolve().parents[1] / "data" / "imagenet_classes.tsv"


def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k classes in the standard order, as "first lemma (WordNet id)": the id is part
    of the name because lemmas alone are ambiguous (134 and 517 are both "crane")."""
    rows = [line.split("\t") for line in IMAGENET_CLASSES.read_text().splitlines()
            if line and not line.startswith("#")][1:]
    return tuple(f"{lemmas.split(',')[0].strip()} ({wnid})" for _, wnid, lemmas in rows)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the pipeline needs to know about one generator, without any weights."""

    name: str
    summary: str
    build: Callable[[], nn.Module]  # the denoiser; call inside `torch.device(...)` to choose where
    example_inputs: Callable[[int, torch.device], tuple[torch.Tensor, ...]]  # one denoiser call
    hookable_layers: Callable[[nn.Module], dict[str, nn.Module]]  # layer name -> module
    image_shape: tuple[int, int, int]  # (height, width, channels) of a generated image
    sampler: SamplerConfig | LCMSampler
    class_names: tuple[str, ...] = ()  # by class id; empty for text-to-image models
    checkpoint: Path | None = None  # weights shipped with the package, if any
    hub_checkpoint: HubFile | None = None  # weights on the hub, fetched through its cache
    text_to_image: TextToImageFamily | None = None  # set for diffusers text-to-image generators
    lora: bool = False  # the checkpoint is a LoRA fused into the base UNet
    base_dir: Path | None = None  # local base pipeline folder, when known (else the hub cache)

    @property
    def denoiser_calls(self) -> int:
        """Captured denoiser evaluations per sample: one per sampling step."""
        return self.sampler.steps


class UnknownModelError(ValueError):
    pass


# --- EDM / DhariwalUNet family -------------------------------------------------------------------


def edm_hookable_layers(denoiser: nn.Module) -> dict[str, nn.Module]:
    """Every encoder and decoder block of an `EDMPrecond`, named like `enc.8x8_block2`."""
    unet = denoiser.model
    layers = {f"enc.{name}": module for name, module in unet.enc.items()}
    layers.update({f"dec.{name}": module for name, module in unet.dec.items()})
    return layers


def edm_spec(
    name: str,
    config: EDMConfig,
    summary: str,
    sampler: SamplerConfig = SamplerConfig(),
    class_names: tuple[str, ...] = (),
    checkpoint: Path | None = None,
) -> ModelSpec:
    def example_inputs(batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        res, channels = config.img_resolution, config.img_channels
        x = torch.zeros(batch, channels, res, res, device=device)
        sigma = torch.full((batch,), 80.0, device=device)
        labels = torch.zeros(batch, config.label_dim, device=device) if config.label_dim else None
        return (x, sigma, labels)

    return ModelSpec(
        name=name,
        summary=summary,
        build=lambda: EDMPrecond(config),
        example_inputs=example_inputs,
        hookable_layers=edm_hookable_layers,
        image_shape=(config.img_resolution, config.img_resolution, config.img_channels),
        sampler=sampler,
        class_names=class_names or tuple(str(i) for i in range(config.label_dim)),
        checkpoint=checkpoint,
    )


def embedded_spec(name: str, summary: str) -> ModelSpec:
    """A digits model shipped in `ingest/weights/`: its config JSON sits beside its weights."""
    raw = json.loads((EMBEDDED_WEIGHTS / f"{name}.json").read_text())
    sampler = SamplerConfig(**raw.pop("sampler"))
    return edm_spec(name, EDMConfig.from_dict(raw), summary, sampler=sampler,
                    checkpoint=EMBEDDED_WEIGHTS / f"{name}.safetensors")


def text_to_image_spec(name: str, family: TextToImageFamily, summary: str, sampler: LCMSampler,
                       hub_checkpoint: HubFile, lora: bool = False, base_dir: Path | None = None) -> ModelSpec:
    """A DMD2 text-to-image preset. Its UNet config comes from `base_dir` when given, else the copy of
    the base config shipped in `ingest/models/configs/`."""
    config_path = base_dir / "unet" / "config.json" if base_dir else family.shipped_unet_config
    config = read_unet_config(config_path)
    vae_config = base_dir / "vae" / "config.json" if base_dir else None
    scale = latent_scale(json.loads(vae_config.read_text()) if vae_config and vae_config.is_file() else None)
    resolution = config["sample_size"] * scale
    return ModelSpec(
        name=name,
        summary=summary,
        build=lambda: build_unet_denoiser(config),
        example_inputs=example_inputs_for(config),
        hookable_layers=unet_hookable_layers,
        image_shape=(resolution, resolution, 3),
        sampler=sampler,
        hub_checkpoint=hub_checkpoint,
        text_to_image=family,
        lora=lora,
        base_dir=base_dir,
    )


IMAGENET_CHECKPOINTS = {  # preset -> (hub path in tianweiy/DMD2, FID)
    "imagenet": ("model/imagenet/imagenet_gan_classifier_genloss3e-3_diffusion1000_lr5e-7_resume_fid1.28_"
                 "checkpoint_model_548000/pytorch_model.bin", "1.28"),
    "imagenet-fid1.51": ("model/imagenet/imagenet_gan_classifier_genloss3e-3_diffusion1000_lr2e-6_scratch_fid1.51_"
                         "checkpoint_model_193500/pytorch_model.bin", "1.51"),
    "imagenet-fid2.61": ("model/imagenet/imagenet_lr2e-6_scratch_fid2.61_checkpoint_model_405500/pytorch_model.bin",
                         "2.61"),
}
SD15_CHECKPOINT = ("model/sdv1.5/laion6.25_sd_baseline_8node_guidance1.75_lr5e-7_seed10_dfake10_diffusion1000_"
                   "gan1e-3_resume_fid8.35_checkpoint_model_041000/pytorch_model.bin")

PRESETS: dict[str, ModelSpec] = {
    "digits-dmd2": embedded_spec(
        "digits-dmd2", "embedded one-step DMD2 generator of 8x8 handwritten digits (offline, trained by us)"
    ),
    "digits-edm": embedded_spec(
        "digits-edm", "embedded EDM teacher of digits-dmd2, deterministic Heun sampler, 8 steps"
    ),
    **{
        name: dataclasses.replace(edm_spec(
            name, IMAGENET64,
            f"DMD2 ImageNet 64x64 class-conditional one-step generator, FID {fid} checkpoint "
            "(EDMPrecond + DhariwalUNet, 296M params, fp32 1.18 GB)",
            class_names=imagenet_class_names(),
        ), hub_checkpoint=HubFile(DMD2_REPO, path))
        for name, (path, fid) in IMAGENET_CHECKPOINTS.items()
    },
    "sdxl-1step": text_to_image_spec(
        "sdxl-1step", SDXL, "DMD2 SDXL 1-step text-to-image UNet (fp16, 5.1 GB), 1024x1024, timestep 399",
        LCMSampler((399,)), HubFile(DMD2_REPO, "dmd2_sdxl_1step_unet_fp16.bin")),
    "sdxl-4step": text_to_image_spec(
        "sdxl-4step", SDXL, "DMD2 SDXL 4-step text-to-image UNet (fp16, 5.1 GB), 1024x1024, timesteps 999/749/499/249",
        LCMSampler((999, 749, 499, 249)), HubFile(DMD2_REPO, "dmd2_sdxl_4step_unet_fp16.bin")),
    "sdxl-4step-lora": text_to_image_spec(
        "sdxl-4step-lora", SDXL, "DMD2 SDXL 4-step LoRA fused into the SDXL base UNet, 1024x1024",
        LCMSampler((999, 749, 499, 249)), HubFile(DMD2_REPO, "dmd2_sdxl_4step_lora_fp16.safetensors"), lora=True),
    "sd15": text_to_image_spec(
        "sd15", SD15, "DMD2 SD v1.5 one-step text-to-image UNet (fp32, 3.4 GB), 512x512, timestep 999",
        LCMSampler((999,)), HubFile(DMD2_REPO, SD15_CHECKPOINT)),
}


def get_spec(model: str, base: str | Path | None = None) -> ModelSpec:
    """The preset called `model`, or a custom EDM generator described by a `config.json` path.

    A text-to-image preset is bound to its base pipeline folder: `base` when given, else the hub cache's
    snapshot when there is one, else (for listing layers only) the shipped copy of the base UNet config.
    """
    if model in PRESETS:
        spec = PRESETS[model]
        if spec.text_to_image is None:
            if base is not None:
                raise UnknownModelError(f"--base is for text-to-image models; {model} is class-conditional")
            return spec
        from ingest.hub import cached_base_folder

        folder = Path(base) if base is not None else cached_base_folder(spec.text_to_image)
        if folder is None:
            return spec
        if not (folder / "unet" / "config.json").is_file():
            raise UnknownModelError(f"{folder}: no unet/config.json; --base must be a diffusers pipeline folder "
                                    f"like {spec.text_to_image.base_repo}")
        return text_to_image_spec(spec.name, spec.text_to_image, spec.summary, spec.sampler, spec.hub_checkpoint,
                                  spec.lora, folder)
    path = Path(model)
    if path.suffix == ".json" and path.is_file():
        raw = json.loads(path.read_text())
        if raw.get("model_type", "DhariwalUNet") != "DhariwalUNet":
            raise UnknownModelError(f"{path}: model_type {raw.get('model_type')!r} is not supported; use DhariwalUNet")
        return edm_spec(str(path), EDMConfig.from_dict(raw), f"custom EDM generator from {path}")
    raise UnknownModelError(
        f"unknown model {model!r}; choose one of {', '.join(PRESETS)} or pass an EDM config.json path"
    )


def load_denoiser(spec: ModelSpec, checkpoint: str | Path | None = None, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> nn.Module:
    """Build `spec`'s denoiser and strictly load its weights (the shipped ones unless `checkpoint`)."""
    from ingest.checkpoints import load_checkpoint

    path = checkpoint or spec.checkpoint
    if path is None:
        raise UnknownModelError(f"model {spec.name} needs a checkpoint; pass --checkpoint PATH")
    with torch.device("meta"):
        denoiser = spec.build()
    load_checkpoint(denoiser, path)
    return denoiser.to(device=device, dtype=dtype).eval().requires_grad_(False)
