"""Rasterising tapered tubes (capsules): the one primitive behind ribs, great vessels, airways, vessel
trees and nodule spicules.

Every tube is evaluated only inside its own bounding box, which is what keeps thousands of vessel segments
fast enough for a sub-10-second phantom. Distances are in millimetres, so anisotropic voxels are handled
exactly and the partial-volume fraction of thin structures comes out right.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .frame import Frame

Box = Tuple[slice, slice, slice]


def segment_distance(
    frame: Frame,
    p0: np.ndarray,
    p1: np.ndarray,
    r0: float,
    r1: float,
    margin: float = 0.0,
    metric: Optional[Sequence[float]] = None,
) -> Tuple[Optional[Box], Optional[np.ndarray]]:
    """Signed distance (mm) to the surface of a tapered capsule, inside the capsule's bounding box.

    Args:
        p0, p1: end points, physical ``(z, y, x)`` mm.
        r0, r1: radii at ``p0`` and ``p1`` (linearly interpolated along the axis).
        margin: extra mm around the box, for callers that need the distance outside the surface.
        metric: per-axis stretch ``(z, y, x)`` of the distance (e.g. ``(0.66, 1, 1)`` makes a rib's
            cross-section 1.5 times taller than wide).

    Returns:
        ``(box, sd)`` with ``sd < 0`` inside; ``(None, None)`` if the box misses the volume.
    """
    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    m = np.ones(3) if metric is None else np.asarray(metric, dtype=np.float64)
    reach = (max(r0, r1) + margin) / np.min(m) + 1e-6
    box = frame.box(np.minimum(p0, p1) - reach, np.maximum(p0, p1) + reach)
    if any(s.stop <= s.start for s in box):
        return None, None
    cz, cy, cx = frame.box_coords(box)
    a = p0 * m
    v = (p1 - p0) * m
    length2 = float(v @ v)
    qz = cz * m[0] - a[0]
    qy = cy * m[1] - a[1]
    qx = cx * m[2] - a[2]
    if length2 < 1e-12:
        t = np.zeros((1, 1, 1), dtype=np.float32)
    else:
        t = np.clip((qz * v[0] + qy * v[1] + qx * v[2]) / length2, 0.0, 1.0)
    dist = np.sqrt((qz - t * v[0]) ** 2 + (qy - t * v[1]) ** 2 + (qx - t * v[2]) ** 2)
    return box, dist - (r0 + (r1 - r0) * t)


def paint_tube(
    labels: np.ndarray,
    frame: Frame,
    points: Sequence[np.ndarray],
    radii: Sequence[float],
    code: int,
    keep: Sequence[int] = (),
    metric: Optional[Sequence[float]] = None,
    inset: float = 0.0,
    only: Sequence[int] = (),
) -> None:
    """Set ``labels`` to ``code`` inside a polyline tube, leaving voxels whose code is in ``keep``
    (and, if ``only`` is given, touching only voxels whose code is in ``only``).

    ``inset`` shrinks the tube (mm), which is how a bone's trabecular core or an airway's lumen is drawn
    inside a wall painted by an earlier call.
    """
    for i in range(len(points) - 1):
        box, sd = segment_distance(
            frame, points[i], points[i + 1], radii[i] - inset, radii[i + 1] - inset, metric=metric
        )
        if box is None:
            continue
        inside = sd < 0
        if keep:
            inside &= ~np.isin(labels[box], keep)
        if only:
            inside &= np.isin(labels[box], only)
        labels[box][inside] = code


def accumulate_occupancy(
    occupancy: np.ndarray, frame: Frame, p0: np.ndarray, p1: np.ndarray, r0: float, r1: float
) -> None:
    """Raise ``occupancy`` (0..1) to the partial-volume fraction of a tapered segment.

    A vessel thinner than a voxel cannot fill it: the peak fraction is capped by the vessel's
    cross-section area over a voxel face, so small vessels fade as they would on a real scanner.
    """
    h = frame.voxel_mm
    box, sd = segment_distance(frame, p0, p1, r0, r1, margin=h)
    if box is None:
        return
    r_mean = 0.5 * (r0 + r1)
    peak = min(1.0, np.pi * r_mean * r_mean / (h * h))
    frac = np.clip(0.5 - sd / h, 0.0, 1.0) * np.float32(peak)
    np.maximum(occupancy[box], frac.astype(np.float32), out=occupancy[box])


def polyline(frame: Frame, landmarks: Sequence[Tuple[float, float, float]]) -> list:
    """Physical points of landmarks given as (adult x mm, adult y mm, height fraction)."""
    return [frame.point(x, y, w) for x, y, w in landmarks]
