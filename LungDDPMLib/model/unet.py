"""The 3D UNet denoiser.

Topology (guided-diffusion, dims=3): an input conv, then per level ``num_res_blocks`` residual blocks (with
attention at ``attention_levels``) and a stride-2 downsample between levels; a middle block
(res, attention, res); the mirrored decoder with skip concatenations and trilinear upsampling; and a
zero-initialised output conv. Module names follow the published checkpoint so its weights load unchanged.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..config import UNetConfig
from .attention import AttentionBlock
from .layers import Downsample, ResBlock, TimestepSequential, Upsample, normalization, timestep_embedding, zero_module


class UNet3D(nn.Module):
    """Predicts epsilon from ``cat([x_t, layout channels])`` and integer (or fractional) timesteps.

    Example:
        >>> from LungDDPMLib.config import preset
        >>> net = UNet3D(preset("tiny").unet)
        >>> net(torch.zeros(1, 3, 16, 16, 16), torch.tensor([5])).shape
        torch.Size([1, 1, 16, 16, 16])
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        mc = config.model_channels
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, emb_dim, cout, config.dropout)

        def attn(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, config.num_heads)

        ch = mc * config.channel_mult[0]
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv3d(config.in_channels, ch, 3, padding=1))])
        skip_chans: List[int] = [ch]
        last = len(config.channel_mult) - 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: List[nn.Module] = [res(ch, mc * mult)]
                ch = mc * mult
                if level in config.attention_levels:
                    layers.append(attn(ch))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chans.append(ch)
            if level != last:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                skip_chans.append(ch)

        self.middle_block = TimestepSequential(res(ch, ch), attn(ch), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), mc * mult)]
                ch = mc * mult
                if level in config.attention_levels:
                    layers.append(attn(ch))
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(), zero_module(nn.Conv3d(ch, config.out_channels, 3, padding=1))
        )

    def set_attention_backend(self, use_sdpa: bool) -> None:
        """Switch every attention block between SDPA (default) and the literal published formulation."""
        for module in self.modules():
            if isinstance(module, AttentionBlock):
                module.use_sdpa = use_sdpa

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (B, in_channels, D, H, W); spatial sizes divisible by ``config.downsample_factor``.
            t: (B,) timesteps in [0, T-1].
        Returns:
            (B, out_channels, D, H, W) predicted noise.
        """
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels, self.config.max_period)).type(x.dtype)
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
