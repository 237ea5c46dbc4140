"""Fixed image encoders whose outputs are stored as a run's reference features (`python -m ingest features`).

An `Extractor` turns images into one float32 vector each: `preprocess` applies the encoder's own resize and
normalisation (PNG bytes or PIL images -> a tensor batch), and calling it runs the encoder ((n, dim) float32).
Its vectors are stored as the layer `features.<name>` of a run (`ingest.features`).

Presets (`resolve_extractor(name)`), each also reachable by a local folder or a hub repo id:

- `digits`: the small CNN of `ingest/weights/digits-features.safetensors`, trained by us on scikit-learn's
  real digits (`make digits-features-model`); its penultimate layer (64 tanh units, what the classifier
  reads) is the feature space. 8x8 grayscale in [-1, 1], as the digits generators make them.
- `clip`: CLIP's vision tower with its projection (`CLIPVisionModelWithProjection`, `image_embeds`), default
  `openai/clip-vit-large-patch14` (768-d).
- `dinov2`: DINOv2 (`Dinov2Model`, `pooler_output`: the layer-normed CLS token), default `facebook/dinov2-base`
  (768-d).

A hub repo resolves through huggingface_hub's cache (`ingest.hub.hub_snapshot`): offline
(`HF_HUB_OFFLINE=1`) it is read from the cache, or refused in one line naming `python -m ingest download`.
Preprocessing follows the folder's `preprocessor_config.json` (size, crop, resampling, mean and std, as
transformers' PIL processors apply them); without that file, the family's published defaults. Weights
are read with safetensors only (never pickle).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

WEIGHTS_DIR = Path(__file__).parent / "weights"
DIGITS_WEIGHTS = WEIGHTS_DIR / "digits-features.safetensors"
HUB_PATTERNS = ["config.json", "preprocessor_config.json", "*.safetensors", "*.safetensors.index.json"]
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a layer name's tail: a folder of the lake
HUB_REPO_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
OPENAI_CLIP_MEAN, OPENAI_CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ExtractorError(ValueError):
    """An extractor that cannot be resolved or loaded (one line: problem; fix)."""


# --- the extractor --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Extractor:
    """A fixed image encoder: images in, one float32 vector of `dim` each out."""

    name: str  # the run's layer is `features.<name>`
    dim: int
    source: str  # where the weights came from: the shipped file, a folder, or hf://repo@revision
    network: nn.Module  # preprocessed batch -> (n, dim)
    transform: Callable[[Image.Image], torch.Tensor]  # one image -> its input tensor (C, H, W), float32
    device: torch.device = torch.device("cpu")

    @property
    def layer(self) -> str:
        return f"features.{self.name}"

    def identity(self) -> dict:
        """What makes its vectors what they are (stored with them; a resumed extraction must match it)."""
        return {"extractor": self.name, "source": self.source, "dim": self.dim}

    def preprocess(self, images: Sequence[bytes | Image.Image]) -> torch.Tensor:
        """PNG (or any Pillow-readable) bytes or PIL images -> (n, C, H, W) float32, on the CPU."""
        return torch.stack([self.transform(as_image(image)) for image in images])

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """(n, dim) float32 features of a preprocessed batch."""
        out = self.network(batch.to(self.device))
        return np.ascontiguousarray(out.float().cpu().numpy(), dtype=np.float32)


def as_image(image: bytes | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    with Image.open(io.BytesIO(image)) as opened:
        opened.load()
        return opened


# --- the digits feature network -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DigitsNetConfig:
    """Three 3x3 convolutions (8x8 -> 4x4 -> 2x2), a `features`-wide tanh layer, a linear classifier."""

    channels: tuple[int, int, int] = (16, 32, 32)
    features: int = 64
    classes: int = 10

    def to_dict(self) -> dict:
        return {"model_type": "DigitsFeatureNet", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, raw: dict) -> "DigitsNetConfig":
        if raw.get("model_type") != "DigitsFeatureNet":
            raise ExtractorError(f"model_type {raw.get('model_type')!r} is not DigitsFeatureNet")
        return cls(tuple(raw["channels"]), int(raw["features"]), int(raw["classes"]))


class DigitsFeatureNet(nn.Module):
    """A small digit classifier whose penultimate layer is the digits feature space."""

    def __init__(self, config: DigitsNetConfig = DigitsNetConfig()) -> None:
        super().__init__()
        c1, c2, c3 = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4 -> 2x2
            nn.Flatten(), nn.Linear(c3 * 4, config.features), nn.Tanh(),
        )
        self.head = nn.Linear(config.features, config.classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(n, 1, 8, 8) in [-1, 1] -> (n, features): the penultimate layer."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


class DigitsFeatures(nn.Module):
    """The extractor's network: a `DigitsFeatureNet`'s penultimate layer."""

    def __init__(self, net: DigitsFeatureNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images)


def digits_transform(image: Image.Image) -> torch.Tensor:
    """Grayscale 8x8 in [-1, 1], the inverse of the generators' ((x + 1) * 127.5) to uint8, the scale
    `ingest.digits.load_digits_dataset` gives the real digits (their 0..16 mapped onto [-1, 1])."""
    grey = image.convert("L")
    if grey.size != (8, 8):
        grey = grey.resize((8, 8), Image.Resampling.BOX)
    pixels = np.asarray(grey, dtype=np.float32)
    return torch.from_numpy(pixels / 127.5 - 1.0)[None]


def load_digits_net(weights: Path) -> DigitsFeatureNet:
    """The network of a `.safetensors` file and the config JSON beside it (same stem)."""
    from safetensors.torch import load_file

    config_path = weights.with_suffix(".json")
    if not config_path.is_file():
        raise ExtractorError(f"{weights}: no {config_path.name} beside it; a digits feature network is a "
                             ".safetensors file with its config (make digits-features-model writes both)")
    net = DigitsFeatureNet(DigitsNetConfig.from_dict(json.loads(config_path.read_text())))
    try:
        net.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as err:
        raise ExtractorError(f"{weights}: not the weights of its config ({str(err).splitlines()[0]})") from None
    return net.eval().requires_grad_(False)


def digits_extractor(weights: Path = DIGITS_WEIGHTS, name: str = "digits") -> Extractor:
    net = load_digits_net(weights)
    return Extractor(name, net.head.in_features, str(weights.resolve()), DigitsFeatures(net), digits_transform)


# --- transformers image encoders: CLIP's vision tower, DINOv2 ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """The PIL processors' steps: RGB, resize (shortest edge or exact size), centre crop, rescale, normalise."""

    size: dict  # {"shortest_edge": s} or {"height": h, "width": w}
    crop: dict | None  # {"height": h, "width": w}, or None for no crop
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resample: int = Image.Resampling.BICUBIC
    rescale: float = 1 / 255

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        image = image.resize(self.resized(image.width, image.height), resample=self.resample)
        if self.crop is not None:
            height, width = self.crop["height"], self.crop["width"]
            top, left = (image.height - height) // 2, (image.width - width) // 2
            image = image.crop((left, top, left + width, top + height))  # zero-padded where it overhangs
        pixels = (np.asarray(image, dtype=np.float64) * self.rescale).astype(np.float32)  # as transformers rescales
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step (transformers' `get_resize_output_image_size`)."""
        if "shortest_edge" in self.size:
            short, long = sorted((width, height))
            new_short, new_long = self.size["shortest_edge"], int(self.size["shortest_edge"] * long / short)
            return (new_short, new_long) if width <= height else (new_long, new_short)
        return self.size["width"], self.size["height"]


def as_size(value: int | dict, square: bool) -> dict:
    """A processor config's `size` / `crop_size` (an int or a dict) as a dict."""
    if isinstance(value, dict):
        return value
    return {"height": value, "width": value} if square else {"shortest_edge": value}


@dataclasses.dataclass(frozen=True)
class Family:
    """A transformers image encoder the extractors know."""

    name: str
    model_types: tuple[str, ...]  # config.json model_type values
    model_class: str  # in transformers
    output: str  # the output field that is the feature vector
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_to: int | None  # default shortest edge when the folder has no preprocessor config (None: crop size)
    crop_to: int | None  # default crop (None: the config's image_size)

    def transform(self, folder: Path, image_size: int) -> ImageTransform:
        path = folder / "preprocessor_config.json"
        raw = json.loads(path.read_text()) if path.is_file() else {}
        crop = as_size(raw.get("crop_size", self.crop_to or image_size), square=True)
        size = as_size(raw.get("size", self.resize_to or crop["height"]), square=False)
        return ImageTransform(size, crop if raw.get("do_center_crop", True) else None,
                              tuple(raw.get("image_mean", self.mean)), tuple(raw.get("image_std", self.std)),
                              int(raw.get("resample", Image.Resampling.BICUBIC)),
                              float(raw.get("rescale_factor", 1 / 255)))


FAMILIES = {
    "clip": Family("clip", ("clip", "clip_vision_model"), "CLIPVisionModelWithProjection", "image_embeds",
                   OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, None, None),
    "dinov2": Family("dinov2", ("dinov2",), "Dinov2Model", "pooler_output", IMAGENET_MEAN, IMAGENET_STD, 256, 224),
}


class VisionOutput(nn.Module):
    """A transformers vision model reduced to one output field: pixel_values -> (n, dim)."""

    def __init__(self, model: nn.Module, output: str) -> None:
        super().__init__()
        self.model, self.output = model, output

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(pixel_values=pixel_values), self.output)


