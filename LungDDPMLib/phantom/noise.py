"""Texture, scanner blur and CT-like noise.

A real CT is not a piecewise-constant picture: organs have low-frequency heterogeneity, the lung has a
fine parenchymal texture and a gravity gradient, edges are blurred by the scanner's point-spread function
(which is what makes partial-volume edges), and the noise is spatially correlated by the reconstruction
kernel, mostly within the axial plane. Each of those is a Gaussian-filtered random field here; everything
is float32 and drawn from the caller's seeded Generator, so a seed always gives the same volume.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi


def _kernel_norm(sigma: float, truncate: float) -> float:
    """L2 norm of the 1D Gaussian kernel scipy applies, to rescale filtered white noise to unit variance."""
    if sigma <= 0:
        return 1.0
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    return float(np.sqrt((k * k).sum()))


def correlated_noise(
    shape: Tuple[int, int, int], sigma_vox: Sequence[float], rng: np.random.Generator, truncate: float = 3.0
) -> np.ndarray:
    """Unit-variance Gaussian noise filtered with a Gaussian of ``sigma_vox`` (z, y, x) voxels."""
    field = rng.standard_normal(shape, dtype=np.float32)
    ndi.gaussian_filter(field, sigma_vox, output=field, truncate=truncate)
    norm = np.prod([_kernel_norm(s, truncate) for s in sigma_vox])
    field *= np.float32(1.0 / norm)
    return field


def smooth_field(
    shape: Tuple[int, int, int], spacing: Sequence[float], correlation_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """Unit-variance low-frequency field with about ``correlation_mm`` correlation length.

    Generated on a coarse grid and interpolated up: a large-sigma filter at full resolution would cost
    seconds, and the field is smooth anyway.
    """
    step = np.maximum(1, np.floor(correlation_mm / (2.0 * np.asarray(spacing)))).astype(int)
    coarse_shape = tuple(int(np.ceil(n / s)) + 1 for n, s in zip(shape, step))
    coarse = correlated_noise(coarse_shape, [1.0] * 3, rng)
    coarse /= max(float(coarse.std()), 1e-6)
    zoom = [n / c for n, c in zip(shape, coarse_shape)]
    fine = ndi.zoom(coarse, zoom, order=1, grid_mode=False)
    assert fine.shape == tuple(shape), (fine.shape, shape)
    return fine.astype(np.float32, copy=False)


def psf_blur(volume: np.ndarray, spacing: Sequence[float], fwhm_mm: Sequence[float]) -> np.ndarray:
    """Scanner point-spread function (Gaussian with the given FWHM per axis, z, y, x), in place."""
    sigma = [f / 2.3548 / s for f, s in zip(fwhm_mm, spacing)]
    ndi.gaussian_filter(volume, sigma, output=volume, truncate=2.5)
    return volume
