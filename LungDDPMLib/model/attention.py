"""Spatial self-attention over all voxels of a feature map.

The published model's attention (guided-diffusion "legacy" order: heads split before q/k/v, both q and k scaled
by ch**-1/4, softmax in float32) is computed here with ``torch.nn.functional.scaled_dot_product_attention``,
which picks flash or memory-efficient kernels where available and never materialises the (N x N) weight matrix
on those paths. ``reference_attention`` keeps the literal formulation so tests can prove both agree.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import normalization, zero_module


def split_qkv(qkv: torch.Tensor, num_heads: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split fused qkv of shape (B, 3*C, N) into q, k, v of shape (B*heads, ch, N), legacy head order."""
    b, width, n = qkv.shape
    ch = width // (3 * num_heads)
    q, k, v = qkv.reshape(b * num_heads, 3 * ch, n).split(ch, dim=1)
    return q, k, v


def reference_attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The published formulation, kept as the oracle for tests (memory grows as N^2)."""
    b, _, n = qkv.shape
    q, k, v = split_qkv(qkv, num_heads)
    scale = 1.0 / math.sqrt(math.sqrt(q.shape[1]))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, n)


def sdpa_attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Same maths through SDPA: scale 1/sqrt(ch) once equals ch**-1/4 on q and on k."""
    b, _, n = qkv.shape
    q, k, v = split_qkv(qkv, num_heads)
    # SDPA wants (batch, heads, tokens, features).
    q, k, v = (t.reshape(b, num_heads, -1, n).transpose(-1, -2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(-1, -2).reshape(b, -1, n)


class AttentionBlock(nn.Module):
    """Residual self-attention: x + proj_out(attention(qkv(norm(x)))); proj_out starts at zero."""

    def __init__(self, channels: int, num_heads: int = 1, use_sdpa: bool = True) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.use_sdpa = use_sdpa
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        attend = sdpa_attention if self.use_sdpa else reference_attention
        h = self.proj_out(attend(qkv, self.num_heads))
        return (flat + h).reshape(b, c, *spatial)
