"""Whole-volume mask operations, done only where the mask is.

A CT holds about 10^7 voxels and its nodules a few thousand. A distance transform or a connected-component labelling
of the whole volume cost ROI synthesis about 2 s of fixed time per case, more than sampling a nodule with the
distilled student. Each function here crops to the mask's bounding box (grown by what the operation can reach) and
gives exactly the whole-volume answer; ``Testing/Python/test_masks.py`` checks that against the whole-volume
SciPy call on random masks.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage as ndi

Box = Tuple[slice, ...]


def mask_box(mask: np.ndarray, pad: Union[int, Sequence[int]] = 0) -> Optional[Box]:
    """The bounding box of ``mask``'s true voxels, grown by ``pad`` voxels per axis and clipped to the array;
    ``None`` for an empty mask."""
    pads = [int(pad)] * mask.ndim if np.isscalar(pad) else [int(p) for p in pad]  # type: ignore[arg-type]
    if min(pads) < 0:
        raise ValueError(f"pad must be >= 0 voxels, got {pad}")
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not len(hit):
            return None
        box.append(slice(max(int(hit[0]) - pads[axis], 0), min(int(hit[-1]) + 1 + pads[axis], mask.shape[axis])))
    return tuple(box)


def count_components(mask: np.ndarray) -> int:
    """Number of connected components (face connectivity, as :func:`scipy.ndimage.label`)."""
    box = mask_box(mask)
    return 0 if box is None else int(ndi.label(mask[box])[1])


def largest_component(mask: np.ndarray) -> int:
    """Voxels in the largest connected component (0 for an empty mask)."""
    box = mask_box(mask)
    if box is None:
        return 0
    components, n = ndi.label(mask[box])
    return int(np.bincount(components.ravel())[1:].max()) if n else 0


def within_distance(mask: np.ndarray, spacing: Sequence[float], distance: float) -> np.ndarray:
    """Voxels whose Euclidean distance (``spacing`` per axis, the array's order) to the nearest ``mask`` voxel is at
    most ``distance``: ``distance_transform_edt(~mask, sampling=spacing) <= distance``, computed per component.

    A voxel within ``distance`` of a component lies in that component's box grown by ``distance / spacing`` voxels
    per axis, and the transform inside that box sees the component itself (and perhaps others, which are also
    nodules): the union over the boxes is the whole-volume answer.
    """
    mask = np.asarray(mask, bool)  # ``~`` of an integer mask would be a bitwise not
    out = np.zeros(mask.shape, bool)
    outer = mask_box(mask)
    if outer is None or not distance >= 0:  # NaN reaches nothing, as in the whole-volume comparison
        return out
    if not np.isfinite(distance):
        return np.ones(mask.shape, bool)
    pads = [int(np.floor(distance / float(s))) + 1 for s in spacing]
    components, _ = ndi.label(mask[outer])
    for found in ndi.find_objects(components):
        box = tuple(
            slice(max(o.start + f.start - p, 0), min(o.start + f.stop + p, n))
            for o, f, p, n in zip(outer, found, pads, mask.shape)
        )
        near = ndi.distance_transform_edt(~mask[box], sampling=spacing) <= distance
        out[box] |= near
    return out
