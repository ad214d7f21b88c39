"""Does each drawn nodule look like its class? Per-nodule and per-class fidelity of a synthetic CT.

The layout says where a nodule is and which density class it has (3 solid, 4 part-solid, 5 ground-glass). For every
nodule of a synthetic CT this module measures, against the real CT the layout came from:

* mean and SD of HU inside the nodule's mask, real and synthetic;
* the drawn nodule's **dense part** (voxels above :data:`DENSE_HU`, the solid component) and its **extent**
  (voxels above :data:`EXTENT_HU`, anything denser than aerated lung), both counted within the mask grown by
  :data:`GROW_MM`, as volumes and equivalent diameters; the layout's own volume is the reference for the extent, the
  real nodule's dense part for the dense part (a layout does not say how big a part-solid nodule's core is);
* whether the mean HU lies in the class's range (:data:`CLASS_RANGES`): ground glass must come out as ground glass.

Per class, :func:`summarize_classes` pools the nodules: means of the above, and the Wasserstein-1 distance between
the pooled HU values of the synthetic and of the real nodules of that class.

Example:
    >>> rows = nodule_fidelity(real_hu, synthetic_hu, layout, spacing_zyx)  # doctest: +SKIP
    >>> summarize_classes(rows)["ground-glass"]["synthetic_mean_hu"]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import wasserstein_distance

from ..config import NODULE_TYPES, TYPE_OF_LABEL

#: HU above which a voxel belongs to a nodule's solid component.
DENSE_HU = -300.0
#: HU above which a voxel is denser than aerated lung (-855 HU in the phantom): ground glass counts.
EXTENT_HU = -750.0
#: How far around the layout's mask a drawn nodule may reach and still be counted (a drawn nodule need not follow
#: the mask voxel for voxel).
GROW_MM = 2.0
#: Mean HU a nodule of each class should have: ground glass about -700..-500 HU (a little wider for partial volume),
#: solid well above it, part-solid (ground glass with a solid core) in between.
CLASS_RANGES: Dict[str, Tuple[float, float]] = {
    "ground-glass": (-750.0, -450.0),
    "part-solid": (-650.0, -150.0),
    "solid": (-250.0, 150.0),
}


def _diameter(volume_mm3: float) -> float:
    return float((6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0))


def nodule_fidelity(
    real: np.ndarray, synthetic: np.ndarray, layout: np.ndarray, spacing_zyx: Sequence[float]
) -> List[Dict[str, Any]]:
    """One record per typed nodule (connected component of labels 3-5) of the layout; arrays ``(z, y, x)``, HU."""
    if not (real.shape == synthetic.shape == layout.shape):
        raise ValueError(f"shapes differ: real {real.shape}, synthetic {synthetic.shape}, layout {layout.shape}")
    voxel = float(np.prod(spacing_zyx))
    grow = tuple(max(1, round(GROW_MM / s)) for s in spacing_zyx)
    parts, _ = ndi.label(np.isin(layout, list(TYPE_OF_LABEL)))
    rows = []
    for index, box in enumerate(ndi.find_objects(parts), start=1):
        big = tuple(slice(max(s.start - g - 1, 0), s.stop + g + 1) for s, g in zip(box, grow))
        mask = parts[big] == index
        label = int(np.bincount(layout[big][mask]).argmax())
        near = ndi.binary_dilation(mask, structure=np.ones([2 * g + 1 for g in grow], bool))
        r, s = real[big].astype(np.float64), synthetic[big].astype(np.float64)
        kind = TYPE_OF_LABEL[label]
        row = {
            "class": kind,
            "centre_zyx": [int((b.start + b.stop) // 2) for b in box],
            "layout_volume_mm3": round(float(mask.sum()) * voxel, 1),
            "real_mean_hu": round(float(r[mask].mean()), 1),
            "real_sd_hu": round(float(r[mask].std()), 1),
            "synthetic_mean_hu": round(float(s[mask].mean()), 1),
            "synthetic_sd_hu": round(float(s[mask].std()), 1),
            "real_dense_mm3": round(float((near & (r > DENSE_HU)).sum()) * voxel, 1),
            "synthetic_dense_mm3": round(float((near & (s > DENSE_HU)).sum()) * voxel, 1),
            "synthetic_extent_mm3": round(float((near & (s > EXTENT_HU)).sum()) * voxel, 1),
        }
        lo, hi = CLASS_RANGES[kind]
        row["synthetic_in_class_range"] = bool(lo <= row["synthetic_mean_hu"] <= hi)
        row["real_in_class_range"] = bool(lo <= row["real_mean_hu"] <= hi)
        row["_values"] = (r[mask], s[mask])  # for the pooled W1; dropped by summarize_classes
        rows.append(row)
    return rows


def summarize_classes(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per class over nodule records (of many cases): means, W1 between pooled HU values, class-range rate.

    Removes the pooled values from ``rows`` so they can be written as JSON.
    """
    out: Dict[str, Dict[str, Any]] = {}
    for kind in NODULE_TYPES:
        mine = [r for r in rows if r["class"] == kind]
        if not mine:
            continue
        real_v = np.concatenate([r["_values"][0] for r in mine if "_values" in r] or [np.zeros(0)])
        synth_v = np.concatenate([r["_values"][1] for r in mine if "_values" in r] or [np.zeros(0)])

        def mean(key: str, rows_: Sequence[Dict[str, Any]] = mine) -> float:
            return round(float(np.mean([r[key] for r in rows_])), 1)

        out[kind] = {
            "nodules": len(mine),
            "real_mean_hu": mean("real_mean_hu"),
            "synthetic_mean_hu": mean("synthetic_mean_hu"),
            "real_sd_hu": mean("real_sd_hu"),
            "synthetic_sd_hu": mean("synthetic_sd_hu"),
            "w1_hu": round(float(wasserstein_distance(real_v, synth_v)), 1) if real_v.size and synth_v.size else None,
            "synthetic_in_class_range": round(float(np.mean([r["synthetic_in_class_range"] for r in mine])), 3),
            "layout_diameter_mm": round(float(np.mean([_diameter(r["layout_volume_mm3"]) for r in mine])), 2),
            "synthetic_extent_diameter_mm": round(
                float(np.mean([_diameter(r["synthetic_extent_mm3"]) for r in mine])), 2
            ),
            "real_dense_diameter_mm": round(float(np.mean([_diameter(r["real_dense_mm3"]) for r in mine])), 2),
            "synthetic_dense_diameter_mm": round(
                float(np.mean([_diameter(r["synthetic_dense_mm3"]) for r in mine])), 2
            ),
        }
    for r in rows:
        r.pop("_values", None)
    return out
