"""Capture pooled activations of chosen UNet layers with forward hooks.

Full feature maps are far too big to keep (all 37 ImageNet-64 blocks are ~26 MB per image), so each
hook pools its layer's output on the model's device right away and keeps only the small result:

- `mean`:  average over H x W              -> C values
- `max`:   maximum over H x W              -> C values
- `grid2`: 2 x 2 average pooling, flattened channel-major (c, row, col) -> 4*C values

Hooks never move data to the host (no `.cpu()`, `.item()` or printing), so GPU work is not
serialised; the caller collects everything once per batch. A sampler tags each denoiser evaluation
with its step index through `capture.step`; evaluations it does not want recorded (e.g. Heun's
corrector) run inside `capture.paused()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

PoolFn = Callable[[torch.Tensor], torch.Tensor]


def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.float().mean(dim=(2, 3))


def _max(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=(2, 3)).float()


def _grid2(x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x.float(), 2).flatten(1)


POOLINGS: dict[str, PoolFn] = {"mean": _mean, "max": _max, "grid2": _grid2}
POOLED_WIDTH: dict[str, Callable[[int], int]] = {"mean": lambda c: c, "max": lambda c: c, "grid2": lambda c: 4 * c}


def pool(x: torch.Tensor, method: str) -> torch.Tensor:
    """Pool a (B, C, H, W) feature map into (B, D) float32 vectors with the named method."""
    if method not in POOLINGS:
        raise ValueError(f"unknown pooling {method!r}; choose from {', '.join(POOLINGS)}")
    if x.ndim != 4:
        raise ValueError(f"pooling needs a (B, C, H, W) feature map, got shape {tuple(x.shape)}")
    return POOLINGS[method](x)


def pooled_width(channels: int, method: str) -> int:
    """Length of the pooled vector for a layer with `channels` channels."""
    return POOLED_WIDTH[method](channels)


def primary_output(output: object) -> torch.Tensor:
    """The feature map of a module's output; diffusers' down blocks return (hidden, residuals)."""
    while isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"layer output is {type(output).__name__}, not a tensor")
    return output


CaptureKey = tuple[str, int, str]  # (layer, step, pooling)


class ActivationCapture:
    """Context manager that records pooled outputs of `layers` (name -> module) while active.

    >>> with ActivationCapture(layers, ["mean"]) as capture:
    ...     capture.step = 0
    ...     denoiser(x, sigma, labels)
    >>> vectors = capture.collect()   # {(layer, step, pooling): (B, D) tensor on the model's device}

    Hooks are removed on exit, also when the forward pass raises.
    """

    def __init__(self, layers: dict[str, nn.Module], poolings: Sequence[str]) -> None:
        if not layers:
            raise ValueError("no layers to capture")
        unknown = [p for p in poolings if p not in POOLINGS]
        if unknown or not poolings:
            raise ValueError(f"unknown pooling {unknown or poolings}; choose from {', '.join(POOLINGS)}")
        self.layers = dict(layers)
        self.poolings = list(poolings)
        self.step = 0
        self._enabled = True
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._captured: dict[CaptureKey, torch.Tensor] = {}

    def __enter__(self) -> "ActivationCapture":
        try:
            for name, module in self.layers.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Run denoiser evaluations that should not be recorded."""
        previous, self._enabled = self._enabled, False
        try:
            yield
        finally:
            self._enabled = previous

    def _make_hook(self, name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if not self._enabled:
                return
            feature_map = primary_output(output).detach()
            for method in self.poolings:
                key = (name, self.step, method)
                if key in self._captured:
                    raise RuntimeError(
                        f"layer {name} fired twice in step {self.step}; the sampler must advance "
                        "capture.step or pause capture between denoiser evaluations"
                    )
                self._captured[key] = POOLINGS[method](feature_map)

        return hook

    def collect(self) -> dict[CaptureKey, torch.Tensor]:
        """Hand over everything captured so far and start afresh (e.g. once per batch)."""
        captured, self._captured = self._captured, {}
        return captured
