"""Segmentation metrics of the downstream experiment: voxel Dice and nodule-level detection.

Conventions (chosen so that no case is silently scored as perfect or as a failure):

* Dice is ``2|P & T| / (|P| + |T|)``. When both the prediction and the truth are empty it is ``None``
  ("not applicable") and is left out of means; an empty truth with a non-empty prediction scores 0.
* A nodule is a connected component of the truth (26-connectivity). It is *detected* when at least one predicted
  voxel lies in it. Sensitivity is detected / nodules, ``None`` when the case has no nodule.
* A false-positive component is a connected component of the prediction that touches no truth voxel.

Example:
    >>> t = np.zeros((4, 4, 4), bool); t[:2] = True
    >>> dice(t, t), dice(np.zeros_like(t), np.zeros_like(t))
    (1.0, None)
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple, Union

import numpy as np
from scipy import ndimage as ndi

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


def case_metrics(pred: np.ndarray, truth: np.ndarray) -> Dict[str, Optional[Union[int, float]]]:
    """Everything recorded per test case: Dice, detection counts and the voxel counts behind them."""
    p, t = _check(pred, truth)
    return {"dice": dice(p, t), **detection(p, t), "pred_voxels": int(p.sum()), "true_voxels": int(t.sum())}


def mean_sd(values: Iterable[Optional[float]]) -> Dict[str, Optional[float]]:
    """Mean and sample SD (ddof 1) of the values that are not ``None``; ``n`` says how many that was."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    return {
        "mean": float(v.mean()) if v.size else None,
        "sd": float(v.std(ddof=1)) if v.size > 1 else None,
        "n": int(v.size),
    }
