"""EDM's preconditioned ADM UNet (`EDMPrecond` around `DhariwalUNet`), the ImageNet-64 DMD2 generator.

Written from the architecture description in `shared/docs/dmd2_models.md`; parameter and buffer names
match DMD2's checkpoints exactly (`model.enc.64x64_block0.conv0.weight`, ...), so a DMD2 state dict loads
strictly. Reading order: primitives, the residual block, the UNet, the preconditioner, the config.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------------
# Primitives
# --------------------------------------------------------------------------------------------------


class Conv2d(nn.Module):
    """A conv with optional 2x resampling in front of it.

    `kernel=0` means a pure resampler with no weight or bias (used by skip paths of resampling
    blocks). Resampling blocks own a persistent `resample_filter` buffer [1,1,2,2] = 0.25: down is a
    depthwise stride-2 conv with it (2x2 average pooling), up a depthwise stride-2 transposed conv with
    4x it (nearest-neighbour upsampling).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        bias: bool = True,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        assert not (up and down)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel, kernel)) if kernel else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if kernel and bias else None
        if up or down:
            self.register_buffer("resample_filter", torch.full((1, 1, 2, 2), 0.25))
        else:
            self.resample_filter = None
        if self.weight is not None:
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            filt = (self.resample_filter * 4).to(x.dtype).tile(self.in_channels, 1, 1, 1)
            x = F.conv_transpose2d(x, filt, groups=self.in_channels, stride=2)
        if self.down:
            filt = self.resample_filter.to(x.dtype).tile(self.in_channels, 1, 1, 1)
            x = F.conv2d(x, filt, groups=self.in_channels, stride=2)
        if self.weight is not None:
            x = F.conv2d(x, self.weight.to(x.dtype), padding=self.weight.shape[-1] // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(32, C//4) groups, eps 1e-5, affine (EDM's choice for every norm)."""
    return nn.GroupNorm(num_groups=min(32, channels // 4), num_channels=channels, eps=1e-5)


def noise_embedding(c_noise: torch.Tensor, channels: int) -> torch.Tensor:
    """Sinusoidal embedding of the noise level: [cos(c·f), sin(c·f)], f_i = 10000^(-i/(channels/2))."""
    half = channels // 2
    freqs = (1.0 / 10000) ** (torch.arange(half, dtype=torch.float32, device=c_noise.device) / half)
    angles = c_noise.to(torch.float32).outer(freqs)
    return torch.cat([angles.cos(), angles.sin()], dim=1)


# --------------------------------------------------------------------------------------------------
# Residual block with optional resampling and self-attention
# --------------------------------------------------------------------------------------------------


class UNetBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        channels_per_head: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout = dropout
        # Registration order matters only for readability of state dicts; it follows DMD2's.
        self.norm0 = group_norm(in_channels)
        self.conv0 = Conv2d(in_channels, out_channels, kernel=3, up=up, down=down)
        self.affine = nn.Linear(emb_channels, out_channels * 2)
        self.norm1 = group_norm(out_channels)
        self.conv1 = Conv2d(out_channels, out_channels, kernel=3)
        self.skip = None
        if out_channels != in_channels or up or down:
            # 1x1 projection when the width changes, otherwise a weightless resampler.
            kernel = 1 if out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel=kernel, up=up, down=down)
        if self.num_heads:
            self.norm2 = group_norm(out_channels)
            self.qkv = Conv2d(out_channels, out_channels * 3, kernel=1)
            self.proj = Conv2d(out_channels, out_channels, kernel=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        orig = x
        x = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb).unsqueeze(2).unsqueeze(3).to(x.dtype).chunk(2, dim=1)
        x = F.silu(shift + self.norm1(x) * (scale + 1))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = x + (self.skip(orig) if self.skip is not None else orig)

        if self.num_heads:
            n, c, h, w = x.shape
            # q, k, v are interleaved per channel: (N*heads, C/heads, 3, H*W).
            qkv = self.qkv(self.norm2(x)).reshape(n * self.num_heads, c // self.num_heads, 3, h * w)
            q, k, v = qkv.unbind(2)
            scale_qk = 1.0 / math.sqrt(k.shape[1])
            weights = torch.einsum("ncq,nck->nqk", q.float(), (k * scale_qk).float()).softmax(dim=2)
            attended = torch.einsum("nqk,nck->ncq", weights.to(v.dtype), v)
            x = self.proj(attended.reshape(n, c, h, w)) + x
        return x


# --------------------------------------------------------------------------------------------------
# The UNet
# --------------------------------------------------------------------------------------------------


class DhariwalUNet(nn.Module):
    """The ADM UNet as configured in EDM: encoder/decoder `ModuleDict`s keyed like `64x64_block0`."""

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        model_channels: int = 192,
        channel_mult: tuple[int, ...] = (1, 2, 3, 4),
        channel_mult_emb: int = 4,
        num_blocks: int = 3,
        attn_resolutions: tuple[int, ...] = (32, 16, 8),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.model_channels = model_channels
        emb_channels = model_channels * channel_mult_emb
        block = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout)

        self.map_layer0 = nn.Linear(model_channels, emb_channels)
        self.map_layer1 = nn.Linear(emb_channels, emb_channels)
        self.map_label = nn.Linear(label_dim, emb_channels, bias=False) if label_dim else None

        self.enc = nn.ModuleDict()
        width = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(width, model_channels * mult, kernel=3)
                width = model_channels * mult
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(width, width, down=True, **block)
            for i in range(num_blocks):
                out = model_channels * mult
                self.enc[f"{res}x{res}_block{i}"] = UNetBlock(
                    width, out, attention=res in attn_resolutions, **block
                )
                width = out
        skip_widths = [m.out_channels for m in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(width, width, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(width, width, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(width, width, up=True, **block)
            for i in range(num_blocks + 1):
                out = model_channels * mult
                self.dec[f"{res}x{res}_block{i}"] = UNetBlock(
                    width + skip_widths.pop(), out, attention=res in attn_resolutions, **block
                )
                width = out

        self.out_norm = group_norm(width)
        self.out_conv = Conv2d(width, out_channels, kernel=3)
        self._zero_init_residual_outputs()

    def _zero_init_residual_outputs(self) -> None:
        """Start every residual branch and the output at zero, as EDM does (matters only for training)."""
        if self.out_conv.weight.is_meta:
            return
        zeroed = [self.out_conv] + [getattr(b, n) for b in self.modules() if isinstance(b, UNetBlock)
                                     for n in ("conv1", "proj") if hasattr(b, n)]
        with torch.no_grad():
            for conv in zeroed:
                conv.weight.zero_()

    def forward(
        self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None
    ) -> torch.Tensor:
        dtype = self.map_layer0.weight.dtype
        emb = noise_embedding(noise_labels, self.model_channels).to(dtype)
        emb = F.silu(self.map_layer0(emb))
        emb = self.map_layer1(emb)
        if self.map_label is not None:
            emb = emb + self.map_label(class_labels.to(dtype))
        emb = F.silu(emb)

        skips = []
        for module in self.enc.values():
            x = module(x) if isinstance(module, Conv2d) else module(x, emb)
            skips.append(x)
        for module in self.dec.values():
            if x.shape[1] != module.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = module(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


# --------------------------------------------------------------------------------------------------
# Preconditioning
# --------------------------------------------------------------------------------------------------


class EDMPrecond(nn.Module):
    """Karras et al.'s preconditioning: D(x; sigma) = c_skip x + c_out F(c_in x, ln(sigma)/4, labels).

    The UNet runs in the dtype of its weights (fp32 unless the caller casts it); everything around it
    is computed in fp32, and the output is fp32.
    """

    def __init__(self, config: "EDMConfig") -> None:
        super().__init__()
        self.config = config
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self.label_dim = config.label_dim
        self.sigma_data = config.sigma_data
        self.model = DhariwalUNet(
            img_resolution=config.img_resolution,
            in_channels=config.img_channels,
            out_channels=config.img_channels,
            label_dim=config.label_dim,
            model_channels=config.model_channels,
            channel_mult=tuple(config.channel_mult),
            channel_mult_emb=config.channel_mult_emb,
            num_blocks=config.num_blocks,
            attn_resolutions=tuple(config.attn_resolutions),
            dropout=config.dropout,
        )

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
        if self.label_dim:
            if class_labels is None:
                class_labels = torch.zeros(1, self.label_dim, device=x.device)
            class_labels = class_labels.to(torch.float32).reshape(-1, self.label_dim)
        else:
            class_labels = None
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        c_noise = sigma.log() / 4
        dtype = self.model.map_layer0.weight.dtype
        f_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels)
        return c_skip * x + c_out * f_x.to(torch.float32)


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EDMConfig:
    """The subset of EDM's network kwargs that shape the generator (DMD2's `config.json` fields)."""

    img_resolution: int = 64
    img_channels: int = 3
    label_dim: int = 1000
    model_channels: int = 192
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    channel_mult_emb: int = 4
    num_blocks: int = 3
    attn_resolutions: tuple[int, ...] = (32, 16, 8)
    dropout: float = 0.0
    sigma_data: float = 0.5

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "EDMConfig":
        """Build from a DMD2/EDM config dict, ignoring fields that do not shape the network."""
        if raw.get("augment_dim", 0):
            raise ValueError("augment_dim > 0 (map_augment) is not supported: DMD2's generators use 0")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in fields}
        for key in ("channel_mult", "attn_resolutions"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


IMAGENET64 = EDMConfig()


def one_hot(labels: torch.Tensor | np.ndarray | list[int], label_dim: int) -> torch.Tensor:
    """Class ids (B,) to the float one-hot matrix (B, label_dim) the generator expects."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return F.one_hot(labels, label_dim).to(torch.float32)
