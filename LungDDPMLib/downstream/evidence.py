"""What a segmentation network sees in real against synthetic nodules, and the intensity-matched ablation.

Recorded per run so that a collapse (a network that predicts no nodule) can be explained from the data, not
guessed: per training pool (real, synthetic) and per nodule class the HU inside the nodule masks - mean, SD and
percentiles, over the voxels the network is shown (the CT window of :func:`~.segnet.normalize_ct`, so values are
clipped to [-1000, 400] HU as the network sees them) - beside the loss curves and the output histograms of
:mod:`LungDDPMLib.downstream.train`.

The ablation ``synthetic_intensity="matched"`` keeps each synthetic nodule's shape, texture and position but maps
its voxels linearly so that, per class, their mean and SD are those of the real training nodules of that class.
If matched synthetic data helps where the drawn one hurts, the drawn nodules' density is what costs.

Example:
    >>> stats = nodule_intensity([])
    >>> stats["solid"]["voxels"]
    0
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..config import LABEL_OF_TYPE
from .data import Case
from .segnet import HU_MAX, HU_MIN

PERCENTILES = (5, 25, 50, 75, 95)
SPAN = HU_MAX - HU_MIN


def _hu(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) * SPAN + HU_MIN


def nodule_intensity(cases: Sequence[Case]) -> Dict[str, Dict[str, Optional[float]]]:
    """Per class: number of nodule voxels, mean and SD HU, and the :data:`PERCENTILES` (``p5`` ...)."""
    out: Dict[str, Dict[str, Optional[float]]] = {}
    for kind, label in LABEL_OF_TYPE.items():
        parts = [_hu(c.image[c.classes == label]) for c in cases if c.classes is not None]
        v = np.concatenate(parts) if parts else np.zeros(0)
        entry: Dict[str, Optional[float]] = {"voxels": int(v.size)}
        entry["mean"] = round(float(v.mean()), 1) if v.size else None
        entry["sd"] = round(float(v.std()), 1) if v.size else None
        for q, value in zip(PERCENTILES, np.percentile(v, PERCENTILES) if v.size else [None] * len(PERCENTILES)):
            entry[f"p{q}"] = None if value is None else round(float(value), 1)
        out[kind] = entry
    return out


def pool_intensity(pools: Dict[str, Sequence[Case]]) -> Dict[str, Dict[str, Dict[str, Optional[float]]]]:
    """:func:`nodule_intensity` of each named pool of training cases."""
    return {name: nodule_intensity(cases) for name, cases in pools.items() if cases}


def match_intensity(synthetic: Sequence[Case], real: Sequence[Case]) -> List[Case]:
    """Copies of ``synthetic`` whose nodule voxels of each class are mapped linearly to the real cases' class mean
    and SD (a class absent from either side is left as drawn); the targets are unchanged."""
    target = nodule_intensity(real)
    source = nodule_intensity(synthetic)
    out = []
    for case in synthetic:
        image = case.image.copy()
        for kind, label in LABEL_OF_TYPE.items():
            s, t = source[kind], target[kind]
            if case.classes is None or not s["voxels"] or not t["voxels"]:
                continue
            where = case.classes == label
            scale = (t["sd"] or 0.0) / s["sd"] if s["sd"] else 1.0
            hu = (_hu(image[where]) - s["mean"]) * scale + t["mean"]
            image[where] = np.clip((hu - HU_MIN) / SPAN, 0.0, 1.0)
        out.append(dataclasses.replace(case, image=image))
    return out
