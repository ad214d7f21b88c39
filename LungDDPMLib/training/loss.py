"""The training loss and the randomness it consumes, owned by the run's seed rather than by global state.

The noise level and noise of every sample come from a generator re-seeded by (seed, update, place of the sample
in the global batch). The draw therefore does not depend on the micro-batch size or on the number of processes:
2 processes with batch 1 compute the same update as 1 process with batch 2, and resuming needs no RNG state.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..diffusion import DiffusionModel
from ..errors import InputError
from .datasets import derive_seed


def seeded_model(config: ModelConfig, seed: int) -> DiffusionModel:
    """A freshly initialised model whose weights depend only on ``seed`` (the caller's RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return DiffusionModel(config)


def nodule_channel(model: DiffusionModel) -> int:
    """Index of the model's ``nodule`` layout channel; an InputError for a model without one."""
    channels = model.config.unet.layout_channels
    if "nodule" not in channels:
        raise InputError(f"a nodule loss weight needs a model with a 'nodule' layout channel; this one has {channels}")
    return channels.index("nodule")


def nodule_weight_map(model: DiffusionModel, cond: torch.Tensor, weight: float, margin: int) -> torch.Tensor:
    """Per-voxel loss weights (B, 1, D, H, W): ``weight`` in each nodule dilated by ``margin`` voxels, 1 elsewhere.

    The nodule region is read from the model's ``nodule`` layout channel (+1 inside a nodule, -1 outside), so it is
    exactly the region the model is told about, whatever labels the dataset used.
    """
    index = nodule_channel(model)
    region = (cond[:, index : index + 1] > 0).float()
    if margin > 0:
        region = F.max_pool3d(region, kernel_size=2 * margin + 1, stride=1, padding=margin)
    return 1.0 + (float(weight) - 1.0) * region


class LossModule(nn.Module):
    """The training loss as ``forward``, so that DDP sees the call and averages the gradients.

    It calls :meth:`DiffusionModel.loss` with the layout channels ``cond`` (see :meth:`DiffusionModel.condition`) and
    ``t`` and ``noise`` drawn per sample by :func:`draw_noise`; with ``nodule_weight`` above 1, voxels in and near
    nodules count that much more (:func:`nodule_weight_map`).
    """

    def __init__(self, model: DiffusionModel, kind: str, nodule_weight: float = 1.0, nodule_margin: int = 0) -> None:
        super().__init__()
        assert kind in ("l1", "l2")
        if nodule_weight != 1.0:
            nodule_channel(model)  # refuse a model without a nodule channel now, not at the first update
        self.model = model
        self.kind = kind
        self.nodule_weight = float(nodule_weight)
        self.nodule_margin = int(nodule_margin)

    def forward(self, ct: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        weight: Optional[torch.Tensor] = None
        if self.nodule_weight != 1.0:
            weight = nodule_weight_map(self.model, cond, self.nodule_weight, self.nodule_margin)
        return self.model.loss(ct, cond, kind=self.kind, t=t, noise=noise, weight=weight)


def draw_noise(
    generator: torch.Generator, seed: int, step_index: int, first: int, ct: torch.Tensor, num_timesteps: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Noise levels (B,) and noise like ``ct`` for samples at ``first, first+1, ...`` of update ``step_index``.

    Each sample re-seeds ``generator`` (on ``ct``'s device) and draws its level, then its noise - the order
    :meth:`DiffusionModel.loss` uses - so a one-sample draw equals the engine's.
    """
    ts, noises = [], []
    for j in range(ct.shape[0]):
        generator.manual_seed(derive_seed(seed, "noise", step_index, first + j))
        ts.append(torch.randint(0, num_timesteps, (1,), device=ct.device, generator=generator))
        noises.append(torch.randn(ct.shape[1:], device=ct.device, dtype=ct.dtype, generator=generator)[None])
    return torch.cat(ts), torch.cat(noises)


@contextlib.contextmanager
def owned_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Run with the global RNG (used by dropout) seeded from the run, restoring the caller's RNG state afterwards."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)
        yield
