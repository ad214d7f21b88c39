"""Spatial transforms between the native CT grid and the model grid, and the composite back.

``full`` mode takes the whole volume (or the lung bounding box plus a margin) and resamples it to the
model grid (e.g. 128^3, as published; anisotropic stretch included). ``roi`` mode takes fixed-size patches
at native resolution centred on each nodule, as Lung-DDPM+ does; nodules close enough to share a patch are
merged into one. Boxes are index boxes on the native grid (x, y, z order, like SimpleITK) and may extend
past the volume; the outside is padded with air, so a nodule at the edge still gets a centred patch.

The way back resamples the model output onto the native box and composites it into the original CT:
original voxels everywhere outside the synthesis region (bit-exact), synthetic inside, optionally
feathered *inside* the region so the seam is soft without touching a single voxel outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..config import LABEL_LUNG, is_nodule
from ..errors import InputError
from .io import Geometry

PAD_HU = -1024.0


@dataclass(frozen=True)
class Box:
    """An index box on the native grid, ``(x, y, z)`` order; may extend past the volume."""

    start: Tuple[int, int, int]
    size: Tuple[int, int, int]

    @property
    def stop(self) -> Tuple[int, int, int]:
        return tuple(a + n for a, n in zip(self.start, self.size))

    def slices_zyx(self, shape_zyx: Sequence[int]) -> Tuple[Tuple[slice, ...], Tuple[slice, ...]]:
        """``(in_volume, in_box)`` slices of the overlap between the box and a ``(z, y, x)`` volume."""
        vol, box = [], []
        for axis in (2, 1, 0):
            lo = max(self.start[axis], 0)
            hi = min(self.stop[axis], shape_zyx[2 - axis])
            vol.append(slice(lo, max(lo, hi)))
            box.append(slice(lo - self.start[axis], max(lo, hi) - self.start[axis]))
        return tuple(vol), tuple(box)


def crop_geometry(native: Geometry, box: Box) -> Geometry:
    """Geometry of the voxels in ``box`` (same spacing and direction, shifted origin)."""
    origin = native.index_to_physical(np.asarray(box.start, dtype=float))
    return Geometry(tuple(box.size), native.spacing, tuple(float(v) for v in origin), native.direction)


def grid_geometry(crop: Geometry, grid_zyx: Sequence[int]) -> Geometry:
    """Geometry of a ``grid_zyx`` volume covering exactly the same physical extent as ``crop``.

    The outer voxel edges coincide, so resampling there and back maps the box onto itself.
    """
    grid_xyz = np.asarray(grid_zyx[::-1], dtype=float)
    spacing = np.asarray(crop.spacing) * np.asarray(crop.size) / grid_xyz
    shift = crop.direction_matrix @ ((spacing - np.asarray(crop.spacing)) / 2.0)
    origin = np.asarray(crop.origin) + shift
    return Geometry(
        tuple(int(g) for g in grid_xyz),
        tuple(float(s) for s in spacing),
        tuple(float(v) for v in origin),
        crop.direction,
    )


def extract(array: np.ndarray, box: Box, fill: float) -> np.ndarray:
    """The ``box`` of a ``(z, y, x)`` array, padded with ``fill`` where it leaves the volume (a copy)."""
    out = np.full(box.size[::-1], fill, dtype=array.dtype)
    vol, inner = box.slices_zyx(array.shape)
    out[inner] = array[vol]
    return out


def resample(array: np.ndarray, src: Geometry, dst: Geometry, linear: bool, fill: float = 0.0) -> np.ndarray:
    """Resample a ``(z, y, x)`` array from ``src`` onto ``dst`` (identity if the grids are the same)."""
    if src.matches(dst, tol=1e-9):
        return array.copy()
    image = src.image_from_array(array)
    ref = dst.image_from_array(np.zeros(dst.size[::-1], dtype=np.uint8))
    interp = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    out = sitk.Resample(image, ref, sitk.Transform(), interp, float(fill), image.GetPixelID())
    return sitk.GetArrayFromImage(out)


def full_box(size_xyz: Sequence[int]) -> Box:
    return Box((0, 0, 0), tuple(int(n) for n in size_xyz))


def lung_box(layout: np.ndarray, spacing_xyz: Sequence[float], margin_mm: float) -> Box:
    """Bounding box of the layout foreground plus ``margin_mm``, clipped to the volume."""
    fg = np.nonzero(layout)
    if not len(fg[0]):
        raise InputError("the layout is empty, so there is no lung bounding box; use crop='volume'")
    lo, hi = [], []
    for axis in (2, 1, 0):
        m = int(np.ceil(margin_mm / spacing_xyz[2 - axis]))
        lo.append(max(int(fg[axis].min()) - m, 0))
        hi.append(min(int(fg[axis].max()) + 1 + m, layout.shape[axis]))
    return Box(tuple(lo), tuple(b - a for a, b in zip(lo, hi)))


def nodule_boxes(layout: np.ndarray, patch_xyz: Sequence[int], merge: bool = True) -> List[Tuple[Box, List[int]]]:
    """One patch per nodule (connected component of label 2), centred on it; with ``merge``, nodules whose
    common bounding box fits in one patch share it. Returns ``(box, nodule ids)`` pairs (ids from 1)."""
    labels, n = ndi.label(is_nodule(layout))
    if n == 0:
        raise InputError(
            "roi mode needs at least one nodule in the layout; use spatial_mode='full' for a healthy synthesis"
        )
    extents = [np.array([[s.start for s in b][::-1], [s.stop for s in b][::-1]]) for b in ndi.find_objects(labels)]
    groups = [[i] for i in range(n)]
    if merge:
        changed = True
        while changed:
            changed = False
            for a in range(len(groups)):
                for b in range(a + 1, len(groups)):
                    ids = groups[a] + groups[b]
                    lo = np.min([extents[i][0] for i in ids], axis=0)
                    hi = np.max([extents[i][1] for i in ids], axis=0)
                    if np.all(hi - lo <= np.asarray(patch_xyz)):
                        groups[a] = ids
                        del groups[b]
                        changed = True
                        break
                if changed:
                    break
    out = []
    for ids in groups:
        lo = np.min([extents[i][0] for i in ids], axis=0)
        hi = np.max([extents[i][1] for i in ids], axis=0)
        big = [int(hi[k] - lo[k]) for k in range(3) if hi[k] - lo[k] > patch_xyz[k]]
        if big:
            raise InputError(
                f"a nodule spans {(hi - lo).tolist()} voxels, more than the patch {list(patch_xyz)}; "
                "use spatial_mode='full' or a model with a larger grid"
            )
        centre = (lo + hi) / 2.0
        start = tuple(int(np.floor(c - p / 2.0 + 0.5)) for c, p in zip(centre, patch_xyz))
        out.append((Box(start, tuple(int(p) for p in patch_xyz)), [i + 1 for i in ids]))
    return out


def composite_weights(region: np.ndarray, spacing_zyx: Sequence[float], feather_mm: float) -> np.ndarray:
    """Blend weight of the synthetic image: 1 deep inside ``region``, ramping down toward its edge over
    ``feather_mm``, and exactly 0 outside (so the outside stays the original CT)."""
    if feather_mm <= 0:
        return region.astype(np.float32)
    depth = ndi.distance_transform_edt(region, sampling=spacing_zyx)
    return np.clip(depth / feather_mm, 0.0, 1.0).astype(np.float32)


def composite(
    original: sitk.Image,
    synthetic_hu: np.ndarray,
    region: np.ndarray,
    feather_mm: float = 0.0,
    coverage: Optional[np.ndarray] = None,
) -> sitk.Image:
    """Original CT outside ``region`` (bit-exact), ``synthetic_hu`` inside, in the original pixel type.

    Args:
        original: the user's CT.
        synthetic_hu: ``(z, y, x)`` HU on the original grid.
        region: boolean ``(z, y, x)`` voxels to replace (typically the layout's lung and nodules).
        feather_mm: soft seam width, inside the region.
        coverage: voxels the synthesis actually produced (patches); the region is limited to them.
    """
    orig = sitk.GetArrayFromImage(original)
    if synthetic_hu.shape != orig.shape or region.shape != orig.shape:
        raise InputError(f"synthetic {synthetic_hu.shape} and region {region.shape} must match the CT {orig.shape}")
    region = region.astype(bool) & (coverage.astype(bool) if coverage is not None else True)
    weight = composite_weights(region, original.GetSpacing()[::-1], feather_mm)
    inside = weight > 0
    blended = orig[inside].astype(np.float64) * (1.0 - weight[inside]) + synthetic_hu[inside] * weight[inside]
    out = orig.copy()
    if np.issubdtype(out.dtype, np.integer):
        info = np.iinfo(out.dtype)
        blended = np.clip(np.rint(blended), info.min, info.max)
    out[inside] = blended.astype(out.dtype)
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(original)
    return image


def layout_region(layout: np.ndarray) -> np.ndarray:
    """Voxels a synthesis replaces: lung and nodules (of any class)."""
    return (layout == LABEL_LUNG) | is_nodule(layout)


def fits_roi_patch(layout: np.ndarray, patch_zyx: Sequence[int]) -> bool:
    """Whether the layout ``(z, y, x)`` has nodules and each fits one ROI patch of ``patch_zyx`` voxels (an ROI model
    cannot draw a larger one)."""
    try:
        nodule_boxes(layout, tuple(patch_zyx)[::-1], merge=False)
    except InputError:
        return False
    return True
