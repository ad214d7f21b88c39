"""One case through the published Lung-DDPM+ ``sample.py`` (3D task): crop, scale, sample, paste the cube back.

The authors' script, step by step, and where each step is here:

1. ``nib.load(...).get_fdata()`` then ``transpose(1, 2, 0)``: arrays in NIfTI order ``(j, k, i)``. SimpleITK gives
   ``(k, j, i)``, so :func:`to_script_order` swaps the first two axes.
2. The layout: lung -> 0, nodule -> 1 (every nodule class is a nodule for this model).
3. ``crop_nodule_centered_cube``: a random nodule voxel ``v`` (here drawn from ``numpy.random.default_rng(seed)``
   over ``argwhere`` in ``(j, k, i)`` order, so a seed always picks the same voxel; theirs is unseeded), start
   ``v - 32`` clipped to ``[0, n - 64]`` per axis, a 64^3 cube (the model's grid).
4. ``MinMaxScaler`` fitted on ``crop.reshape(-1, last)``: each index of the last axis (NIfTI ``i``) min-max scaled to
   [0, 1] on its own (a constant column maps to 0); then ``* 2 - 1``.
5. The nodule channel ``mask * 2 - 1``; both tensors ``transpose``d to ``(i, k, j)`` for the network.
6. :func:`~.plus_solver.sample_plus` (inversion of the real crop, DPM-Solver++ order 3, 50 steps, no paste).
7. Back to ``(j, k, i)``, ``(x + 1) / 2``, the scaler's inverse, and the whole cube written into the CT (hard edge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from ..config import is_nodule
from ..errors import InputError
from .plus_solver import EpsFn, sample_plus


@dataclass(frozen=True)
class CubeChoice:
    """The voxel the crop was centred on and the cube's start, both in SimpleITK ``(z, y, x)`` = ``(k, j, i)``."""

    voxel_zyx: Tuple[int, int, int]
    start_zyx: Tuple[int, int, int]
    size: int

    def slices_zyx(self) -> Tuple[slice, slice, slice]:
        return tuple(slice(s, s + self.size) for s in self.start_zyx)  # type: ignore[return-value]

    def to_dict(self) -> dict:
        zyx = {"voxel_zyx": list(self.voxel_zyx), "start_zyx": list(self.start_zyx), "size": self.size}
        return {**zyx, "voxel_ijk": list(self.voxel_zyx[::-1]), "start_ijk": list(self.start_zyx[::-1])}


def to_script_order(a_zyx: np.ndarray) -> np.ndarray:
    """SimpleITK ``(k, j, i)`` -> the script's ``(j, k, i)`` (its own inverse)."""
    return a_zyx.transpose(1, 0, 2)


def choose_cube(layout_zyx: np.ndarray, size: int, seed: int) -> CubeChoice:
    """The published crop rule, seeded: a random nodule voxel, start ``voxel - size // 2`` clipped inside."""
    nodule = to_script_order(is_nodule(layout_zyx))
    if tuple(np.minimum(nodule.shape, size)) != (size,) * 3:
        raise InputError(
            f"the published Lung-DDPM+ recipe crops a {size}^3 cube; this CT has {layout_zyx.shape[::-1]} voxels "
            f"(i, j, k): it needs at least {size} along every axis (use --recipe lungddpm, which pads)"
        )
    coords = np.argwhere(nodule)
    if len(coords) == 0:
        raise InputError("the layout has no nodule: the published Lung-DDPM+ recipe crops around one")
    voxel = coords[int(np.random.default_rng(seed).integers(len(coords)))]
    start = [max(0, min(n - size, int(v) - size // 2)) for n, v in zip(nodule.shape, voxel)]
    # (j, k, i) -> (k, j, i)
    return CubeChoice((int(voxel[1]), int(voxel[0]), int(voxel[2])), (start[1], start[0], start[2]), size)


def column_minmax(crop_jki: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``MinMaxScaler`` fitted on ``crop.reshape(-1, last)``: (scale, offset) per last-axis index, float64."""
    cols = crop_jki.reshape(-1, crop_jki.shape[-1]).astype(np.float64)
    lo, hi = cols.min(axis=0), cols.max(axis=0)
    span = hi - lo
    span[span < 10 * np.finfo(np.float64).eps] = 1.0  # scikit-learn's rule for a constant feature
    scale = 1.0 / span
    return scale, -lo * scale


def plus_case(
    ct_zyx: np.ndarray,
    layout_zyx: np.ndarray,
    eps: EpsFn,
    *,
    seed: int,
    size: int,
    timesteps: int,
    device: Optional[torch.device] = None,
    after_call: Optional[Callable[[], None]] = None,
) -> Tuple[np.ndarray, CubeChoice]:
    """The published ``sample.py`` for one sample; returns the whole CT in float64 HU ``(z, y, x)`` and the cube.

    Args:
        ct_zyx: the CT in HU, SimpleITK order; layout_zyx: labels on the same grid (nodules 2-5).
        eps: the network as ``eps(x_t, t_input, cond)``; seed: picks the voxel, then draws the initial noise.
        size: the cube's edge (64 for the released model: its grid); timesteps: the schedule's N.
    """
    cube = choose_cube(layout_zyx, size, seed)
    z, y, x = cube.slices_zyx()
    crop = to_script_order(np.asarray(ct_zyx[z, y, x], dtype=np.float64))
    mask = to_script_order(is_nodule(layout_zyx[z, y, x])).astype(np.float32)
    scale, offset = column_minmax(crop)
    scaled = crop * scale + offset
    # (j, k, i) -> the network's (i, k, j), as the script's transpose(3, 1) on (1, j, k, i).
    real = torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 1, 0))).float() * 2 - 1
    cond = torch.from_numpy(np.ascontiguousarray(mask.transpose(2, 1, 0))) * 2 - 1
    device = device or torch.device("cpu")
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((1, 1, size, size, size), generator=gen)
    out = sample_plus(
        eps, noise.to(device), real[None, None].to(device), cond[None, None].to(device), timesteps, after_call
    )
    sample_jki = out[0, 0].double().cpu().numpy().transpose(2, 1, 0)
    hu_jki = ((sample_jki + 1.0) / 2.0 - offset) / scale
    result = np.asarray(ct_zyx, dtype=np.float64).copy()
    result[z, y, x] = to_script_order(hu_jki)
    return result, cube
