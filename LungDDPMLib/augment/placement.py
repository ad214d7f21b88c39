"""Where new nodules may go in a real case: inside the lung, clear of every other nodule, or against the pleura.

Placement works in two passes. A coarse pass (voxels about 2 mm apart) finds candidate centres from two distance
maps in mm: the depth inside the lung (lung and its nodules; the boundary is the pleura) and the distance to the
nodules already there. An exact pass then rasterises the nodule on the full grid (:mod:`.shapes`) and accepts it
only if every voxel is lung (label 1), it keeps ``gap_mm`` from the new nodules placed before and more than the
ROI margin (plus ``gap_mm``) from the existing ones - so that regenerating the new nodule's region cannot touch an
existing nodule - it touches the pleura exactly when it is to be juxta-pleural, and it fits the model's patch.

Nothing here needs the model: the plan of a whole run is made (and every "no room" refused) before any sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi

from ..config import LABEL_BACKGROUND, LABEL_LUNG, NODULE_TYPES, is_nodule
from ..data.context import ROI_MARGIN_MM
from ..data.geometry import Geometry
from ..errors import InputError
from .options import SHAPE_MIX, AugmentSettings
from .shapes import NewNodule, Slices, largest_component, nodule_mask

#: Exact placements tried per nodule before it is declared not to fit.
MAX_TRIES = 80
#: A juxta-pleural nodule keeps at least this share of its ball inside the lung once flattened against the wall.
MIN_JUXTA_SHARE = 0.4
#: Coarse voxel size for the candidate search, mm.
COARSE_MM = 2.0


@dataclass(frozen=True)
class Placed:
    """An accepted nodule: what it is, and its voxels (``mask`` within ``box`` of the case's ``(z, y, x)`` array)."""

    nodule: NewNodule
    box: Slices
    mask: np.ndarray

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())


def draw_specs(settings: AugmentSettings, rng: np.random.Generator) -> List[Dict[str, object]]:
    """The nodules of one variant: count, class, diameter (log-uniform), shape and juxta-pleural, from ``rng``."""
    n_lo, n_hi = settings.nodules_per_variant
    count = int(rng.integers(n_lo, n_hi + 1))
    shares = np.array([settings.types.get(t, 0.0) for t in NODULE_TYPES], dtype=np.float64)
    lo, hi = settings.diameter_mm
    specs = []
    for _ in range(count):
        specs.append(
            {
                "kind": str(rng.choice(NODULE_TYPES, p=shares / shares.sum())),
                "diameter_mm": float(np.clip(round(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), 1), lo, hi)),
                "shape": str(rng.choice(list(SHAPE_MIX), p=list(SHAPE_MIX.values()))),
                "juxta_pleural": bool(rng.random() < settings.juxta_share),
                "shape_seed": int(rng.integers(0, 2**31 - 1)),
            }
        )
    return specs


def max_diameter_mm(geo: Geometry, patch_zyx: Sequence[int]) -> float:
    """The largest nodule body the model's patch holds on this grid (two voxels of room)."""
    spacing_zyx = np.asarray(geo.spacing[::-1])
    return float(np.min((np.asarray(patch_zyx) - 2) * spacing_zyx))


