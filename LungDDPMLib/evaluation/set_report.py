"""The set-metric part of an evaluation report: whether FID/MMD can be computed at all, the features per volume or
per patch, and the caveat that must travel with the numbers."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .features import FeatureExtractor, extract_features
from .patches import UNITS, patch_items
from .set_metrics import FID_MIN_SAMPLES, MMD_MIN_SAMPLES, set_metrics

SET_MODES = ("auto", "on", "off")
VolumeItem = Tuple[np.ndarray, Sequence[float], Optional[np.ndarray]]


def set_size_check(
    n_real: int, n_synthetic: int, mode: str, hint: str = "; for few volumes use patches (--set-unit patch)"
) -> Optional[Dict[str, Any]]:
    """None when set metrics should be computed, else the report entry that says why not."""
    if mode not in SET_MODES:
        raise InputError(f"set metrics mode must be one of {SET_MODES}, got {mode!r}")
    if mode == "off":
        return {"status": "not requested"}
    need = max(FID_MIN_SAMPLES, MMD_MIN_SAMPLES)
    if min(n_real, n_synthetic) < need:
        reason = f"FID and MMD need at least {need} samples in each set; got {n_real} real and {n_synthetic} synthetic"
        if mode == "on":
            raise InputError(reason + hint)
        return {"status": "not applicable", "reason": reason}
    return None


def check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise InputError(f"set-metric unit must be one of {UNITS}, got {unit!r}")


def unit_features(ex: FeatureExtractor, item: VolumeItem, unit: str) -> np.ndarray:
    """(k, dim) features: one row for a volume, one per patch of the mask (possibly none) in patch mode."""
    if unit == "volume":
        return extract_features([item], ex)
    rows = extract_features(patch_items(*item), ex)
    return rows if len(rows) else np.zeros((0, ex.dim))


def set_result(real: np.ndarray, synthetic: np.ndarray, ex: FeatureExtractor, unit: str, mode: str) -> Dict[str, Any]:
    if unit == "patch":  # the number of patches is only known now
        hint = "; the generated region holds too few 40 mm patches (at least half inside it): use more volumes"
        skip = set_size_check(len(real), len(synthetic), mode, hint)
        if skip is not None:
            return {**skip, "unit": unit}
    result = dict(set_metrics(real, synthetic, standardize=not ex.comparable_with_paper))
    result.update(
        {"status": "ok", "extractor": ex.name, "comparable_with_paper": ex.comparable_with_paper, "unit": unit}
    )
    note = set_metrics_note(result)
    if note:
        result["note"] = note
    return result


def set_metrics_note(result: Dict[str, Any]) -> str:
    """What a reader must know before quoting FID/MMD^2; the same words go to metrics.json and the console.

    A number printed without its caveat gets quoted (``FID 0  MMD^2 -0.39`` on identical sets), so the caveat
    travels with it wherever it is shown.
    """
    parts = []
    if not result.get("fid_reliable", True):
        parts.append(
            f"FID is unreliable here: {min(result['n_real'], result['n_synthetic'])} samples per set for "
            f"{result['dim']} features (it needs more samples than features; use more volumes or --set-unit patch)"
        )
    if result.get("mmd2", 0.0) < 0:
        parts.append("MMD^2 below 0 is sampling noise of its unbiased estimate: no detectable difference")
    return "; ".join(parts)
