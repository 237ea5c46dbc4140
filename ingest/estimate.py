"""Storage and memory estimates computed from a model's real shapes (replaces hand-written tables).

Per-sample storage is exact for activations (pooled widths x steps x bytes per value) and an upper
bound for images (raw pixels; PNG only shrinks them). Peak generation memory comes from tracing one
batched forward pass on the `meta` device while counting the bytes of every live tensor storage,
plus the weights: the same ops as a real run, without allocating anything.
"""

from __future__ import annotations

import dataclasses
import math
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ingest.capture import pooled_width
from ingest.generator import DTYPES
from ingest.layers import META, LayerInfo
from ingest.models.presets import ModelSpec

THUMBNAIL_SIDE = 64  # thumbnails are at most this many pixels on their longer side


class PeakMemoryTracer(TorchDispatchMode):
    """Counts live tensor-storage bytes op by op and remembers the peak."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, list[int]] = {}  # storage id -> [bytes, tensors referring to it]
        self.current = 0
        self.peak = 0

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor):
                self._track(item)
        return out


def peak_forward_bytes(spec: ModelSpec, batch: int, dtype: torch.dtype = torch.float32) -> tuple[int, int]:
    """(weights bytes, peak activation bytes) of one no-grad denoiser call at `batch`."""
    with META:
        denoiser = spec.build().to(dtype)
    weights = sum(t.numel() * t.element_size() for t in list(denoiser.parameters()) + list(denoiser.buffers()))
    inputs = spec.example_inputs(batch, META)
    with torch.no_grad(), PeakMemoryTracer() as tracer:
        denoiser(*inputs)
    return weights, tracer.peak


@dataclasses.dataclass(frozen=True)
class Estimate:
    image_bytes: int  # per sample, upper bound
    thumbnail_bytes: int  # per sample, upper bound
    activation_bytes: int  # per sample, exact
    n: int
    batch: int
    weight_bytes: int
    peak_activation_bytes: int

    @property
    def sample_bytes(self) -> int:
        return self.image_bytes + self.thumbnail_bytes + self.activation_bytes

    @property
    def total_bytes(self) -> int:
        return self.sample_bytes * self.n

    @property
    def peak_generation_bytes(self) -> int:
        return self.weight_bytes + self.peak_activation_bytes


def estimate(
    spec: ModelSpec,
    layers: list[LayerInfo],
    poolings: list[str],
    n: int,
    batch: int,
    dtype: str = "fp32",
    vector_bytes: int = 4,
) -> Estimate:
    """Bytes per sample and in total for `n` samples, and peak generation memory at `batch`."""
    if n < 1 or batch < 1:
        raise ValueError("--n and --batch must be positive")
    height, width, channels = spec.image_shape
    scale = min(1.0, THUMBNAIL_SIDE / max(height, width))
    thumbnail = 0 if scale == 1.0 else math.ceil(height * scale) * math.ceil(width * scale) * channels
    per_step = sum(pooled_width(layer.channels, p) for layer in layers for p in poolings) * vector_bytes
    weights, peak = peak_forward_bytes(spec, batch, DTYPES[dtype])
    return Estimate(
        image_bytes=height * width * channels,
        thumbnail_bytes=thumbnail,
        activation_bytes=per_step * spec.denoiser_calls,
        n=n,
        batch=batch,
        weight_bytes=weights,
        peak_activation_bytes=peak,
    )


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