def family_of(folder: Path) -> Family:
    """The family of the model saved in `folder`, from its config.json's model_type."""
    config = folder / "config.json"
    if not config.is_file():
        raise ExtractorError(f"{folder}: no config.json; an extractor folder holds a transformers CLIP or "
                             "DINOv2 model (as save_pretrained writes it)")
    model_type = json.loads(config.read_text()).get("model_type")
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise ExtractorError(f"{folder} holds a {model_type!r} model; the extractors know CLIP and DINOv2 "
                         f"(model_type {', '.join(t for f in FAMILIES.values() for t in f.model_types)})")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' loading report (e.g. a full CLIP checkpoint's unused text tower) and progress bars kept
    off the terminal."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def load_vision_model(folder: Path, family: Family) -> nn.Module:
    """The family's vision model from a folder, in fp32, from safetensors only; refused when weights are missing."""
    import transformers

    if not any(folder.glob("*.safetensors")):
        raise ExtractorError(f"{folder}: no .safetensors weights (pickled weights are never loaded); "
                             "save the model with save_pretrained(safe_serialization=True)")
    model_class = getattr(transformers, family.model_class)
    try:
        with quiet_transformers():
            model, info = model_class.from_pretrained(folder, dtype=torch.float32, use_safetensors=True,
                                                      local_files_only=True, output_loading_info=True)
    except Exception as err:  # shapes of another model, a damaged file: transformers' and safetensors' errors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ExtractorError(f"{folder}: cannot load a {family.name} model from it ({first}); is it a "
                             f"{family.name} checkpoint saved with save_pretrained?") from err
    missing = sorted(info.get("missing_keys", []))
    if missing:
        raise ExtractorError(f"{folder}: its weights lack {len(missing)} tensors of a {family.name} vision model "
                             f"(first: {missing[0]}); is it a {family.name} checkpoint?")
    return model.eval().requires_grad_(False)


