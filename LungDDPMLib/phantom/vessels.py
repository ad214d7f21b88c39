"""Branching, tapering pulmonary vessel and airway trees.

Each tree starts at the hilum (end of a pulmonary artery, vein or main bronchus), sends one lobar branch
toward each lobe and then bifurcates recursively: children obey Murray's law (r1^3 + r2^3 = r^3, with random
asymmetry), the thinner child turns more, lengths scale with radius, and a branch that would leave the lung
is shortened once and otherwise ends. That is the simplest growth rule that gives the radiological picture:
thick vessels at the hila, thinning toward a periphery that stays a few millimetres clear of the pleura.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from . import tissues as T
from .frame import Frame
from .tubes import accumulate_occupancy, paint_tube


@dataclass(frozen=True)
class Segment:
    p0: np.ndarray
    p1: np.ndarray
    r0: float
    r1: float


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else v


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of ``v`` about the unit ``axis``."""
    c, s = np.cos(angle), np.sin(angle)
    return v * c + np.cross(axis, v) * s + axis * float(axis @ v) * (1 - c)


def _inside(frame: Frame, mask: np.ndarray, p: np.ndarray) -> bool:
    idx = np.round(frame.to_index(p)).astype(int)
    if np.any(idx < 0) or np.any(idx >= mask.shape):
        return False
    return bool(mask[idx[0], idx[1], idx[2]])


def choose_targets(frame: Frame, lung: np.ndarray, count: int, rng: np.random.Generator) -> List[np.ndarray]:
    """Spread-out points in the lung (greedy max-min over random candidates), one per primary branch, so
    that every region of the lung gets its own subtree."""
    step = 4
    candidates = np.argwhere(lung[::step, ::step, ::step])
    if len(candidates) == 0:
        return []
    pick = candidates[rng.choice(len(candidates), size=min(len(candidates), 40 * count), replace=False)]
    points = frame.to_mm(pick * step)
    chosen = [points[0]]
    dist = np.linalg.norm(points - points[0], axis=1)
    for _ in range(count - 1):
        i = int(np.argmax(dist))
        chosen.append(points[i])
        dist = np.minimum(dist, np.linalg.norm(points - points[i], axis=1))
    return chosen


def grow_tree(
    frame: Frame,
    lung: np.ndarray,
    root: np.ndarray,
    root_radius: float,
    targets: Sequence[np.ndarray],
    rng: np.random.Generator,
    min_radius: float,
    max_segments: int,
) -> List[Segment]:
    """Grow one tree inside the boolean ``lung`` mask; returns its segments, thickest first."""
    segments: List[Segment] = []
    queue: deque = deque()
    lobar_radius = root_radius * len(targets) ** (-1.0 / 3.0) * 1.25
    for target in targets:
        direction = _unit(target - root)
        # The lobar trunk leaves the hilum (often outside the lung mask) toward its lobe.
        length = 0.3 * float(np.linalg.norm(target - root))
        end = root + direction * length
        segments.append(Segment(root, end, lobar_radius, lobar_radius * 0.92))
        queue.append((end, direction, lobar_radius * 0.92))
    min_len = 1.5 * frame.voxel_mm
    while queue and len(segments) < max_segments:
        p, d, r = queue.popleft()
        outward = _unit(p - root)
        a = rng.uniform(0.65, 1.0)
        f1 = (1.0 + a**3) ** (-1.0 / 3.0)
        axis = _unit(np.cross(d, rng.standard_normal(3)))
        for radius, angle in ((r * f1, rng.uniform(10, 28)), (r * f1 * a, -rng.uniform(30, 55))):
            if radius < min_radius:
                continue
            child = _unit(_rotate(d, axis, np.radians(angle)) + 0.2 * outward)
            length = max(radius * rng.uniform(5.0, 9.0), min_len)
            end = p + child * length
            if not _inside(frame, lung, end):
                length *= 0.5
                end = p + child * length
                if length < min_len or not _inside(frame, lung, end):
                    continue
            r_end = radius * 0.95
            segments.append(Segment(p, end, radius, r_end))
            if r_end >= min_radius:
                queue.append((end, child, r_end))
    return segments


def render_vessels(occupancy: np.ndarray, frame: Frame, segments: Sequence[Segment]) -> None:
    """Partial-volume vessel fractions (blood) into ``occupancy``."""
    for seg in segments:
        accumulate_occupancy(occupancy, frame, seg.p0, seg.p1, seg.r0, seg.r1)


def render_airways(tissue: np.ndarray, occupancy: np.ndarray, frame: Frame, segments: Sequence[Segment]) -> None:
    """Airway walls as soft-tissue fractions, lumens as air; radii are the outer (wall) radii."""
    for seg in segments:
        accumulate_occupancy(occupancy, frame, seg.p0, seg.p1, seg.r0, seg.r1)
    for seg in segments:
        wall = max(0.5, 0.22 * seg.r0)
        paint_tube(
            tissue,
            frame,
            [seg.p0, seg.p1],
            [seg.r0, seg.r1],
            T.AIRWAY_LUMEN,
            inset=wall,
            only=(T.LUNG, T.AIRWAY_WALL, T.MEDIASTINAL_FAT),
        )
