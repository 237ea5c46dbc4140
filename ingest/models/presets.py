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
from ingest.samplers import SamplerConfig

EMBEDDED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the pipeline needs to know about one generator, without any weights."""

    name: str
    summary: str
    build: Callable[[], nn.Module]  # the denoiser; call inside `torch.device(...)` to choose where
    example_inputs: Callable[[int, torch.device], tuple[torch.Tensor, ...]]  # one denoiser call
    hookable_layers: Callable[[nn.Module], dict[str, nn.Module]]  # layer name -> module
    image_shape: tuple[int, int, int]  # (height, width, channels) of a generated image
    sampler: SamplerConfig
    class_names: tuple[str, ...] = ()  # by class id; empty for text-to-image models
    checkpoint: Path | None = None  # weights shipped with the package, if any

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


PRESETS: dict[str, ModelSpec] = {
    "digits-dmd2": embedded_spec(
        "digits-dmd2", "embedded one-step DMD2 generator of 8x8 handwritten digits (offline, trained by us)"
    ),
    "digits-edm": embedded_spec(
        "digits-edm", "embedded EDM teacher of digits-dmd2, deterministic Heun sampler, 8 steps"
    ),
    "imagenet": edm_spec(
        "imagenet",
        IMAGENET64,
        "DMD2 ImageNet 64x64 class-conditional one-step generator (EDMPrecond + DhariwalUNet, 296M params)",
    ),
}


def get_spec(model: str) -> ModelSpec:
    """The preset called `model`, or a custom EDM generator described by a `config.json` path."""
    if model in PRESETS:
        return PRESETS[model]
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
