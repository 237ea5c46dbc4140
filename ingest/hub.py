"""Model files from the Hugging Face hub through `huggingface_hub` and its cache.

Everything goes through the standard cache (`HF_HOME` / `HF_HUB_CACHE`), so `HF_HUB_OFFLINE=1` works
once files are there, and `python -m ingest download PRESET` fetches them ahead, with progress bars.
Local paths (`--checkpoint FILE`, `--base FOLDER`) bypass the hub entirely.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.models.text_to_image import TextToImageFamily  # for type hints only: hub needs no models

DMD2_REPO = "tianweiy/DMD2"
# Files of a base pipeline that sampling needs (not its UNet weights, which DMD2 replaces).
BASE_PATTERNS = ["model_index.json", "scheduler/*", "text_encoder/*", "text_encoder_2/*", "tokenizer/*",
                 "tokenizer_2/*", "vae/*", "unet/config.json"]
BASE_UNET_FP16 = "unet/diffusion_pytorch_model.fp16.safetensors"  # what the LoRA preset fuses into


@dataclasses.dataclass(frozen=True)
class HubFile:
    """One file of a hub repository."""

    repo: str
    filename: str

    def __str__(self) -> str:
        return f"hf://{self.repo}/{self.filename}"


class HubError(ValueError):
    pass


def hub_file(file: HubFile, offline_only: bool = False) -> Path:
    """Local path of a hub file, downloading it into the cache unless offline."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(file.repo, file.filename, local_files_only=offline_only))
    except LocalEntryNotFoundError:
        raise HubError(f"{file} is not in the hub cache and cannot be downloaded here (offline?); "
                       f"run `python -m ingest download` with network, or pass a local file") from None


def base_folder(family: TextToImageFamily, with_unet: bool = False, offline_only: bool = False) -> Path:
    """Local snapshot of a base pipeline's files that sampling needs; its UNet weights (fp16) only when
    `with_unet` (the LoRA preset fuses into them; the other presets replace the UNet)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = BASE_PATTERNS + ([BASE_UNET_FP16] if with_unet else [])
    try:
        return Path(snapshot_download(family.base_repo, allow_patterns=patterns, local_files_only=offline_only))
    except LocalEntryNotFoundError:
        raise HubError(f"base pipeline {family.base_repo} is not in the hub cache and cannot be downloaded "
                       "here (offline?); run `python -m ingest download` with network, or pass --base FOLDER") from None


def hub_snapshot(repo: str, patterns: list[str], offline_only: bool = False, fetch_hint: str = "") -> Path:
    """Local snapshot of the files of a hub repository that match `patterns` (an image encoder's config,
    preprocessing config and safetensors weights), downloading what is missing into the cache unless offline.
    `fetch_hint` names the command that fetches it ahead."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    hint = f"run `{fetch_hint}` with network" if fetch_hint else "fetch it with network"
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=offline_only))
    except LocalEntryNotFoundError:
        raise HubError(f"hf://{repo} is not in the hub cache and cannot be downloaded here (offline?); "
                       f"{hint}, or pass a local folder") from None


def cached_base_folder(family: TextToImageFamily) -> Path | None:
    """The cached snapshot of a base pipeline, if its UNet config is there (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(family.base_repo, "unet/config.json")
    return Path(found).parent.parent if isinstance(found, str) else None
