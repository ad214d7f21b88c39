"""The held-out phantoms that nodule fidelity is scored on, and the vessels that run through their nodules.

Each case is a phantom of a seed no model trains on (training uses seeds from 1000) with one nodule of each class,
5-25 mm (log-uniform), about a quarter juxta-pleural, and, in every second case, the ground-glass nodule centred on
a vessel so that the vessel runs through it. The phantom generator draws its stages from separate children of the
seed, so the same seed without nodules is the same chest with the same vessels: its vessel voxels (tissue
``VESSEL``) are the ground truth of what passes through each nodule, independent of any intensity threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..config import LABEL_LUNG, NODULE_TYPES
from ..data.spatial import fits_roi_patch
from ..errors import InputError

#: Phantom geometry of the held-out cases: the bundled ROI model's training geometry.
SIZE, SPACING = (256, 256, 160), (0.8, 0.8, 1.5)
DIAMETER_MM = (5.0, 25.0)
JUXTA_SHARE = 0.25


@dataclass
class HeldOutCase:
    seed: int
    phantom: Any  # LungDDPMLib.phantom.Phantom
    vessel: np.ndarray  # (z, y, x) bool: the chest's vessels, drawn without nodules
    nodules: Sequence[Dict[str, Any]]


def _vessel_centre(twin: Any, radius_mm: float, rng: np.random.Generator) -> Optional[Tuple[float, float, float]]:
    """A physical point (x, y, z) on a vessel at least 2 voxels thick, deep enough in the lung for the nodule."""
    from ..phantom import tissues as T

    tissue = sitk.GetArrayViewFromImage(twin.tissue)
    lung = sitk.GetArrayViewFromImage(twin.layout) == LABEL_LUNG
    spacing = twin.ct.GetSpacing()[::-1]
    thick = ndi.binary_erosion(tissue == T.VESSEL, iterations=1)
    depth = ndi.distance_transform_edt(lung | (tissue == T.VESSEL), sampling=spacing)
    candidates = np.argwhere(thick & (depth >= radius_mm + 3.0))
    if not len(candidates):
        return None
    z, y, x = (int(v) for v in candidates[int(rng.integers(len(candidates)))])
    return tuple(float(v) for v in twin.ct.TransformIndexToPhysicalPoint((x, y, z)))


def heldout_case(seed: int, patch_zyx: Optional[Tuple[int, ...]] = None, tries: int = 40) -> HeldOutCase:
    """Held-out case ``seed``: one nodule of each class; with ``patch_zyx`` redrawn until each fits such a patch."""
    from ..phantom import NoduleSpec, make_phantom
    from ..phantom import tissues as T
    from ..phantom.nodules import SHAPES, SIDES

    rng = np.random.default_rng([seed, 31])
    twin = make_phantom(SIZE, SPACING, seed=seed, nodules=0)
    vessel = sitk.GetArrayFromImage(twin.tissue) == T.VESSEL
    through_vessel = seed % 2 == 0
    for _ in range(tries):
        specs = []
        for kind in reversed(NODULE_TYPES):  # ground glass first: the others are placed clear of it
            diameter = float(np.round(np.exp(rng.uniform(*np.log(DIAMETER_MM))), 1))
            shape = str(rng.choice(SHAPES, p=[0.45, 0.3, 0.25]))
            centre = None
            if kind == "ground-glass" and through_vessel:
                centre = _vessel_centre(twin, diameter / 2.0, rng)
            juxta = centre is None and bool(rng.random() < JUXTA_SHARE)
            side = str(rng.choice(SIDES))
            specs.append(NoduleSpec(diameter, kind, shape, juxta_pleural=juxta, side=side, center_mm=centre))
        try:
            ph = make_phantom(SIZE, SPACING, seed=seed, nodules=specs)
        except InputError:
            continue
        placed = ph.info["nodules"]
        if (
            len(placed) == 3
            and all(n["label_voxels"] > 0 for n in placed)
            and (patch_zyx is None or fits_roi_patch(sitk.GetArrayViewFromImage(ph.layout), patch_zyx))
        ):
            return HeldOutCase(seed, ph, vessel, ph.info["nodules"])
    raise InputError(f"could not place three held-out nodules in phantom {seed}")
