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

from typing import Callable, Optional, Tuple

import numpy as np
import torch

from ..config import is_nodule
from ..data.plus_crop import CubeChoice, choose_cube, column_minmax, to_script_order
from .plus_solver import EpsFn, sample_plus

__all__ = ["CubeChoice", "choose_cube", "column_minmax", "plus_case", "to_script_order"]


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
    cube = choose_cube(layout_zyx, size, np.random.default_rng(seed))
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
