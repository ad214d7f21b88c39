"""Add a nodule segment at a markup point: diameter in mm, shape and density class, drawn on the reference CT grid.

The shape is purely geometric and decides the mask only: ``round`` a ball, ``lobulated`` a union of a core and
3-6 lobes, ``spiculated`` a ball with 8-16 thin spikes. The type is the nodule's density class (``solid``,
``part-solid``, ``ground-glass``): the segment's name states it ("Nodule 3 ground-glass"), so the layout gives the
nodule that class's label (3, 4, 5; see :func:`.mrml_bridge.nodule_label`), which a type-aware model (the bundled
ROI model) draws as that class and a published two-channel model draws as a plain nodule. Renaming the segment
changes its class the same way. Distances are measured in physical millimetres through the volume's IJK-to-RAS
matrix, so oblique and anisotropic grids give round nodules. The new segment is coded as a nodule (SNOMED CT
terminology); its shape, diameter and type are recorded as tags.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import slicer

from . import mrml_bridge as mb
from .segment_choice import set_terminology

SHAPES = ("round", "lobulated", "spiculated")
#: Density classes offered, as the layout knows them (``mrml_bridge.NODULE_TYPES``); the first is the default.
NODULE_TYPES = mb.NODULE_TYPES
MIN_DIAMETER_MM, MAX_DIAMETER_MM = 3.0, 30.0
#: Segment colour per class (those of the typed segments the engine writes, ``LungDDPMLib.data.segmentation``).
NODULE_COLORS = {"solid": (0.95, 0.55, 0.2), "part-solid": (0.9, 0.75, 0.45), "ground-glass": (0.6, 0.85, 0.95)}


def _unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((points - a) @ ab) / float(ab @ ab), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[..., None] * ab), axis=-1)


def nodule_mask(
    volume: Any, center_ras: Sequence[float], diameter_mm: float, shape: str = "round", seed: int = 0
) -> np.ndarray:
    """Boolean ``(K, J, I)`` mask of a nodule centred at ``center_ras`` on ``volume``'s grid."""
    if not MIN_DIAMETER_MM <= float(diameter_mm) <= MAX_DIAMETER_MM:
        raise mb.LayoutError(
            f"nodule diameter {diameter_mm:g} mm is outside {MIN_DIAMETER_MM:g}-{MAX_DIAMETER_MM:g} mm"
        )
    if shape not in SHAPES:
        raise mb.LayoutError(f"unknown nodule shape {shape!r}; choose one of {', '.join(SHAPES)}")
    shape_kji = mb.shape_kji(volume)
    m = mb.ijk_to_ras(volume)
    centre = np.asarray(center_ras, dtype=float)
    centre_ijk = np.linalg.solve(m, np.append(centre, 1.0))[:3]
    radius = diameter_mm / 2.0
    reach = radius * (2.3 if shape == "spiculated" else 1.2)
    spacing = np.asarray(volume.GetSpacing(), dtype=float)
    half = np.ceil(reach / spacing).astype(int) + 1
    lo = np.maximum(np.floor(centre_ijk).astype(int) - half, 0)
    hi = np.minimum(np.ceil(centre_ijk).astype(int) + half + 1, np.asarray(shape_kji[::-1]))
    out = np.zeros(shape_kji, dtype=bool)
    if np.any(hi <= lo):
        raise mb.LayoutError(
            f"the nodule point {np.round(centre, 1).tolist()} (RAS) lies outside the volume '{volume.GetName()}'"
        )
    k, j, i = np.meshgrid(*(np.arange(lo[a], hi[a]) for a in (2, 1, 0)), indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    points = (ijk1 @ m.T)[..., :3]
    rng = np.random.default_rng(seed)
    if shape == "lobulated":
        n = int(rng.integers(3, 7))
        lobe_r = radius * rng.uniform(0.45, 0.65, n)
        centres = centre + _unit_vectors(n, rng) * (radius - lobe_r)[:, None]
        inside = np.linalg.norm(points - centre, axis=-1) <= radius * 0.8
        for c, r in zip(centres, lobe_r):
            inside |= np.linalg.norm(points - c, axis=-1) <= r
    else:
        inside = np.linalg.norm(points - centre, axis=-1) <= radius
        if shape == "spiculated":
            thickness = max(0.6 * float(spacing.min()), 0.12 * radius)
            for d in _unit_vectors(int(rng.integers(8, 17)), rng):
                a, b = centre + d * radius * 0.7, centre + d * radius * rng.uniform(1.4, 2.2)
                inside |= _segment_distance(points, a, b) <= thickness
    out[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]] = inside
    if not out.any():
        raise mb.LayoutError(
            f"a {diameter_mm:g} mm nodule at {np.round(centre, 1).tolist()} covers no voxel of "
            f"'{volume.GetName()}'; place the point inside the volume or choose a larger diameter"
        )
    return out


def add_nodule_segment(
    segmentation_node: Any,
    volume: Any,
    center_ras: Sequence[float],
    diameter_mm: float = 10.0,
    shape: str = "round",
    seed: int = 0,
    name: Optional[str] = None,
    nodule_type: str = "solid",
) -> str:
    """Add a nodule segment ("Nodule N <type>") to ``segmentation_node`` on ``volume``'s grid; returns its ID.

    A ``name`` given here must state ``nodule_type`` or no class at all (then the type is appended), so that the
    layout reads the class that was asked for.
    """
    if nodule_type not in NODULE_TYPES:
        raise mb.LayoutError(f"unknown nodule type {nodule_type!r}; choose one of {', '.join(NODULE_TYPES)}")
    mask = nodule_mask(volume, center_ras, diameter_mm, shape, seed)
    segmentation = segmentation_node.GetSegmentation()
    if name is None:
        taken = {n.lower() for n in mb.segment_names(segmentation_node).values()}
        count = 1
        while any(t == f"nodule {count}" or t.startswith(f"nodule {count} ") for t in taken):
            count += 1
        name = f"Nodule {count}"
    stated = mb.nodule_type_from_name(name)
    if stated is None:
        name = f"{name} {nodule_type}"
    elif stated != nodule_type:
        raise mb.LayoutError(f"the name {name!r} states a {stated} nodule, but a {nodule_type} nodule was asked for")
    if segmentation_node.GetNodeReference(segmentation_node.GetReferenceImageGeometryReferenceRole()) is None:
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segment_id = segmentation.AddEmptySegment("", name, list(NODULE_COLORS[nodule_type]))
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), segmentation_node, segment_id, volume)
    segment = segmentation.GetSegment(segment_id)
    set_terminology(segment, "nodule")
    for key, value in (("shape", shape), ("diameter_mm", f"{diameter_mm:g}"), ("nodule_type", nodule_type)):
        segment.SetTag(mb.ATTRIBUTE_PREFIX + key, value)
    return segment_id


def add_nodule_at_markup(
    segmentation_node: Any, volume: Any, markups: Any, point_index: int = -1, **kwargs: Any
) -> str:
    """Add a nodule at a control point of a markups node (the last one by default)."""
    n = markups.GetNumberOfControlPoints() if markups is not None else 0
    if n == 0:
        raise mb.LayoutError("place a markup point where the nodule should be first")
    index = point_index if point_index >= 0 else n + point_index
    position = [0.0, 0.0, 0.0]
    markups.GetNthControlPointPositionWorld(index, position)
    return add_nodule_segment(segmentation_node, volume, position, **kwargs)
