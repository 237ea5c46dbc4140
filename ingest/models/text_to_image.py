"""DMD2's text-to-image networks: diffusers' SDXL and SD1.5 UNets as denoisers with hookable blocks, and
what each base pipeline family needs. Sampling them is `ingest/text_to_image_generator.py`.

Only the UNet differs from the base pipeline in DMD2 (see `../shared/docs/dmd2_models.md`); the shipped
base UNet configs (`configs/`) let layers and estimates be computed without any download.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

CONFIGS = Path(__file__).with_name("configs")


@dataclasses.dataclass(frozen=True)
class TextToImageFamily:
    """A base pipeline and what its UNet needs besides latents and timesteps."""

    name: str  # "sdxl" or "sd15"
    base_repo: str
    shipped_unet_config: Path  # the base UNet's config, for layers/estimates without a download
    resolution: int
    context_dim: int  # width of the text encoder states the UNet cross-attends to
    pooled_dim: int | None  # SDXL's pooled text embedding (added conditioning); None for SD1.5
    vae_fp32: bool  # decode in fp32 unless another VAE is chosen


SDXL = TextToImageFamily("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", CONFIGS / "sdxl-unet.json",
                         1024, 2048, 1280, vae_fp32=True)
SD15 = TextToImageFamily("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", CONFIGS / "sd15-unet.json",
                         512, 768, None, vae_fp32=False)



def read_unet_config(path: Path) -> dict:
    return {k: v for k, v in json.loads(Path(path).read_text()).items() if not k.startswith("_source")}


class UNetDenoiser(nn.Module):
    """A diffusers UNet called with positional tensors only (what dry runs and capture hooks see)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                pooled: torch.Tensor | None = None, time_ids: torch.Tensor | None = None) -> torch.Tensor:
        dtype = self.unet.dtype
        added = None
        if pooled is not None:
            added = {"text_embeds": pooled.to(dtype), "time_ids": time_ids.to(dtype)}
        return self.unet(latents.to(dtype), timestep, encoder_hidden_states=text.to(dtype), added_cond_kwargs=added,
                         return_dict=False)[0]


def build_unet_denoiser(unet_config: dict) -> UNetDenoiser:
    from diffusers import UNet2DConditionModel

    return UNetDenoiser(UNet2DConditionModel.from_config(unet_config))


def unet_hookable_layers(denoiser: nn.Module) -> dict[str, nn.Module]:
    """Every down block, the mid block and every up block, named as in diffusers (`mid_block`)."""
    unet = denoiser.unet
    layers = {f"down_blocks.{i}": block for i, block in enumerate(unet.down_blocks)}
    layers["mid_block"] = unet.mid_block
    layers.update({f"up_blocks.{i}": block for i, block in enumerate(unet.up_blocks)})
    return layers


def latent_scale(vae_config: dict | None = None) -> int:
    """Image pixels per latent pixel (8 for the real VAEs)."""
    if vae_config is not None:
        return 2 ** (len(vae_config["block_out_channels"]) - 1)
    return 8


def example_inputs_for(unet_config: dict):
    """One UNet call's inputs of the right shapes for a config (for dry runs on `meta`)."""

    def example_inputs(batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        size = unet_config["sample_size"]
        latents = torch.zeros(batch, unet_config["in_channels"], size, size, device=device)
        timestep = torch.full((batch,), 999, device=device, dtype=torch.long)
        text = torch.zeros(batch, 77, unet_config["cross_attention_dim"], device=device)
        if unet_config.get("addition_embed_type") == "text_time":
            time_dims = unet_config["projection_class_embeddings_input_dim"] - 6 * unet_config["addition_time_embed_dim"]
            return (latents, timestep, text, torch.zeros(batch, time_dims, device=device),
                    torch.zeros(batch, 6, device=device))
        return (latents, timestep, text)

    return example_inputs
