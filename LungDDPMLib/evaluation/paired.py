"""Paired image-quality metrics between a synthetic CT and its reference, per region of the layout.

Regions: ``lung`` (label 1), ``nodule`` (label 2), ``generated`` (lung + nodule), ``kept`` (everything else; with
AAS it equals the reference, so its errors are 0) and ``whole``. For each region:

* ``mse_hu``, ``mae_hu``: in HU, on the raw values;
* ``mse_norm``, ``mae_norm``: in the model's units, after clipping to the [-1000, 1000] HU window and scaling to
  [-1, 1] (so 1 HU = 0.001); comparable with the MSE the Lung-DDPM paper reports;
* ``psnr_db``: 10 log10(range^2 / MSE) on window-clipped HU with range 2000 HU (infinite for identical regions);
* ``ssim``: 3D SSIM (Wang et al. 2004) with a Gaussian window, sigma 1.5 voxels truncated at 3.5 sigma, constants
  K1 = 0.01 and K2 = 0.03 on the 2000 HU range, computed over the whole volume once and averaged over the region,
  leaving out the border half a window wide as scikit-image does (``None`` if the region lies only there);
* ``w1_hu``: Wasserstein-1 distance between the region's HU distributions (how far the histograms are apart);
* ``real_mean_hu``, ``real_sd_hu``, ``synthetic_mean_hu``, ``synthetic_sd_hu``.

An empty region reports ``None`` for every metric (not NaN): "not applicable" must survive JSON and tables.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np
from scipy.stats import wasserstein_distance
from skimage.metrics import structural_similarity

from ..config import is_nodule
from ..errors import InputError

WINDOW_HU = (-1000.0, 1000.0)
DATA_RANGE_HU = WINDOW_HU[1] - WINDOW_HU[0]
SSIM_SIGMA = 1.5
SSIM_WINDOW = 2 * int(3.5 * SSIM_SIGMA + 0.5) + 1  # skimage's Gaussian window: 11 voxels for sigma 1.5
REGIONS = ("lung", "nodule", "generated", "kept", "whole")
METRICS = (
    "voxels",
    "mse_hu",
    "mae_hu",
    "mse_norm",
    "mae_norm",
    "psnr_db",
    "ssim",
    "w1_hu",
    "real_mean_hu",
    "real_sd_hu",
    "synthetic_mean_hu",
    "synthetic_sd_hu",
)


def region_masks(layout: np.ndarray) -> Dict[str, np.ndarray]:
    return {
        "lung": layout == 1,
        "nodule": is_nodule(layout),
        "generated": layout > 0,
        "kept": layout == 0,
        "whole": np.ones(layout.shape, dtype=bool),
    }


def ssim_map(real_hu: np.ndarray, synthetic_hu: np.ndarray, slab: int = 16) -> np.ndarray:
    """Voxel-wise 3D SSIM on window-clipped HU (see the module docstring for the settings), as float32.

    Computed over slabs of ``slab`` slices with a halo of half a window on each side, which gives exactly the
    whole-volume map (every voxel sees its full window) while the filters' float64 temporaries stay the size of a
    slab: a 512x512x300 CT needs about 1.5 GB instead of 16 GB.
    """
    halo = SSIM_WINDOW // 2
    out = np.empty(real_hu.shape, dtype=np.float32)
    nz = real_hu.shape[0]
    for z0 in range(0, nz, slab):
        lo, hi = max(0, z0 - halo), min(nz, z0 + slab + halo)
        hi = min(nz, max(hi, lo + SSIM_WINDOW))  # scikit-image wants a whole window; more context changes nothing
        lo = max(0, min(lo, hi - SSIM_WINDOW))
        a = np.clip(real_hu[lo:hi].astype(np.float64), *WINDOW_HU)
        b = np.clip(synthetic_hu[lo:hi].astype(np.float64), *WINDOW_HU)
        _, full = structural_similarity(
            a, b, data_range=DATA_RANGE_HU, gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False,
            full=True,
        )  # fmt: skip
        out[z0 : min(nz, z0 + slab)] = full[z0 - lo : z0 - lo + min(slab, nz - z0)]
    return out


def _region(real: np.ndarray, synth: np.ndarray, ssim_values: np.ndarray) -> Dict[str, Any]:
    if real.size == 0:
        return dict.fromkeys(METRICS, None) | {"voxels": 0}
    a, b = real.astype(np.float64), synth.astype(np.float64)
    diff = b - a
    clipped = np.clip(b, *WINDOW_HU) - np.clip(a, *WINDOW_HU)
    mse_window = float(np.mean(clipped**2))
    return {
        "voxels": int(a.size),
        "mse_hu": float(np.mean(diff**2)),
        "mae_hu": float(np.mean(np.abs(diff))),
        "mse_norm": mse_window / (DATA_RANGE_HU / 2) ** 2,
        "mae_norm": float(np.mean(np.abs(clipped))) / (DATA_RANGE_HU / 2),
        "psnr_db": float("inf") if mse_window == 0 else float(10 * np.log10(DATA_RANGE_HU**2 / mse_window)),
        "ssim": float(ssim_values.mean(dtype=np.float64)) if ssim_values.size else None,
        "w1_hu": float(wasserstein_distance(a, b)),
        "real_mean_hu": float(a.mean()),
        "real_sd_hu": float(a.std()),
        "synthetic_mean_hu": float(b.mean()),
        "synthetic_sd_hu": float(b.std()),
    }


def paired_metrics(real_hu: np.ndarray, synthetic_hu: np.ndarray, layout: np.ndarray) -> Dict[str, Dict[str, Any]]:
    """Every metric for every region; arrays are ``(z, y, x)`` in HU on the same grid.

    Example:
        >>> real = np.full((12, 12, 12), -800.0); lay = np.zeros((12, 12, 12), int); lay[3:9, 3:9, 3:9] = 1
        >>> paired_metrics(real, real, lay)["lung"]["mae_hu"]
        0.0
    """
    if not (real_hu.shape == synthetic_hu.shape == layout.shape):
        raise InputError(
            f"shapes differ: real {real_hu.shape}, synthetic {synthetic_hu.shape}, layout {layout.shape}; "
            "resample the synthetic CT onto the reference grid first"
        )
    if min(real_hu.shape) < SSIM_WINDOW:
        raise InputError(
            f"volumes of shape {real_hu.shape} are too small for the 3D SSIM window ({SSIM_WINDOW} voxels a side)"
        )
    full = ssim_map(real_hu, synthetic_hu)
    pad = SSIM_WINDOW // 2
    interior = np.zeros(full.shape, dtype=bool)
    interior[pad:-pad, pad:-pad, pad:-pad] = True
    masks = region_masks(layout)
    return {name: _region(real_hu[m], synthetic_hu[m], full[m & interior]) for name, m in masks.items()}
