"""Does a drawn nodule look like its class to a reader? Measures that tell a haze from a hole.

Class means hid the failure that matters: a ground-glass nodule drawn as a dark hole with a bright rim has about the
right mean HU. The measures here look at what a reader sees, per nodule of a synthetic CT against the real CT:

* **holes**: the share of nodule voxels darker than the lung around the nodule (the median of a lung shell just
  outside the regenerated region, :data:`SHELL_MM`). Ground glass only adds density: a real nodule has none.
* **vessel**: the mean HU of the voxels inside the nodule that are vessel in the real CT (a mask the caller gives,
  e.g. the vessels of the same phantom drawn without nodules). A vessel keeps its density through ground glass; an
  erased one drops to the nodule's or the lung's level.
* **radial profile** and **core minus rim**: mean HU by distance from the nodule's centre in units of its equivalent
  radius R, and the centre (r <= R/2) minus the rest. A part-solid nodule has a solid core in a hazy rim (positive);
  an inverted one is dark inside a bright ring (negative).
* **SD ratio** and **W1**: the synthetic nodule's HU spread over the real one's, and the Wasserstein-1 distance
  between the two nodules' HU values.

:data:`TARGETS` are the acceptance levels of each class (median over nodules and seeds), :func:`check_targets` applies
them to :func:`summarize_looks`'s output.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import wasserstein_distance

from ..config import LABEL_LUNG, NODULE_TYPES, TYPE_OF_LABEL
from ..data.context import ROI_MARGIN_MM

#: The lung shell that sets a nodule's "lung around it": this far beyond the regenerated region (nodule + margin),
#: so it is the same real tissue in the real and in the synthetic CT.
SHELL_MM = (1.0, 5.0)
#: Radial bins (r / R) of the profile.
PROFILE_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)
#: Fewest vessel voxels inside a nodule for its vessel measure to count (a vessel grazing the edge is not through).
MIN_VESSEL_VOXELS = 8
#: Acceptance per class, median over nodules and seeds ("Nodules faithful enough to train on").
TARGETS: Dict[str, Any] = {
    "abs_mean_diff_hu": 60.0,
    "sd_ratio": (0.7, 1.4),
    "w1_hu": 80.0,
    "holes": 0.05,
    "vessel_hu": -300.0,
    "core_minus_rim_hu": 150.0,
    "max_mean_hu": 300.0,
}


def _shell(labels: np.ndarray, nodule: np.ndarray, spacing: Sequence[float], margin_mm: float) -> np.ndarray:
    distance = ndi.distance_transform_edt(~nodule, sampling=spacing)
    lo, hi = margin_mm + SHELL_MM[0], margin_mm + SHELL_MM[1]
    return (distance > lo) & (distance <= hi) & (labels == LABEL_LUNG)


def _radial(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance of every voxel from the mask's centroid in units of its equivalent radius."""
    voxel = float(np.prod(spacing))
    radius = (3.0 * mask.sum() * voxel / (4.0 * np.pi)) ** (1.0 / 3.0)
    centre = np.array(ndi.center_of_mass(mask))
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in mask.shape], indexing="ij")
    r2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing))
    return np.sqrt(r2) / max(radius, 1e-6)


def look_of_nodule(
    real: np.ndarray,
    synthetic: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    vessel: Optional[np.ndarray] = None,
    margin_mm: float = ROI_MARGIN_MM,
) -> Dict[str, Any]:
    """The measures of one nodule (``mask``) on arrays cropped around it (HU; ``labels`` the layout)."""
    r, s = real[mask].astype(np.float64), synthetic[mask].astype(np.float64)
    shell = _shell(labels, mask, spacing, margin_mm)
    lung_hu = float(np.median(synthetic[shell])) if shell.any() else float("nan")
    radial = _radial(mask, spacing)
    profile_real, profile_synth = [], []
    for lo, hi in zip(PROFILE_EDGES[:-1], PROFILE_EDGES[1:]):
        ring = (radial >= lo) & (radial < hi)
        profile_real.append(round(float(real[ring].mean()), 1) if ring.any() else None)
        profile_synth.append(round(float(synthetic[ring].mean()), 1) if ring.any() else None)
    centre, rim = mask & (radial <= 0.5), mask & (radial > 0.5)
    row: Dict[str, Any] = {
        "lung_around_hu": round(lung_hu, 1),
        "holes": round(float((s < lung_hu).mean()), 4) if np.isfinite(lung_hu) else None,
        "real_holes": round(float((r < lung_hu).mean()), 4) if np.isfinite(lung_hu) else None,
        "sd_ratio": round(float(s.std() / max(r.std(), 1e-6)), 3),
        "w1_hu": round(float(wasserstein_distance(r, s)), 1),
        "profile_r_over_R": list(PROFILE_EDGES),
        "real_profile_hu": profile_real,
        "synthetic_profile_hu": profile_synth,
        "real_core_minus_rim_hu": None,
        "synthetic_core_minus_rim_hu": None,
        "vessel_voxels": 0,
        "real_vessel_hu": None,
        "synthetic_vessel_hu": None,
    }
    if centre.any() and rim.any():
        row["real_core_minus_rim_hu"] = round(float(real[centre].mean() - real[rim].mean()), 1)
        row["synthetic_core_minus_rim_hu"] = round(float(synthetic[centre].mean() - synthetic[rim].mean()), 1)
    if vessel is not None:
        inside = vessel & mask
        row["vessel_voxels"] = int(inside.sum())
        if row["vessel_voxels"] >= MIN_VESSEL_VOXELS:
            row["real_vessel_hu"] = round(float(real[inside].mean()), 1)
            row["synthetic_vessel_hu"] = round(float(synthetic[inside].mean()), 1)
    return row


