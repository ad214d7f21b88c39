"""Building blocks of the UNet, named so that their state-dict keys match the published checkpoint.

The attribute names (``in_layers``, ``emb_layers``, ``out_layers``, ``skip_connection``, ``op``, ``conv``) and the
positions inside each ``nn.Sequential`` are part of the checkpoint format: renaming one breaks loading of the
released Lung-DDPM weights, which the test-suite checks against the reference key list.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import UNetConfig


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype, as the published model does (stable under bf16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(UNetConfig.num_groups(channels), channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so each residual branch starts as the identity (stable early training)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: cosines first, then sines.

    The published model uses ``max_period=1000`` rather than the usual 10000; using the wrong one silently
    degrades the released weights, so it is a configuration field.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepBlock(nn.Module):
    """A module whose forward takes the time embedding as a second argument."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class TimestepSequential(nn.Sequential):
    """Sequential container that passes the time embedding to the children that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """Stride-2 3x3x3 convolution (halves every spatial axis)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv3d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Trilinear 2x interpolation followed by a 3x3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)
        return self.conv(x)


class ResBlock(TimestepBlock):
    """Residual block with an additive time embedding (no scale-shift norm, as published)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv3d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            normalization(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv3d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection: nn.Module = (
            nn.Identity() if out_channels == channels else nn.Conv3d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[:, :, None, None, None]
        return self.skip_connection(x) + self.out_layers(h)
