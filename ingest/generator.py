"""Turn rows of a sample plan into images, with capture hooks active: the model side of ingest.

Noise is drawn per sample from its own seed on the CPU (then moved to the device), so a sample's noise
does not depend on the batch it was generated in and any sample can be regenerated alone; its image can
still differ by a level of rounding in a few values, since the network's arithmetic follows the batch size
(`ingest.interactive.regenerate` reports which; `batch="original"` reruns the original batch).
"""

from __future__ import annotations

import dataclasses
import threading

import torch
import torch.nn.functional as F
from torch import nn

from ingest.capture import ActivationCapture
from ingest.models.presets import ModelSpec
from ingest.plan import SamplePlan
from ingest.samplers import per_sample_noise, sample, to_uint8

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass
class EDMGenerator:
    """A class-conditional EDM denoiser with its preset's sampler."""

    spec: ModelSpec
    denoiser: nn.Module
    device: torch.device

    @property
    def layers(self) -> dict[str, nn.Module]:
        return self.spec.hookable_layers(self.denoiser)

    @property
    def step_levels(self) -> list[float]:
        """The noise level (sigma) each captured step starts from."""
        return self.spec.sampler.sigmas()[:-1]

    def generate(self, rows: SamplePlan, capture: ActivationCapture | None = None) -> torch.Tensor:
        """uint8 NHWC images on the generator's device for the plan rows."""
        height, width, channels = self.spec.image_shape
        noise = per_sample_noise(rows.seed, (channels, height, width)).to(self.device)
        label_dim = len(self.spec.class_names)
        labels = F.one_hot(torch.as_tensor(rows.class_id, device=self.device), label_dim).float()
        with torch.inference_mode():
            images = sample(self.denoiser, noise, labels, self.spec.sampler, capture)
        return to_uint8(images)


def make_generator(spec: ModelSpec, checkpoint, device: torch.device, dtype: torch.dtype, vae: str | None = None):
    """The generator for a preset: EDM sampling, or a diffusers text-to-image pipeline. Weights are
    loaded strictly here, so a wrong file fails before any sample is generated."""
    if spec.text_to_image is not None:
        from ingest.text_to_image_generator import TextToImageGenerator  # lazy: diffusers, text-to-image only

        return TextToImageGenerator.load(spec, spec.base_dir, checkpoint, device, dtype, vae=vae)
    if vae is not None:
        raise ValueError(f"--vae is for text-to-image models; {spec.name} has no VAE")
    from ingest.models.presets import load_denoiser

    return EDMGenerator(spec, load_denoiser(spec, checkpoint, device=device, dtype=dtype), device)


_resident: dict = {}
_resident_lock = threading.Lock()


def resident_generator(spec: ModelSpec, checkpoint, device: torch.device, dtype: torch.dtype, vae: str | None = None):
    """`make_generator`, keeping the last generator in memory for the next call with the same model,
    weights, device and precision: one model resident per process, for interactive generation (the
    dashboard's "Generate and place" would otherwise reload SDXL's 5 GB UNet on every click)."""
    key = (spec.name, str(spec.base_dir), str(checkpoint), str(device), str(dtype), vae)
    with _resident_lock:
        if _resident.get("key") != key:
            _resident.clear()
            _resident.update(key=key, generator=make_generator(spec, checkpoint, device, dtype, vae=vae))
        return _resident["generator"]