def nodule_looks(
    real: np.ndarray,
    synthetic: np.ndarray,
    layout: np.ndarray,
    spacing_zyx: Sequence[float],
    vessel: Optional[np.ndarray] = None,
    margin_mm: float = ROI_MARGIN_MM,
) -> List[Dict[str, Any]]:
    """One record per typed nodule (connected component of labels 3-5); arrays ``(z, y, x)`` in HU.

    ``vessel``: boolean vessel mask of the real CT (optional); ``margin_mm``: the regenerated margin, which places
    the lung shell outside what was redrawn.
    """
    if not (real.shape == synthetic.shape == layout.shape) or (vessel is not None and vessel.shape != layout.shape):
        raise ValueError("real, synthetic, layout (and vessel) must have one shape")
    parts, _ = ndi.label(np.isin(layout, list(TYPE_OF_LABEL)))
    reach = [int(np.ceil((margin_mm + SHELL_MM[1] + 1.0) / s)) for s in spacing_zyx]
    rows = []
    for index, box in enumerate(ndi.find_objects(parts), start=1):
        big = tuple(slice(max(b.start - g, 0), b.stop + g) for b, g in zip(box, reach))
        mask = parts[big] == index
        label = int(np.bincount(layout[big][mask]).argmax())
        row = {"class": TYPE_OF_LABEL[label], "centre_zyx": [int((b.start + b.stop) // 2) for b in box]}
        row["real_mean_hu"] = round(float(real[big][mask].mean()), 1)
        row["synthetic_mean_hu"] = round(float(synthetic[big][mask].mean()), 1)
        sub_vessel = vessel[big] if vessel is not None else None
        row.update(look_of_nodule(real[big], synthetic[big], layout[big], mask, spacing_zyx, sub_vessel, margin_mm))
        rows.append(row)
    return rows


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return round(float(np.median(vals)), 3) if vals else None


def _percentile(values: Sequence[Optional[float]], q: float) -> Optional[float]:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return round(float(np.percentile(vals, q)), 3) if vals else None


def summarize_looks(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per class, medians over nodule records (of many cases and seeds) and the worst nodule mean."""
    out: Dict[str, Dict[str, Any]] = {}
    for kind in NODULE_TYPES:
        mine = [r for r in rows if r["class"] == kind]
        if not mine:
            continue
        vessels = [
            r for r in mine if r.get("real_vessel_hu") is not None and r["real_vessel_hu"] > TARGETS["vessel_hu"]
        ]
        out[kind] = {
            "records": len(mine),
            "real_mean_hu": _median([r["real_mean_hu"] for r in mine]),
            "synthetic_mean_hu": _median([r["synthetic_mean_hu"] for r in mine]),
            "abs_mean_diff_hu": _median([abs(r["synthetic_mean_hu"] - r["real_mean_hu"]) for r in mine]),
            "sd_ratio": _median([r["sd_ratio"] for r in mine]),
            "w1_hu": _median([r["w1_hu"] for r in mine]),
            "holes": _median([r["holes"] for r in mine]),
            "real_holes": _median([r["real_holes"] for r in mine]),
            "holes_p90": _percentile([r["holes"] for r in mine], 90),
            "real_core_minus_rim_hu": _median([r["real_core_minus_rim_hu"] for r in mine]),
            "synthetic_core_minus_rim_hu": _median([r["synthetic_core_minus_rim_hu"] for r in mine]),
            "vessel_records": len(vessels),
            "real_vessel_hu": _median([r["real_vessel_hu"] for r in vessels]),
            "synthetic_vessel_hu": _median([r["synthetic_vessel_hu"] for r in vessels]),
            "max_mean_hu": round(float(max(r["synthetic_mean_hu"] for r in mine)), 1),
        }
    return out


def check_targets(summary: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Optional[bool]]]:
    """Which :data:`TARGETS` each class meets (``None``: not measurable, e.g. no vessel through such a nodule).

    The core-minus-rim target applies to part-solid nodules, the vessel target to ground glass; the others to all.
    """
    out: Dict[str, Dict[str, Optional[bool]]] = {}
    lo, hi = TARGETS["sd_ratio"]
    for kind, s in summary.items():
        checks: Dict[str, Optional[bool]] = {
            "abs_mean_diff_hu": s["abs_mean_diff_hu"] is not None
            and s["abs_mean_diff_hu"] <= TARGETS["abs_mean_diff_hu"],
            "sd_ratio": s["sd_ratio"] is not None and lo <= s["sd_ratio"] <= hi,
            "w1_hu": s["w1_hu"] is not None and s["w1_hu"] <= TARGETS["w1_hu"],
            "holes": s["holes"] is not None and s["holes"] <= TARGETS["holes"],
            "max_mean_hu": s["max_mean_hu"] <= TARGETS["max_mean_hu"],
        }
        if kind == "part-solid":
            v = s["synthetic_core_minus_rim_hu"]
            checks["core_minus_rim_hu"] = v is not None and v >= TARGETS["core_minus_rim_hu"]
        if kind == "ground-glass":
            v = s["synthetic_vessel_hu"]
            checks["vessel_hu"] = None if v is None else v > TARGETS["vessel_hu"]
        out[kind] = checks
    return out
