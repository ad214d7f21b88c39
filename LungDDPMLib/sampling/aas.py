"""Anatomically Aware Sampling (AAS): keep the patient's real anatomy outside the layout.

The network generates the whole volume, but after every reverse step the *known* voxels (by default everything
that is neither lung nor nodule) are replaced by the real reference CT noised to the level the step landed on,
so the synthetic lungs and nodules grow inside real anatomy and meet it without a seam. After the last step the
known voxels are set to the reference exactly.

The published implementation pastes the reference noised to the level the step started from (one level too
noisy, and still noisy after the last step: about 0.014 in [-1, 1] units). ``faithful=True`` reproduces that for
comparison only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..diffusion.schedule import NoiseSchedule
from ..errors import InputError
from .samplers import NoiseFn


@dataclass(frozen=True)
class AASConfig:
    """Settings of Anatomically Aware Sampling.

    Attributes:
        enabled: blend the reference into the known region at all.
        blend_from: blend after every step that starts at a level ``<= blend_from`` (levels 0..T-1), as the
            published ``--blend_from`` does (its loop blends when ``i <= blend_from``): ``None`` or any value >= T-1
            blends after every step, 0 after a step from level 0 only (the last DDPM step). Lower values let the
            model shape the whole volume at the noisiest levels first. To switch blending off, set ``enabled=False``.
        faithful: reproduce the published off-by-one (for comparisons only; the output never equals the reference);
            with ``blend_from=B`` it is the published sampler run with ``--blend_from B``.
        feather_voxels: width of a soft seam grown into the generated region (0 = hard edge). Known voxels
            still end exactly equal to the reference.
    """

    enabled: bool = True
    blend_from: Optional[int] = None
    faithful: bool = False
    feather_voxels: int = 0

    def __post_init__(self) -> None:
        def whole(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if not whole(self.feather_voxels) or self.feather_voxels < 0:
            raise InputError(f"feather_voxels must be a whole number of voxels >= 0, got {self.feather_voxels!r}")
        if self.blend_from is not None and (not whole(self.blend_from) or self.blend_from < 0):
            raise InputError(f"blend_from must be a level >= 0 (or None for every step), got {self.blend_from!r}")


def seam_weights(known: torch.Tensor, width: int) -> torch.Tensor:
    """Blend weights: 1 on known voxels, falling linearly to 0 over ``width`` voxels into the unknown region.

    Distance is the chessboard (26-neighbour) distance, grown by repeated 3x3x3 max-pooling, which stays on the
    tensor's device and needs no SciPy.
    """
    weight = known.float()
    grown = weight
    for d in range(1, width + 1):
        bigger = F.max_pool3d(grown, kernel_size=3, stride=1, padding=1)
        ring = (bigger > 0) & (grown == 0)
        weight = torch.where(ring, torch.full_like(weight, 1.0 - d / (width + 1)), weight)
        grown = bigger
    return weight


class AASBlender:
    """The per-step hook that pastes the (noised) reference into the known region."""

    def __init__(
        self,
        schedule: NoiseSchedule,
        reference: torch.Tensor,
        known: torch.Tensor,
        config: AASConfig,
        noise: NoiseFn,
    ) -> None:
        if reference.shape != known.shape:
            raise InputError(f"reference {tuple(reference.shape)} and known mask {tuple(known.shape)} differ in shape")
        self.schedule = schedule
        self.host = schedule.host()
        self.reference = reference
        self.known = known.bool()
        self.config = config
        self.noise = noise
        self.blend_from = schedule.num_timesteps if config.blend_from is None else config.blend_from
        self.ring: Optional[torch.Tensor] = None
        self.ring_weight: Optional[torch.Tensor] = None
        if config.feather_voxels:
            w = seam_weights(self.known, config.feather_voxels)
            self.ring = (w > 0) & ~self.known
            self.ring_weight = w

    def _noised(self, level: int) -> torch.Tensor:
        """q_sample of the reference at ``level`` with scalars read once at construction (no per-step GPU sync)."""
        if level < 0:
            return self.reference
        a, s = self.host.sqrt_alphas_cumprod[level], self.host.sqrt_one_minus_alphas_cumprod[level]
        return a * self.reference + s * self.noise()

    def _paste(self, x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        x = torch.where(self.known, value, x)  # exact copy on known voxels
        if self.ring is not None:
            # Plain kernels, not torch.lerp: its vectorised body uses a fused multiply-add that its scalar tail need
            # not, so a voxel's value could depend on where a thread's chunk ends, i.e. on the batch size.
            x = torch.where(self.ring, x + self.ring_weight * (value - x), x)
        return x

    def start(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """Put the reference, noised to the starting level, into the initial noise (not done by the original)."""
        if self.config.faithful or level > self.blend_from:
            return x
        return self._paste(x, self._noised(level))

    def __call__(self, x: torch.Tensor, i: int, t_from: int, t_to: int) -> torch.Tensor:
        if t_from > self.blend_from:
            return x
        level = t_from if self.config.faithful else t_to
        return self._paste(x, self._noised(level))
