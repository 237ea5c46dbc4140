"""Samplers for EDM denoisers: DMD2's one-step generation and a deterministic multi-step EDM sampler.

Both take a denoiser D(x, sigma, labels) and standard-normal noise `z`, and return images in [-1, 1].
When an `ActivationCapture` is given, each step's first denoiser evaluation is tagged with its step
index; Heun's corrector evaluation runs with capture paused, so every step is captured exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch import nn

from ingest.capture import ActivationCapture

DMD2_SIGMA = 80.0


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How a preset turns noise into an image. `kind` is `one-step` or `heun`."""

    kind: str = "one-step"
    steps: int = 1
    sigma_max: float = DMD2_SIGMA
    sigma_min: float = 0.002
    rho: float = 7.0

    def sigmas(self) -> list[float]:
        """The noise levels visited, ending in 0 (one entry per step plus the final 0)."""
        if self.kind == "one-step":
            return [self.sigma_max, 0.0]
        return karras_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"sigmas": self.sigmas()}


@dataclasses.dataclass(frozen=True)
class LCMSampler:
    """Few-step LCM sampling at explicit timesteps (DMD2's text-to-image samplers)."""

    timesteps: tuple[int, ...]
    kind: str = "lcm"

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def levels(self) -> list[float]:
        """The noise level each captured step starts from: its timestep."""
        return [float(t) for t in self.timesteps]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "timesteps": list(self.timesteps), "guidance_scale": 0.0}


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    """EDM's time discretisation: `steps` levels from sigma_max to sigma_min, then 0."""
    if steps < 1:
        raise ValueError("a sampler needs at least one step")
    if steps == 1:
        return [sigma_max, 0.0]
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    inv_rho_min, inv_rho_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (inv_rho_max + ramp * (inv_rho_min - inv_rho_max)) ** rho
    return sigmas.tolist() + [0.0]


def per_sample_noise(seeds, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard-normal noise of `shape` for each seed, drawn independently (CPU, float32), so any sample
    regenerates alone, whatever batch it was generated in."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def tag_step(capture: ActivationCapture | None, step: int) -> None:
    """Tell the capture hooks which sampling step the next network call is."""
    if capture is not None:
        capture.step = step


@torch.no_grad()
def sample(
    denoiser: nn.Module,
    noise: torch.Tensor,
    labels: torch.Tensor | None,
    config: SamplerConfig,
    capture: ActivationCapture | None = None,
) -> torch.Tensor:
    """Run `config`'s sampler from standard-normal `noise`; returns the final denoised batch."""
    if config.kind == "one-step":
        tag_step(capture, 0)
        return denoiser(noise * config.sigma_max, torch.full((noise.shape[0],), config.sigma_max,
                                                            device=noise.device), labels)
    if config.kind == "heun":
        return heun(denoiser, noise, labels, config.sigmas(), capture)
    raise ValueError(f"unknown sampler kind {config.kind!r}; use one-step or heun")


def heun(
    denoiser: nn.Module,
    noise: torch.Tensor,
    labels: torch.Tensor | None,
    sigmas: list[float],
    capture: ActivationCapture | None = None,
) -> torch.Tensor:
    """Deterministic 2nd-order EDM sampler (Karras et al. 2022, Alg. 1 without churn)."""
    x = noise.to(torch.float64) * sigmas[0]
    batch = noise.shape[0]
    for step, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        tag_step(capture, step)
        denoised = denoiser(x.float(), torch.full((batch,), sigma, device=noise.device), labels).to(torch.float64)
        slope = (x - denoised) / sigma
        x_next = x + (sigma_next - sigma) * slope
        if sigma_next > 0:
            pause = capture.paused() if capture is not None else contextlib.nullcontext()
            with pause:
                denoised_next = denoiser(
                    x_next.float(), torch.full((batch,), sigma_next, device=noise.device), labels
                ).to(torch.float64)
            slope_next = (x_next - denoised_next) / sigma_next
            x_next = x + (sigma_next - sigma) * (slope + slope_next) / 2
        x = x_next
    return x.float()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] NCHW floats to uint8 NHWC, as DMD2 does: ((x + 1) * 127.5).clamp(0, 255)."""
    return ((images + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
