"""Segmentation metrics of the downstream experiment: voxel Dice and nodule-level detection.

Conventions (chosen so that no case is silently scored as perfect or as a failure):

* Dice is ``2|P & T| / (|P| + |T|)``. When both the prediction and the truth are empty it is ``None``
  ("not applicable") and is left out of means; an empty truth with a non-empty prediction scores 0.
* A nodule is a connected component of the truth (26-connectivity). It is *detected* when at least one predicted
  voxel lies in it. Sensitivity is detected / nodules, ``None`` when the case has no nodule.
* A false-positive component is a connected component of the prediction that touches no truth voxel.
* Per nodule class (solid, part-solid, ground-glass): sensitivity over the nodules of that class, and the mean
  Dice of each such nodule in its own neighbourhood (:func:`by_class`).

Example:
    >>> t = np.zeros((4, 4, 4), bool); t[:2] = True
    >>> dice(t, t), dice(np.zeros_like(t), np.zeros_like(t))
    (1.0, None)
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage as ndi

from ..config import TYPE_OF_LABEL
from .design import equivalent_diameter_mm, size_bin

_CONNECTIVITY = ndi.generate_binary_structure(3, 3)


def _check(pred: np.ndarray, truth: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} must have the same shape")
    return p, t


def dice(pred: np.ndarray, truth: np.ndarray) -> Optional[float]:
    """Voxel Dice of two binary masks; ``None`` when both are empty."""
    p, t = _check(pred, truth)
    total = int(p.sum()) + int(t.sum())
    if total == 0:
        return None
    return 2.0 * int(np.logical_and(p, t).sum()) / total


def detection(pred: np.ndarray, truth: np.ndarray) -> Dict[str, Optional[Union[int, float]]]:
    """Nodule-level counts: ``nodules``, ``detected``, ``sensitivity`` and ``false_positives`` (components)."""
    p, t = _check(pred, truth)
    truth_parts, n_truth = ndi.label(t, structure=_CONNECTIVITY)
    detected = len(np.unique(truth_parts[p & t])) if n_truth else 0
    pred_parts, n_pred = ndi.label(p, structure=_CONNECTIVITY)
    touching = len(np.unique(pred_parts[p & t])) if n_pred else 0
    return {
        "nodules": int(n_truth),
        "detected": int(detected),
        "sensitivity": detected / n_truth if n_truth else None,
        "false_positives": int(n_pred - touching),
    }


def nodule_records(
    pred: np.ndarray, classes: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0), margin: int = 3
) -> List[Dict[str, Any]]:
    """One record per true nodule: its class, equivalent diameter (mm, from its labelled voxels and ``spacing``
    ``(z, y, x)``), size bin, whether the prediction touches it, and its Dice in its own neighbourhood.

    ``classes`` holds each nodule voxel's layout label (3 solid, 4 part-solid, 5 ground-glass; 2 or 0 elsewhere).
    A nodule is a connected component; its class is the label most of its voxels carry (components of label 2
    only are left out); its Dice is computed in its bounding box grown by ``margin`` voxels, so that a neighbour's
    prediction does not count against it.
    """
    p = np.asarray(pred, dtype=bool)
    parts, _ = ndi.label(np.asarray(classes) > 0, structure=_CONNECTIVITY)
    out: List[Dict[str, Any]] = []
    for index, box in enumerate(ndi.find_objects(parts), start=1):
        inside = parts[box] == index
        label = int(np.bincount(np.asarray(classes)[box][inside]).argmax())
        if label not in TYPE_OF_LABEL:
            continue
        grown = tuple(slice(max(s.start - margin, 0), s.stop + margin) for s in box)
        truth = parts[grown] == index
        diameter = equivalent_diameter_mm(int(inside.sum()), spacing)
        out.append(
            {
                "class": TYPE_OF_LABEL[label],
                "diameter_mm": round(diameter, 2),
                "size_bin": size_bin(diameter),
                "detected": bool((p[grown] & truth).any()),
                "dice": dice(p[grown], truth),
            }
        )
    return out


def by_class(pred: np.ndarray, classes: np.ndarray, margin: int = 3) -> Dict[str, Dict[str, Optional[float]]]:
    """Per nodule class: how many true nodules, how many the prediction touches, and their mean per-nodule Dice
    (from :func:`nodule_records`)."""
    records = nodule_records(pred, classes, margin=margin)
    out = {}
    for kind in TYPE_OF_LABEL.values():
        mine = [r for r in records if r["class"] == kind]
        found = sum(r["detected"] for r in mine)
        out[kind] = {
            "nodules": len(mine),
            "detected": found,
            "sensitivity": found / len(mine) if mine else None,
            "dice": float(np.mean([r["dice"] for r in mine])) if mine else None,
        }
    return out


def case_metrics(
    pred: np.ndarray, truth: np.ndarray, classes: Optional[np.ndarray] = None
) -> Dict[str, Optional[Union[int, float]]]:
    """Everything recorded per test case: Dice, detection counts and the voxel counts behind them, and with
    ``classes`` the sensitivity and per-nodule Dice per nodule class (``sensitivity_<class>``, ``dice_<class>``)."""
    p, t = _check(pred, truth)
    out: Dict[str, Any] = {
        "dice": dice(p, t),
        **detection(p, t),
        "pred_voxels": int(p.sum()),
        "true_voxels": int(t.sum()),
    }
    if classes is not None:
        for kind, stats in by_class(p, classes).items():
            out[f"sensitivity_{kind}"] = stats["sensitivity"]
            out[f"dice_{kind}"] = stats["dice"]
    return out


def mean_sd(values: Iterable[Optional[float]]) -> Dict[str, Optional[float]]:
    """Mean and sample SD (ddof 1) of the values that are not ``None``; ``n`` says how many that was."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    return {
        "mean": float(v.mean()) if v.size else None,
        "sd": float(v.std(ddof=1)) if v.size > 1 else None,
        "n": int(v.size),
    }
