"""A new nodule drawn on a patient CT's own grid: the phantom's shapes, rasterised in physical millimetres.

A user's CT may be anisotropic (0.7 x 0.7 x 2.5 mm) and oblique (a direction matrix that is not the identity). The
shape is therefore evaluated at every voxel's physical position (origin + direction x index x spacing), never in
index units, so a 10 mm nodule is 10 mm across on any grid. Because a direction matrix is a rotation, a ball of
radius R covers at most R / spacing voxels along each index axis, which gives the box to evaluate it in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
from scipy import ndimage as ndi

from ..data.geometry import Geometry
from ..phantom.nodules import shape_distance

Slices = Tuple[slice, slice, slice]


@dataclass(frozen=True)
class NewNodule:
    """One nodule to add, as recorded in the provenance (centre LPS ``(x, y, z)`` mm)."""

    kind: str
    diameter_mm: float
    shape: str
    juxta_pleural: bool
    center_mm: Tuple[float, float, float]
    shape_seed: int

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["center_mm"] = [round(float(v), 3) for v in self.center_mm]
        return data


def reach_mm(diameter_mm: float, shape: str) -> float:
    """How far from its centre a nodule of this shape can reach (spicules reach 2.2 radii)."""
    radius = diameter_mm / 2.0
    return radius * (2.3 if shape == "spiculated" else 1.1)


def index_box(geo: Geometry, center_mm: np.ndarray, reach: float) -> Optional[Slices]:
    """Array slices ``(z, y, x)`` around ``center_mm`` that hold every voxel within ``reach`` mm (clipped)."""
    rel = np.asarray(center_mm, dtype=np.float64) - np.asarray(geo.origin)
    index = (geo.direction_matrix.T @ rel) / np.asarray(geo.spacing)  # continuous (i, j, k)
    half = reach / np.asarray(geo.spacing) + 1.0
    lo = np.clip(np.floor(index - half).astype(int), 0, geo.size)
    hi = np.clip(np.ceil(index + half).astype(int) + 1, 0, geo.size)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(lo[a]), int(hi[a])) for a in (2, 1, 0))  # type: ignore[return-value]


def box_points(geo: Geometry, box: Slices) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Physical ``x, y, z`` (mm) of every voxel centre in ``box``, each an array of the box's ``(z, y, x)`` shape."""
    k, j, i = np.meshgrid(*(np.arange(s.start, s.stop) for s in box), indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(np.float64)
    points = geo.index_to_physical(index)
    return points[..., 0], points[..., 1], points[..., 2]


def _capsule_distance(points: Tuple[np.ndarray, ...], p0: np.ndarray, p1: np.ndarray, r0: float, r1: float):
    q = np.stack(points, axis=-1) - p0
    v = p1 - p0
    t = np.clip((q @ v) / max(float(v @ v), 1e-12), 0.0, 1.0)
    return np.linalg.norm(q - t[..., None] * v, axis=-1) - (r0 + (r1 - r0) * t)


def nodule_mask(geo: Geometry, nodule: NewNodule) -> Tuple[Optional[Slices], np.ndarray]:
    """The nodule's voxels: ``(box, mask)`` with ``mask`` boolean in the box, or ``(None, empty)`` off the grid.

    Body and lobes come from the phantom's shape generator (:func:`~LungDDPMLib.phantom.nodules.shape_distance`),
    spiculated nodules get the phantom's spicules (8-16 tapered strands reaching 1.4-2.2 radii); the mask is the
    voxels whose centre lies inside, kept as one connected object (the largest), as the phantom labels it.
    """
    box = index_box(geo, np.asarray(nodule.center_mm), reach_mm(nodule.diameter_mm, nodule.shape))
    if box is None:
        return None, np.zeros((0, 0, 0), dtype=bool)
    rng = np.random.default_rng(nodule.shape_seed)
    points = box_points(geo, box)
    centre = np.asarray(nodule.center_mm, dtype=np.float64)
    radius = nodule.diameter_mm / 2.0
    inside = shape_distance(points, centre, radius, nodule.shape, rng) <= 0
    if nodule.shape == "spiculated":
        dirs = rng.standard_normal((int(rng.integers(8, 17)), 3))
        for d in dirs / np.linalg.norm(dirs, axis=1, keepdims=True):
            end = centre + d * radius * rng.uniform(1.4, 2.2)
            inside |= _capsule_distance(points, centre + d * radius * 0.7, end, max(0.5, 0.12 * radius), 0.15) <= 0
    return box, inside


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected object of ``mask`` (empty stays empty)."""
    components, n = ndi.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))
