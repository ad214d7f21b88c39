"""Cut a volume into cubic patches of the generated region, so set metrics work with few volumes.

FID and MMD compare distributions, which a handful of whole volumes describe poorly (a 30-feature covariance
needs more than 30 samples). Patches of the lung, taken on a fixed grid, give dozens of feature vectors per
volume: enough for a stable estimate from one real CT and a few synthetic samples (the Slicer case). Patches of
one volume are not independent samples, so patch-level values describe local texture statistics rather than
whole-volume realism; reports say which unit was used.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError

UNITS = ("volume", "patch")
PATCH_MM = 40.0
MIN_FILL = 0.5

Item = Tuple[np.ndarray, Sequence[float], Optional[np.ndarray]]


def patch_boxes(
    mask: np.ndarray, spacing_zyx: Sequence[float], patch_mm: float = PATCH_MM, min_fill: float = MIN_FILL
) -> Iterator[Tuple[slice, slice, slice]]:
    """Boxes of about ``patch_mm`` a side on a grid anchored at the mask's bounding box, at least ``min_fill`` mask.

    The grid depends only on the mask and spacing, so the real CT and every synthetic sample of the same layout
    are cut at the same places.
    """
    if patch_mm <= 0 or not 0 < min_fill <= 1:
        raise InputError(f"patch size must be > 0 mm and fill in (0, 1]; got {patch_mm} mm, {min_fill}")
    if not mask.any():
        return
    size = [max(4, round(float(patch_mm) / float(s))) for s in spacing_zyx]
    lo = [int(i.min()) for i in np.nonzero(mask)]
    hi = [int(i.max()) + 1 for i in np.nonzero(mask)]
    starts = [range(lo[a], max(lo[a] + 1, hi[a] - size[a] + 1), size[a]) for a in range(3)]
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                box = (slice(z, z + size[0]), slice(y, y + size[1]), slice(x, x + size[2]))
                if mask[box].mean() >= min_fill:
                    yield box


def patch_items(
    volume_hu: np.ndarray,
    spacing_zyx: Sequence[float],
    mask: Optional[np.ndarray],
    patch_mm: float = PATCH_MM,
    min_fill: float = MIN_FILL,
) -> Iterator[Item]:
    """Extractor inputs ``(patch_hu, spacing, patch_mask)`` of one volume (whole-volume boxes without a mask)."""
    region = np.ones(volume_hu.shape, dtype=bool) if mask is None else mask.astype(bool)
    for box in patch_boxes(region, spacing_zyx, patch_mm, min_fill):
        yield volume_hu[box], spacing_zyx, region[box]
