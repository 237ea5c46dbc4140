"""SDXL- and SD1.5-architecture pipelines with random weights, built in code (no download) and saved with
`save_pretrained`, plus DMD2-style UNet state dicts and an SDXL LoRA for them.

`tiny` pipelines (a few thousand parameters, 32x32 images) let the tests run the real text-to-image code
paths offline; `full` ones have the real UNet and VAE architectures (small text encoders of the real
output widths) for GPU throughput checks (`make gpu-check`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

TINY_TEXT_WIDTH = 32  # per text encoder; SDXL concatenates two
SDXL_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=1024,
                scaling_factor=0.13025)


def byte_symbols() -> list[str]:
    """The 256 printable characters byte-level BPE uses for bytes: printable Latin-1 bytes stand for
    themselves, the others are shifted past 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    shifted = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(shifted))]


def clip_tokenizer(folder: Path):
    """A CLIP BPE tokenizer with a byte-level vocabulary and no merges (every character is a token)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    symbols = byte_symbols()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for s in symbols:
        vocab.setdefault(s, len(vocab))
        vocab.setdefault(s + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def text_encoder(with_projection: bool, vocab_size: int, width: int = TINY_TEXT_WIDTH):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, projection_dim=width,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                         sample_size=32)


def full_sdxl_parts() -> dict:
    """The real SDXL UNet and VAE architectures; text encoders of the real widths (768 + 1280), 2 layers."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from ingest.models.text_to_image import SDXL, read_unet_config

    return dict(unet=UNet2DConditionModel.from_config(read_unet_config(SDXL.shipped_unet_config)),
                vae=AutoencoderKL(**SDXL_VAE), widths=(768, 1280))


def tiny_unet(sdxl: bool):
    from diffusers import UNet2DConditionModel

    common = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
                  norm_num_groups=8, attention_head_dim=4)
    if sdxl:
        return UNet2DConditionModel(
            **common, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=2 * TINY_TEXT_WIDTH,
            addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + TINY_TEXT_WIDTH, use_linear_projection=True,
            transformer_layers_per_block=(1, 2))
    return UNet2DConditionModel(
        **common, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TINY_TEXT_WIDTH)


def scheduler():
    """The base pipelines' scheduler config (SDXL and SD1.5 ship Euler/PNDM with these betas)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  num_train_timesteps=1000, prediction_type="epsilon", steps_offset=1,
                                  timestep_spacing="leading")


def save_base(folder: Path, sdxl: bool, seed: int = 0, full: bool = False) -> Path:
    """A base pipeline folder with random weights, as `save_pretrained` writes it (`full`: SDXL only)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(folder.with_name(folder.name + "-tokenizer-source"))
    if full:
        if not sdxl:
            raise ValueError("full-size random pipelines are built for SDXL only")
        built = full_sdxl_parts()
        widths = built.pop("widths")
    else:
        built, widths = dict(vae=tiny_vae(), unet=tiny_unet(sdxl)), (TINY_TEXT_WIDTH, TINY_TEXT_WIDTH)
    parts = dict(**built, scheduler=scheduler(), tokenizer=tokenizer,
                 text_encoder=text_encoder(False, len(tokenizer), widths[0]))
    if sdxl:
        parts |= dict(tokenizer_2=tokenizer, text_encoder_2=text_encoder(True, len(tokenizer), widths[1]))
        pipe = StableDiffusionXLPipeline(**parts)
    else:
        pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def save_dmd2_unet(base: Path, path: Path, seed: int, dtype: torch.dtype = torch.float16) -> Path:
    """A DMD2-style checkpoint: a plain UNet state dict, no prefix (`.bin` pickle or `.safetensors`)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base / "unet"))
    state = {k: v.to(dtype).contiguous() for k, v in unet.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    return path


def save_lora(base: Path, path: Path, seed: int, rank: int = 4) -> Path:
    """An SDXL LoRA for the base UNet's attention projections, in diffusers' weight format."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights=False))
    layers = {k: v.to(torch.float16) for k, v in get_peft_model_state_dict(unet).items()}
    StableDiffusionXLPipeline.save_lora_weights(path.parent, unet_lora_layers=layers, weight_name=path.name)
    return path


def hub_cache(cache: Path, repo: str, files: dict[str, Path], commit: str = "0" * 40) -> Path:
    """Lay files out as huggingface_hub's cache does (`models--owner--name/snapshots/<commit>/...`)."""
    import shutil

    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    for relative, source in files.items():
        target = snapshot / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy(source, target)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot
