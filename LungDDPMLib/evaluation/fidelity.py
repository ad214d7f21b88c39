"""Does a synthetic CT respect its layout? Region intensities and the seam at the layout's boundary.

* Region statistics: mean and SD of HU in lung parenchyma (label 1) and nodules (labels 2-5), real and synthetic,
  and per nodule class where the layout states it.
  A faithful model puts nodules far above parenchyma and parenchyma in the lung range (about -950..-600 HU).
* Seam score: the mean gradient magnitude (HU/mm) on the one-voxel shell on each side of the boundary between the
  generated region and the kept anatomy, synthetic divided by real. About 1 means the synthetic tissue meets the
  real anatomy with the same edge strength as the real tissue did; above 1 an added step (a visible seam), below
  1 a washed-out edge (for example a lung generated too bright next to the chest wall).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..config import LABEL_LUNG, LABEL_OF_TYPE, is_nodule

LUNG_HU_RANGE = (-950.0, -600.0)


def boundary_shell(region: np.ndarray) -> np.ndarray:
    """Voxels within one voxel of the boundary of ``region`` (inside and outside), 6-connected."""
    region = region.astype(bool)
    return ndi.binary_dilation(region) & ~ndi.binary_erosion(region)


def _gradient_magnitude(volume: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    grads = np.gradient(volume.astype(np.float32), *spacing_zyx)
    return np.sqrt(sum(g * g for g in grads))


def seam_score(real: np.ndarray, synthetic: np.ndarray, region: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """Mean gradient magnitude on the boundary shell of ``region``, synthetic over real (1 = no added seam)."""
    shell = boundary_shell(region)
    if not shell.any():
        return float("nan")
    real_g = float(_gradient_magnitude(real, spacing_zyx)[shell].mean())
    synth_g = float(_gradient_magnitude(synthetic, spacing_zyx)[shell].mean())
    return synth_g / real_g if real_g > 0 else float("nan")


def _stats(values: np.ndarray) -> Optional[Dict[str, float]]:
    if values.size == 0:
        return None
    return {
        "mean_hu": round(float(values.mean()), 1),
        "sd_hu": round(float(values.std()), 1),
        "voxels": int(values.size),
    }


def layout_fidelity(
    real: np.ndarray, synthetic: np.ndarray, layout: np.ndarray, spacing_zyx: Sequence[float]
) -> Dict[str, Any]:
    """Region statistics (real and synthetic), the nodule-lung contrast, the seam score and kept-anatomy check.

    Arrays are ``(z, y, x)`` in HU on the same grid; regions that are empty are reported as ``None``.
    """
    if not (real.shape == synthetic.shape == layout.shape):
        raise ValueError(f"shapes differ: real {real.shape}, synthetic {synthetic.shape}, layout {layout.shape}")
    out: Dict[str, Any] = {}
    for name, m in (("lung", layout == LABEL_LUNG), ("nodule", is_nodule(layout))):
        out[name] = {"real": _stats(real[m]), "synthetic": _stats(synthetic[m].astype(np.float64))}
    typed = {kind: layout == value for kind, value in LABEL_OF_TYPE.items() if (layout == value).any()}
    if typed:  # per density class, for layouts that state it
        out["nodule_by_type"] = {
            kind: {"real": _stats(real[m]), "synthetic": _stats(synthetic[m].astype(np.float64))}
            for kind, m in typed.items()
        }
    lung, nodule = out["lung"]["synthetic"], out["nodule"]["synthetic"]
    out["nodule_minus_lung_hu"] = None if not (lung and nodule) else round(nodule["mean_hu"] - lung["mean_hu"], 1)
    out["lung_in_range"] = None if not lung else bool(LUNG_HU_RANGE[0] <= lung["mean_hu"] <= LUNG_HU_RANGE[1])
    out["seam_score"] = round(seam_score(real, synthetic, layout > 0, spacing_zyx), 3)
    kept = layout == 0
    out["kept_anatomy_max_abs_diff_hu"] = float(np.abs(real[kept].astype(np.float64) - synthetic[kept]).max())
    return out