class CaseSpace:
    """One real case's room for new nodules: its labels, grid and the coarse distance maps (mm)."""

    def __init__(self, labels: np.ndarray, geo: Geometry, patch_zyx: Optional[Sequence[int]] = None) -> None:
        self.labels = labels
        self.geo = geo
        self.patch_zyx = tuple(int(p) for p in patch_zyx) if patch_zyx is not None else None
        self.spacing_zyx = np.asarray(geo.spacing[::-1], dtype=np.float64)
        self.step = tuple(max(1, int(COARSE_MM // s)) for s in self.spacing_zyx)
        coarse = tuple(slice(None, None, s) for s in self.step)
        self.lung = labels == LABEL_LUNG
        region = self.lung | is_nodule(labels)
        if not self.lung.any():
            raise InputError("the layout has no lung voxels (label 1), so there is nowhere to place a nodule")
        sampling = self.spacing_zyx * np.asarray(self.step)
        padded = np.pad(region[coarse], 1)  # the image border counts as outside the lung
        self.depth = ndi.distance_transform_edt(padded, sampling=sampling)[1:-1, 1:-1, 1:-1]
        existing = is_nodule(labels)
        self.existing_count = int(ndi.label(existing)[1])
        if existing.any():
            pooled = ndi.maximum_filter(existing.view(np.uint8), size=self.step)[coarse] > 0
            self.existing_distance = ndi.distance_transform_edt(~pooled, sampling=sampling)
        else:
            self.existing_distance = np.full(self.depth.shape, np.inf)
        self.coarse_mm = float(np.linalg.norm(sampling))

    def centre_mm(self, coarse_index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Physical LPS centre of a coarse voxel, jittered within it."""
        zyx = coarse_index * np.asarray(self.step) + rng.uniform(-0.5, 0.5, 3) * (np.asarray(self.step) - 1)
        return self.geo.index_to_physical(zyx[::-1])

    def fits(self, box: Slices, mask: np.ndarray, juxta: bool, placed: np.ndarray, gap_mm: float) -> bool:
        """The exact test of one rasterised nodule (see the module docstring)."""
        if mask.sum() < 2 or not (self.labels[box][mask] == LABEL_LUNG).all() or placed[box][mask].any():
            return False
        if self.patch_zyx is not None:
            nz = np.nonzero(mask)
            extent = [int(a.max() - a.min() + 1) for a in nz]
            if any(e > p for e, p in zip(extent, self.patch_zyx)):
                return False
        keep_out = max(gap_mm, ROI_MARGIN_MM + gap_mm)
        grow = [int(np.ceil(keep_out / s)) + 1 for s in self.spacing_zyx]
        big = tuple(slice(max(b.start - g, 0), min(b.stop + g, n)) for b, g, n in zip(box, grow, self.labels.shape))
        local = np.zeros([s.stop - s.start for s in big], dtype=bool)
        inner = tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, big))
        local[inner] = mask
        distance = ndi.distance_transform_edt(~local, sampling=self.spacing_zyx)
        labels = self.labels[big]
        if (is_nodule(labels) & (distance <= keep_out)).any() or (placed[big] & (distance <= gap_mm)).any():
            return False
        touches = bool((ndi.binary_dilation(local) & (labels == LABEL_BACKGROUND)).any())
        return touches == juxta


def _candidates(space: CaseSpace, radius: float, juxta: bool, placed: Sequence[Placed], gap_mm: float) -> np.ndarray:
    """Coarse voxels that may hold the centre (a loose filter; :meth:`CaseSpace.fits` decides)."""
    slack = space.coarse_mm
    free = space.depth >= radius
    ok = (space.depth >= 0.45 * radius) & (space.depth <= 0.9 * radius + slack) if juxta else free
    ok &= space.existing_distance > radius + ROI_MARGIN_MM + gap_mm - slack
    found = np.argwhere(ok)
    if placed and len(found):
        mm = space.geo.index_to_physical((found * np.asarray(space.step))[:, ::-1])
        for other in placed:
            gap = np.linalg.norm(mm - np.asarray(other.nodule.center_mm), axis=1)
            keep = gap > radius + other.nodule.diameter_mm / 2.0 + gap_mm - slack
            found, mm = found[keep], mm[keep]
    return found


def _clip_to_patch(space: CaseSpace, box: Slices, mask: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Spicules that would leave the model's patch are cut at its edge (the body always fits; see
    :func:`max_diameter_mm`)."""
    if space.patch_zyx is None:
        return mask
    rel = np.asarray(centre) - np.asarray(space.geo.origin)
    centre_zyx = ((space.geo.direction_matrix.T @ rel) / np.asarray(space.geo.spacing))[::-1]
    out = mask.copy()
    for axis, (s, p) in enumerate(zip(box, space.patch_zyx)):
        index = np.arange(s.start, s.stop)
        lo = int(np.floor(centre_zyx[axis] - (p - 1) / 2.0 + 0.5))
        keep = (index >= lo) & (index < lo + p)
        shape = [1, 1, 1]
        shape[axis] = len(index)
        out &= keep.reshape(shape)
    return out


def place_one(
    space: CaseSpace, spec: Dict[str, object], rng: np.random.Generator, placed: List[Placed], gap_mm: float
) -> Optional[Placed]:
    """Try up to :data:`MAX_TRIES` candidate centres for ``spec``; the accepted nodule, or ``None``."""
    radius = float(spec["diameter_mm"]) / 2.0  # type: ignore[arg-type]
    juxta = bool(spec["juxta_pleural"])
    found = _candidates(space, radius, juxta, placed, gap_mm)
    if not len(found):
        return None
    union = np.zeros(space.labels.shape, dtype=bool)
    for p in placed:
        union[p.box] |= p.mask
    lung = space.lung
    for index in rng.permutation(len(found))[:MAX_TRIES]:
        centre = space.centre_mm(found[index], rng)
        nodule = NewNodule(
            str(spec["kind"]), float(spec["diameter_mm"]), str(spec["shape"]), juxta,  # type: ignore[arg-type]
            tuple(float(v) for v in centre), int(spec["shape_seed"]),  # type: ignore[arg-type]
        )  # fmt: skip
        box, mask = nodule_mask(space.geo, nodule)
        if box is None:
            continue
        whole = int(mask.sum())
        mask = _clip_to_patch(space, box, mask, centre)
        if juxta:  # flattened against the wall: the part in the lung, kept if most of it is there
            mask = largest_component(mask & lung[box])
            if mask.sum() < MIN_JUXTA_SHARE * whole:
                continue
        else:
            mask = largest_component(mask)
        if space.fits(box, mask, juxta, union, gap_mm):
            return Placed(nodule, box, mask)
    return None


def place_variant(
    space: CaseSpace, settings: AugmentSettings, rng: np.random.Generator, where: str
) -> Tuple[List[Placed], List[Dict[str, object]]]:
    """Draw and place one variant's nodules; raises :class:`InputError` naming ``where`` when one has no room."""
    specs = draw_specs(settings, rng)
    placed: List[Placed] = []
    for spec in specs:
        got = place_one(space, spec, rng, placed, settings.gap_mm)
        if got is None:
            how = "against the pleura" if spec["juxta_pleural"] else "fully inside the lung"
            raise InputError(
                f"{where}: no room for a {spec['diameter_mm']:g} mm {spec['kind']} nodule {how}, clear of the "
                f"{space.existing_count} existing and {len(placed)} new nodule(s) by {settings.gap_mm:g} mm"
                " (the lung is too small or too full); use a smaller --diameter-mm, fewer --nodules-per-variant, "
                "a smaller --gap-mm or another --juxta-share"
            )
        placed.append(got)
    return placed, specs
