"""A small 3D U-Net for binary nodule segmentation, and its loss.

This is the downstream model of the "does synthetic data help?" experiment. It is deliberately small (8-16-32
channels over three levels, about 0.1 M parameters) so that two training arms and several repeats fit in minutes
on a laptop CPU; what matters is that both arms train the same network the same way, not that it is state of the
art. It is our own (no MONAI dependency).

Input: one channel, CT normalised by :func:`normalize_ct` (HU clipped to [-1000, 400] and mapped to [0, 1]: the
window keeps parenchyma, ground-glass and solid nodules apart and drops bone detail the task does not need).
Output: one channel of logits; ``sigmoid(logits) > 0.5`` is the nodule mask.

Instance normalisation makes a layer's statistics depend on the field of view, so inference should use patches of
the training size (see :func:`LungDDPMLib.downstream.train.predict_volume`), as nnU-Net does.

Example:
    >>> net = SegNet3D(seed=0)
    >>> net(torch.zeros(2, 1, 16, 24, 20)).shape
    torch.Size([2, 1, 16, 24, 20])
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HU_MIN, HU_MAX = -1000.0, 400.0


def normalize_ct(hu: np.ndarray) -> np.ndarray:
    """HU -> float32 in [0, 1] over the window [-1000, 400] HU (values outside are clipped)."""
    out = (np.asarray(hu, dtype=np.float32) - HU_MIN) / (HU_MAX - HU_MIN)
    return np.clip(out, 0.0, 1.0, out=out)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class SegNet3D(nn.Module):
    """U-Net: ``len(channels)`` levels, max-pool down, trilinear up + concatenation, 1x1x1 head.

    Any input size works: the input is padded (replicate) to a multiple of ``2 ** (levels - 1)`` and the output
    cropped back, so the network is fully convolutional.

    Args:
        channels: widths per level, e.g. ``(8, 16, 32)``.
        seed: weights depend only on this seed; the global torch RNG is left as it was.
    """

    def __init__(self, channels: Sequence[int] = (8, 16, 32), seed: int = 0) -> None:
        super().__init__()
        if len(channels) < 2 or any(int(c) < 1 for c in channels):
            raise ValueError(f"channels must be at least two positive widths, got {tuple(channels)}")
        self.channels = tuple(int(c) for c in channels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.down = nn.ModuleList([_block(cin, cout) for cin, cout in zip((1, *self.channels[:-1]), self.channels)])
            self.up = nn.ModuleList(
                [_block(self.channels[i] + self.channels[i + 1], self.channels[i]) for i in range(len(channels) - 1)]
            )
            self.head = nn.Conv3d(self.channels[0], 1, 1)
        # Channels-last activations: the same arithmetic, about 1.4x faster per training step on a CPU (oneDNN's
        # 3D convolutions prefer it; docs/evaluation.md, "The own U-Net half"). Weights follow the input's layout.
        self.to(memory_format=torch.channels_last_3d)

    @property
    def factor(self) -> int:
        """Sizes the network sees internally are multiples of this."""
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 1:
            raise ValueError(f"expected input of shape (batch, 1, D, H, W), got {tuple(x.shape)}")
        size = x.shape[2:]
        pad: List[int] = []
        for n in reversed(size):
            pad += [0, (-n) % self.factor]
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        x = x.contiguous(memory_format=torch.channels_last_3d)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool3d(x, 2))
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = F.interpolate(x, size=skips[i].shape[2:], mode="trilinear", align_corners=False)
            x = self.up[i](torch.cat([skips[i], x], dim=1))
        return self.head(x)[:, :, : size[0], : size[1], : size[2]]


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice over the whole batch plus binary cross-entropy.

    Dice is pooled over the batch (not averaged per patch) so that nodule-free patches - half of a typical batch -
    do not give a Dice of 0/0; BCE keeps a gradient on every voxel, including those patches.
    """
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    dice = (2 * inter + smooth) / (prob.sum() + target.sum() + smooth)
    return (1 - dice) + F.binary_cross_entropy_with_logits(logits, target)
