"""Several readers' marks of one nodule made into one: clustering, the consensus mask, size, class and ratings.

Rules (each a field of :class:`ConsensusRules`, each a ``lungddpm import-lidc`` option):

- **Clustering** (``cluster``): marks of the same kind by different readers are one nodule when they are close,
  transitively (single linkage); a reader's two marks are never joined directly. ``centroid`` (default): the
  centroids are at most ``max(r1, r2, cluster_floor_mm)`` apart, r the radius of the sphere with the mark's
  volume; ``overlap``: the masks share a voxel. Point marks (small nodules, non-nodules) always use ``centroid``.
- **Consensus** (``consensus``, default 0.5): the nodule's mask holds the voxels that at least that share of the
  readers who marked it include (a reader's marks of the nodule joined).
- **Kept** (``min_readers``, default 1): only nodules marked by at least that many readers are drawn.
- **Diameter** (``diameter``): ``max-extent`` (default) is the largest distance between two voxel centres of
  the consensus mask within one slice (mm, in-plane, as radiologists measure); ``equivalent-sphere`` is the
  diameter of the sphere with the consensus volume. Nodules under ``min_diameter_mm`` (3 mm) are not drawn.
- **Class** from the median texture of the readers who rated it (1 non-solid .. 5 solid): at most
  ``ggo_texture_max`` (2) ground-glass (label 5), at least ``solid_texture_min`` (4) solid (3), part-solid (4)
  between; no texture rating: label 2, a nodule of no stated class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import pdist

from ..config import LABEL_NODULE, LABEL_OF_TYPE
from ..data.geometry import Geometry
from ..errors import InputError
from .lidc_marks import Mark

CLUSTER_RULES = ("centroid", "overlap")
DIAMETER_RULES = ("max-extent", "equivalent-sphere")


@dataclass(frozen=True)
class ConsensusRules:
    consensus: float = 0.5
    min_readers: int = 1
    cluster: str = "centroid"
    cluster_floor_mm: float = 3.0
    diameter: str = "max-extent"
    min_diameter_mm: float = 3.0
    ggo_texture_max: float = 2.0
    solid_texture_min: float = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.consensus <= 1:
            raise InputError(f"--consensus must be in (0, 1], got {self.consensus}")
        if self.min_readers < 1:
            raise InputError(f"--min-readers must be >= 1, got {self.min_readers}")
        if self.cluster not in CLUSTER_RULES:
            raise InputError(f"unknown --cluster rule {self.cluster!r}; choose {' or '.join(CLUSTER_RULES)}")
        if self.diameter not in DIAMETER_RULES:
            raise InputError(f"unknown --diameter rule {self.diameter!r}; choose {' or '.join(DIAMETER_RULES)}")
        if self.cluster_floor_mm < 0 or self.min_diameter_mm < 0:
            raise InputError("--cluster-floor-mm and --min-diameter-mm must not be negative")
        if not 1 <= self.ggo_texture_max < self.solid_texture_min <= 5:
            raise InputError(
                f"need 1 <= --ggo-texture-max < --solid-texture-min <= 5, got {self.ggo_texture_max} and "
                f"{self.solid_texture_min}"
            )


@dataclass
class Nodule:
    """One nodule (or small nodule, or non-nodule) as all its readers marked it."""

    kind: str
    marks: List[Mark]
    readers: List[str]
    centroid_mm: np.ndarray  # world (LPS) x, y, z
    diameter_mm: Optional[float]
    medians: Dict[str, Optional[float]]
    label: Optional[int]
    drawn: bool
    note: str
    voxels: np.ndarray  # (n, 3) z, y, x of the consensus mask (empty unless drawn or drawable)


def _centroid_index(mark: Mark) -> np.ndarray:
    v = mark.voxels()
    return v.mean(axis=0) if len(v) else np.asarray(mark.offset, dtype=np.float64)


def _world(geometry: Geometry, zyx: np.ndarray) -> np.ndarray:
    return geometry.index_to_physical(np.asarray(zyx, dtype=np.float64)[::-1])


def _radius(mark: Mark, voxel_mm3: float) -> float:
    return float((3 * mark.size * voxel_mm3 / (4 * np.pi)) ** (1 / 3))


def _overlap(a: Mark, b: Mark) -> bool:
    lo = np.maximum(a.offset, b.offset)
    hi = np.minimum(np.add(a.offset, a.mask.shape), np.add(b.offset, b.mask.shape))
    if np.any(hi <= lo):
        return False
    sa = tuple(slice(int(s - o), int(e - o)) for s, e, o in zip(lo, hi, a.offset))
    sb = tuple(slice(int(s - o), int(e - o)) for s, e, o in zip(lo, hi, b.offset))
    return bool(np.any(a.mask[sa] & b.mask[sb]))


def cluster(marks: Sequence[Mark], geometry: Geometry, rules: ConsensusRules) -> List[List[Mark]]:
    """Groups of marks of one nodule, by the rule of ``rules.cluster`` (see the module's docstring)."""
    voxel_mm3 = float(np.prod(geometry.spacing))
    centres = [_world(geometry, _centroid_index(m)) for m in marks]
    radii = [_radius(m, voxel_mm3) for m in marks]
    parent = list(range(len(marks)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(marks)):
        for j in range(i + 1, len(marks)):
            a, b = marks[i], marks[j]
            if a.reader == b.reader:
                continue
            points = a.kind != "nodule"
            if rules.cluster == "overlap" and not points:
                close = _overlap(a, b)
            else:
                close = np.linalg.norm(centres[i] - centres[j]) <= max(radii[i], radii[j], rules.cluster_floor_mm)
            if close:
                parent[root(i)] = root(j)
    groups: Dict[int, List[Mark]] = {}
    for i, m in enumerate(marks):
        groups.setdefault(root(i), []).append(m)
    return list(groups.values())


def consensus_voxels(marks: Sequence[Mark], level: float) -> np.ndarray:
    """(n, 3) voxels (z, y, x) that at least ``level`` of the readers of ``marks`` include."""
    lo = np.min([m.offset for m in marks], axis=0)
    hi = np.max([np.add(m.offset, m.mask.shape) for m in marks], axis=0)
    readers = sorted({m.reader for m in marks})
    count = np.zeros(tuple(int(v) for v in hi - lo), dtype=np.int32)
    for reader in readers:
        own = np.zeros(count.shape, dtype=bool)
        for m in (m for m in marks if m.reader == reader):
            box = tuple(slice(int(o - b), int(o - b + n)) for o, b, n in zip(m.offset, lo, m.mask.shape))
            own[box] |= m.mask
        count += own
    return np.argwhere(count >= level * len(readers) - 1e-9) + lo


def max_extent_mm(voxels: np.ndarray, spacing_xyz: Sequence[float]) -> float:
    """Largest in-plane distance between two voxel centres of one slice (mm); 0 for a single voxel."""
    best = 0.0
    for k in np.unique(voxels[:, 0]):
        yx = voxels[voxels[:, 0] == k][:, 1:]
        yx = yx - yx.min(axis=0)
        if len(yx) < 2:
            continue
        plane = np.zeros(tuple(yx.max(axis=0) + 3), dtype=bool)
        plane[yx[:, 0] + 1, yx[:, 1] + 1] = True
        edge = np.argwhere(plane & ~binary_erosion(plane))  # the farthest pair lies on the border
        best = max(best, float(pdist(edge * np.asarray([spacing_xyz[1], spacing_xyz[0]])).max()))
    return best


def _median(marks: Sequence[Mark], name: str) -> Optional[float]:
    by_reader: Dict[str, int] = {}
    for m in marks:
        value = m.characteristics.get(name)
        if value is not None and m.reader not in by_reader:
            by_reader[m.reader] = value
    return float(np.median(list(by_reader.values()))) if by_reader else None


def texture_label(texture: Optional[float], rules: ConsensusRules) -> int:
    if texture is None:
        return LABEL_NODULE
    if texture <= rules.ggo_texture_max:
        return LABEL_OF_TYPE["ground-glass"]
    if texture >= rules.solid_texture_min:
        return LABEL_OF_TYPE["solid"]
    return LABEL_OF_TYPE["part-solid"]


def make_nodule(marks: List[Mark], geometry: Geometry, rules: ConsensusRules) -> Nodule:
    """One cluster's consensus: mask, centroid (LPS mm), diameter, class, medians and whether it is drawn."""
    kind = marks[0].kind
    readers = sorted({m.reader for m in marks})
    medians = {n: _median(marks, n) for n in ("texture", "malignancy", "subtlety")}
    empty = np.zeros((0, 3), dtype=np.int64)
    if kind != "nodule":
        centre = np.mean([_world(geometry, _centroid_index(m)) for m in marks], axis=0)
        return Nodule(kind, marks, readers, centre, None, medians, None, False, f"{kind}: listed, not drawn", empty)
    voxels = consensus_voxels(marks, rules.consensus)
    every = np.concatenate([m.voxels() for m in marks])
    if not len(every):  # only holes drawn: place the row where the marks are
        every = np.asarray([m.offset for m in marks], dtype=np.float64)
    centre = _world(geometry, (voxels if len(voxels) else every).mean(axis=0))
    if rules.diameter == "max-extent":
        diameter = max_extent_mm(voxels, geometry.spacing) if len(voxels) else 0.0
    else:
        diameter = 2 * float((3 * len(voxels) * float(np.prod(geometry.spacing)) / (4 * np.pi)) ** (1 / 3))
    label = texture_label(medians["texture"], rules)
    note = ""
    if len(readers) < rules.min_readers:
        note = f"marked by {len(readers)} reader(s), fewer than --min-readers {rules.min_readers}"
    elif not len(voxels):
        note = f"no voxel reaches the --consensus {rules.consensus} of its readers"
    elif diameter < rules.min_diameter_mm:
        note = f"diameter {diameter:.2f} mm under --min-diameter-mm {rules.min_diameter_mm}"
    return Nodule(kind, marks, readers, centre, diameter, medians, label, not note, note, voxels)


def nodules_from_marks(marks: Sequence[Mark], geometry: Geometry, rules: ConsensusRules) -> List[Nodule]:
    """All clusters of every kind, nodules first, each kind ordered from the top slice (lowest index) down."""
    out: List[Nodule] = []
    for kind in ("nodule", "small-nodule", "non-nodule"):
        groups = cluster([m for m in marks if m.kind == kind], geometry, rules)
        made = [make_nodule(g, geometry, rules) for g in groups]
        out += sorted(made, key=lambda n: tuple(np.round(n.centroid_mm[::-1], 3)))
    return out
