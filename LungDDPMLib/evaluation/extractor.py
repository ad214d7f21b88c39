"""What every feature extractor takes and gives: the :class:`FeatureExtractor` protocol and its input check.

Its own module so that the extractors (:mod:`.features`, :mod:`.resnet3d`) share them without importing each
other: :func:`~LungDDPMLib.evaluation.features.make_extractor` builds the Med3D extractor, which checks its input
with :func:`validate_volume` like the radiomic one does.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence, Tuple

import numpy as np

from ..errors import InputError


class FeatureExtractor(Protocol):
    """What set metrics need from an extractor: a name for reports, the vector length, and the mapping."""

    name: str
    dim: int
    comparable_with_paper: bool

    def __call__(
        self, volume_hu: np.ndarray, spacing_zyx: Sequence[float], mask: Optional[np.ndarray] = None
    ) -> np.ndarray:
        """A 1-D float64 vector of length ``dim`` for one ``(z, y, x)`` volume in HU, restricted to ``mask``."""
        ...


def validate_volume(
    volume_hu: np.ndarray, spacing_zyx: Sequence[float], mask: Optional[np.ndarray] = None
) -> Tuple[np.ndarray, Tuple[float, float, float], Optional[np.ndarray]]:
    """Check one extractor input and return it as (float32 volume, spacing, bool mask or ``None``)."""
    vol = np.asarray(volume_hu)
    if vol.ndim != 3:
        raise InputError(f"a volume must be 3-D (z, y, x), got shape {vol.shape}")
    sp = [float(s) for s in spacing_zyx]
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"spacing must be three positive numbers in mm (z, y, x), got {tuple(spacing_zyx)}")
    spacing = (sp[0], sp[1], sp[2])
    vol = vol.astype(np.float32)
    if not np.isfinite(vol).all():
        raise InputError(f"the volume holds {int((~np.isfinite(vol)).sum())} NaN or infinite voxels")
    if mask is None:
        return vol, spacing, None
    region = np.asarray(mask)
    if region.shape != vol.shape:
        raise InputError(f"mask shape {region.shape} differs from volume shape {vol.shape}")
    region = region.astype(bool)
    if not region.any():
        raise InputError("the mask is empty: there is no region to compute features in (check the layout labels)")
    return vol, spacing, region
