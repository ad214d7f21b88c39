"""Lung-DDPM+'s crop and scaling rules (its ``sample.py`` and ``dataset.py``), shared by sampling and training.

Both of the authors' scripts crop a cube around a random nodule voxel (``crop_nodule_centered_cube``: start
``voxel - size // 2``, clipped so the cube lies inside the volume) in the array order ``(j, k, i)`` that nibabel's
``(i, j, k)`` takes after ``transpose(1, 2, 0)``. ``sample.py`` then min-max scales the cube per last-axis index
(NIfTI i, :func:`column_minmax`); ``dataset.py`` scales the whole volume per NIfTI k before cropping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from ..config import is_nodule
from ..errors import InputError


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


def choose_cube(layout_zyx: np.ndarray, size: int, rng: np.random.Generator) -> CubeChoice:
    """The published crop rule: a nodule voxel drawn by ``rng.integers`` over ``argwhere`` in the script's
    ``(j, k, i)`` order, start ``voxel - size // 2`` clipped to lie inside the volume."""
    nodule = to_script_order(is_nodule(layout_zyx))
    if tuple(np.minimum(nodule.shape, size)) != (size,) * 3:
        raise InputError(
            f"the published Lung-DDPM+ recipe crops a {size}^3 cube; this CT has {layout_zyx.shape[::-1]} voxels "
            f"(i, j, k): it needs at least {size} along every axis (use --recipe lungddpm, which pads)"
        )
    coords = np.argwhere(nodule)
    if len(coords) == 0:
        raise InputError("the layout has no nodule: the published Lung-DDPM+ recipe crops around one")
    voxel = coords[int(rng.integers(len(coords)))]
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
