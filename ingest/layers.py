"""Find a model's hookable layers and their output shapes by a dry run on the `meta` device.

On `meta` tensors carry shapes but no data, so even a multi-GB UNet is "run" in a second with no
weights and no memory; the shapes come from the real forward code, not from a hand-written table.
A model of at most `CPU_DRY_RUN_PARAMETERS` parameters (the embedded digits models) runs on the CPU
instead: PyTorch's meta kernels import `torch._dynamo` on first use (~1 s per process), longer than
building and running such a model (~40 ms).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math

import torch

from ingest.capture import primary_output
from ingest.models.presets import ModelSpec

META = torch.device("meta")
CPU_DRY_RUN_PARAMETERS = 20_000_000


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    name: str
    shape: tuple[int, ...]  # output shape of one sample, (C, H, W)

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class UnknownLayerError(ValueError):
    pass


@functools.lru_cache(maxsize=32)
def discover_layers(spec: ModelSpec) -> tuple[LayerInfo, ...]:
    """Every hookable layer of `spec` in forward order, with its per-sample output shape (cached)."""
    with META:
        denoiser = spec.build()
    device = META
    if sum(parameter.numel() for parameter in denoiser.parameters()) <= CPU_DRY_RUN_PARAMETERS:
        device = torch.device("cpu")
        with device:
            denoiser = spec.build()
    shapes: dict[str, tuple[int, ...]] = {}
    layers = spec.hookable_layers(denoiser)

    def recorder(name: str):
        def hook(_module, _inputs, output) -> None:
            shapes.setdefault(name, tuple(primary_output(output).shape[1:]))

        return hook

    handles = [module.register_forward_hook(recorder(name)) for name, module in layers.items()]
    try:
        with torch.no_grad():
            denoiser(*spec.example_inputs(1, device))
    finally:
        for handle in handles:
            handle.remove()
    return tuple(LayerInfo(name, shapes[name]) for name in shapes)  # in the order they fired


def select_layers(available: list[LayerInfo], requested: str | list[str] | None) -> list[LayerInfo]:
    """Pick layers by name or glob (`dec.*`, comma-separated); None or 'all' means every layer."""
    if requested is None or requested == "all" or requested == ["all"]:
        return list(available)
    patterns = [p.strip() for p in (requested.split(",") if isinstance(requested, str) else requested)]
    patterns = [p for p in patterns if p]
    chosen: list[LayerInfo] = []
    for pattern in patterns:
        matches = [info for info in available if fnmatch.fnmatchcase(info.name, pattern)]
        if not matches:
            raise UnknownLayerError(
                f"unknown layer {pattern!r}; valid layers: {', '.join(i.name for i in available)}"
            )
        chosen.extend(m for m in matches if m not in chosen)
    if not chosen:
        raise UnknownLayerError("no layers requested; name at least one layer or 'all'")
    order = {info.name: i for i, info in enumerate(available)}
    return sorted(chosen, key=lambda info: order[info.name])
