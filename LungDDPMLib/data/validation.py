"""Checks on user data that turn likely mistakes into one clear, fixable message.

The model only makes sense for 3D CT in Hounsfield units; an MR, an already-normalised volume or a 2D
slice would otherwise produce garbage without complaint. Memory is checked *before* allocating, because
running out of memory inside Slicer takes the whole application down.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional, Union

import numpy as np
import SimpleITK as sitk

from ..errors import InputError


class DataWarning(UserWarning):
    """Something in the user's data is unusual but usable (e.g. a nodule outside the lung)."""


def warn(message: str) -> None:
    warnings.warn(message, DataWarning, stacklevel=3)


def available_memory_bytes() -> Optional[int]:
    """Memory the OS can still give us, or ``None`` when it cannot be determined (then we do not block)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed_bytes: int, what: str, available: Optional[int] = None) -> None:
    """Refuse up front when ``what`` needs more than 90 % of the available memory."""
    available = available_memory_bytes() if available is None else available
    if available is not None and needed_bytes > 0.9 * available:
        raise InputError(
            f"{what} needs about {needed_bytes / 2**30:.1f} GiB of memory but only {available / 2**30:.1f} GiB "
            "is available; crop the volume to the chest, resample it to a coarser spacing, or free memory"
        )


def check_dimension(image: sitk.Image, name: str) -> None:
    """A single-channel 3D volume is required."""
    dim = image.GetDimension()
    if dim == 2:
        raise InputError(
            f"{name} is a 2D image {image.GetSize()}; LungDDPM needs a 3D volume "
            "(for DICOM, select the folder of the whole series, not one slice)"
        )
    if dim != 3:
        raise InputError(
            f"{name} is a {dim}D image {image.GetSize()}; LungDDPM needs a single 3D volume "
            "(extract one time point or channel first)"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            "(colour or vector image); LungDDPM needs a grey-value CT"
        )
    if min(image.GetSize()) < 2:
        raise InputError(f"{name} has size {image.GetSize()}; every axis needs at least 2 voxels")


def _sample(array: np.ndarray, max_voxels: int = 2_000_000) -> np.ndarray:
    step = max(1, int(np.ceil((array.size / max_voxels) ** (1 / 3))))
    return array[::step, ::step, ::step] if array.ndim == 3 else array.ravel()[::step]


def check_ct_intensities(ct: Union[sitk.Image, np.ndarray], name: str = "the CT") -> None:
    """Raise if the values are not plausibly Hounsfield units of a chest CT.

    A chest CT always contains air (about -1000 HU) in and around the body; MR and most non-HU exports
    have no negative values, and normalised volumes span only a few units.
    """
    array = sitk.GetArrayViewFromImage(ct) if isinstance(ct, sitk.Image) else np.asarray(ct)
    sample = _sample(array).astype(np.float64, copy=False)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite values; fix or mask them before synthesis")
    lo, hi = float(sample.min()), float(sample.max())
    p01, p99 = np.percentile(sample, [1, 99])
    if hi - lo <= 10.0:
        raise InputError(
            f"{name} has values only from {lo:g} to {hi:g}: it looks already normalised, not in Hounsfield "
            "units; give the original CT (air about -1000 HU, soft tissue 0-100 HU)"
        )
    if p01 > -300.0:
        hint = (
            " If it is a CT stored without its rescale intercept (0..4095), subtract 1024."
            if lo >= 0 and hi <= 4096
            else ""
        )
        raise InputError(
            f"{name} has no air-like values (1st percentile {p01:g}, range {lo:g}..{hi:g}): it does not look "
            f"like a CT in Hounsfield units (an MR or a rescaled export?).{hint}"
        )
    if p99 > 4000.0 or lo < -4000.0:
        raise InputError(
            f"{name} spans {lo:g}..{hi:g}, beyond the CT range (-1024..3071 HU); check the "
            "rescale slope and intercept of the export"
        )