def vision_extractor(folder: Path, source: str, name: str | None = None) -> Extractor:
    """A CLIP or DINOv2 extractor from a model folder (a local one, or a hub snapshot)."""
    family = family_of(folder)
    model = load_vision_model(folder, family)
    network = VisionOutput(model, family.output)
    image_size = getattr(model.config, "image_size", 224)
    transform = family.transform(folder, image_size if isinstance(image_size, int) else image_size[0])
    with torch.inference_mode():
        dim = network(transform(Image.new("RGB", (8, 8)))[None]).shape[-1]
    return Extractor(name or family.name, int(dim), source, network, transform)


# --- presets and resolution -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExtractorPreset:
    name: str
    summary: str
    repo: str | None = None  # hub repo of a transformers preset; None for the shipped digits network


PRESETS: dict[str, ExtractorPreset] = {
    "digits": ExtractorPreset("digits", "our digits CNN (shipped, 64-d penultimate layer), for the embedded digits"),
    "clip": ExtractorPreset("clip", "CLIP ViT-L/14 vision tower + projection, image_embeds (768-d)",
                            "openai/clip-vit-large-patch14"),
    "dinov2": ExtractorPreset("dinov2", "DINOv2 ViT-B/14, pooled CLS token (768-d)", "facebook/dinov2-base"),
}


def hub_folder(repo: str, offline_only: bool = False, preset: str | None = None) -> Path:
    """A hub repo's config, preprocessing config and safetensors weights, through the cache."""
    from ingest.hub import hub_snapshot

    return hub_snapshot(repo, HUB_PATTERNS, offline_only, f"python -m ingest download {preset or repo}")


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ExtractorError(f"invalid feature name {name!r}; use letters, digits, '_', '.', '-' (at most 64)")
    return name


def unknown(spec: str) -> ExtractorError:
    return ExtractorError(f"unknown extractor {spec!r}; choose {', '.join(PRESETS)}, a model folder, a digits "
                          ".safetensors file, or a hub repo id (org/name)")


def load_extractor(spec: str, name: str | None = None, offline_only: bool = False) -> Extractor:
    """The extractor a preset name, a local folder or file, or a hub repo id names, on the CPU."""
    if not spec.strip():
        raise unknown(spec)
    preset = PRESETS.get(spec)
    if preset is not None:
        if preset.repo is None:
            return digits_extractor(name=check_name(name or preset.name))
        folder = hub_folder(preset.repo, offline_only, preset=spec)
        return vision_extractor(folder, f"hf://{preset.repo}@{folder.name}", check_name(name or preset.name))
    path = Path(spec).expanduser()
    if path.is_dir():
        return vision_extractor(path, str(path.resolve()), name and check_name(name))
    if path.is_file() and path.suffix == ".safetensors":
        return digits_extractor(path, check_name(name or "digits"))
    if path.exists() or not HUB_REPO_PATTERN.fullmatch(spec):
        raise unknown(spec)
    folder = hub_folder(spec, offline_only)
    return vision_extractor(folder, f"hf://{spec}@{folder.name}", name and check_name(name))


def resolve_extractor(spec: str, device: str | torch.device = "cpu", name: str | None = None,
                      offline_only: bool = False) -> Extractor:
    """`load_extractor`, moved to `device` (auto: cuda when torch sees one)."""
    extractor = load_extractor(spec, name, offline_only)
    extractor.device = resolve_device(device)
    extractor.network.to(extractor.device)
    return extractor


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ExtractorError(f"unknown --device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ExtractorError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    return resolved
