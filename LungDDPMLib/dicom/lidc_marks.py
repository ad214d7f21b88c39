"""One reader's LIDC marks as voxel masks on the series grid.

The rule, as LIDC defines its outlines: the ``edgeMap`` points of a contour are its outline pixels and belong to
the nodule, together with every pixel whose centre lies inside the polygon through them (consecutive points, and
the last with the first, joined by straight lines, so outlines given by their corners only work too). An
``inclusion FALSE`` contour outlines a hole: the pixels strictly inside it are removed from the nodule on that
slice, its outline pixels stay (they are the nodule's inner border). A ROI's slice is found by its
``imageSOP_UID``; where the series has no such SOP Instance UID, by ``imageZposition`` (the nearest slice within
half the slice step). A point or contour outside the image is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from skimage.draw import line, polygon

from ..errors import InputError
from .lidc_xml import NonNodule, ReaderNodule, Roi
from .series import DicomSeries

#: The three kinds of marks a reader makes (also the CSV's ``kind`` column).
KINDS = ("nodule", "small-nodule", "non-nodule")


@dataclass
class Mark:
    """A reader's mark as a boolean box ``mask`` (z, y, x) whose first voxel is at index ``offset`` (z, y, x)."""

    reader: str
    nodule_id: str
    kind: str
    offset: Tuple[int, int, int]
    mask: np.ndarray
    characteristics: Dict[str, Optional[int]] = field(default_factory=dict)

    def voxels(self) -> np.ndarray:
        """(n, 3) indices (z, y, x) of the mark's voxels in the whole volume."""
        return np.argwhere(self.mask) + np.asarray(self.offset)

    @property
    def size(self) -> int:
        return int(self.mask.sum())


class SliceFinder:
    """Finds the slice index of a ROI (SOP Instance UID first, else z within half a step) and checks its points."""

    def __init__(self, series: DicomSeries, xml: str) -> None:
        self.xml = xml
        self.by_uid = {uid: k for k, uid in enumerate(series.sop_uids)}
        self.z = np.asarray(series.z_positions, dtype=np.float64)
        self.step = series.slice_spacing
        self.columns, self.rows = (int(v) for v in series.image.GetSize()[:2])

    def where(self, reader: str, nodule: str) -> str:
        return f"{self.xml}, reader {reader}, nodule {nodule}"

    def slice_of(self, z: Optional[float], sop: str, where: str) -> int:
        if sop in self.by_uid:
            return self.by_uid[sop]
        if z is not None:
            k = int(np.argmin(np.abs(self.z - z)))
            if abs(self.z[k] - z) <= 0.5 * self.step + 1e-6:
                return k
        raise InputError(
            f"{where}: a mark on z={z} mm (SOP Instance UID {sop or 'none'}) matches no slice of the series "
            f"(slices at z {self.z.min():.3f}..{self.z.max():.3f} mm); the XML belongs to another series or is damaged"
        )

    def check_points(self, points: Sequence[Tuple[int, int]], z: Optional[float], where: str) -> None:
        for x, y in points:
            if not (0 <= x < self.columns and 0 <= y < self.rows):
                raise InputError(
                    f"{where}: contour point (x={x}, y={y}) on z={z} mm lies outside the "
                    f"{self.columns}x{self.rows} image; the XML does not fit this series"
                )


def outline_and_fill(points: Sequence[Tuple[int, int]]) -> Tuple[Tuple[int, int], np.ndarray, np.ndarray]:
    """(row0, col0), outline and inside-the-polygon masks of a contour, in the box around its points.

    ``outline``: the points and the straight lines joining them in a closed loop. ``fill``: the pixels whose centres
    lie inside the polygon (may include outline pixels). ``points`` are (column, row), as LIDC gives them.
    """
    xs = np.asarray([p[0] for p in points], dtype=np.int64)
    ys = np.asarray([p[1] for p in points], dtype=np.int64)
    y0, x0 = int(ys.min()), int(xs.min())
    shape = (int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1)
    outline = np.zeros(shape, dtype=bool)
    fill = np.zeros(shape, dtype=bool)
    ly, lx = ys - y0, xs - x0
    for k in range(len(points)):
        rr, cc = line(int(ly[k]), int(lx[k]), int(ly[k - 1]), int(lx[k - 1]))
        outline[rr, cc] = True
    if len(points) >= 3:
        rr, cc = polygon(ly, lx, shape=shape)
        fill[rr, cc] = True
    return (y0, x0), outline, fill


def _paste(canvas: np.ndarray, corner: Tuple[int, int], box: np.ndarray, value: bool) -> None:
    y0, x0 = corner
    view = canvas[y0 : y0 + box.shape[0], x0 : x0 + box.shape[1]]
    view[box] = value


def nodule_mark(nodule: ReaderNodule, finder: SliceFinder) -> Mark:
    """A contoured nodule's voxels: per slice the inclusion contours (outline and inside), less the holes."""
    where = finder.where(nodule.reader, nodule.nodule_id)
    per_slice: Dict[int, List[Roi]] = {}
    for roi in nodule.rois:
        finder.check_points(roi.points, roi.z, where)
        per_slice.setdefault(finder.slice_of(roi.z, roi.sop_uid, where), []).append(roi)
    planes: Dict[int, np.ndarray] = {}
    for k, rois in per_slice.items():
        plane = np.zeros((finder.rows, finder.columns), dtype=bool)
        for roi in sorted(rois, key=lambda r: not r.inclusion):  # inclusions first, then the holes cut out
            corner, outline, fill = outline_and_fill(roi.points)
            if roi.inclusion:
                _paste(plane, corner, outline | fill, True)
            else:
                _paste(plane, corner, fill & ~outline, False)
        planes[k] = plane
    return _boxed(nodule.reader, nodule.nodule_id, "nodule", planes, nodule.characteristics)


def point_mark(
    reader: str,
    nodule_id: str,
    kind: str,
    z: Optional[float],
    sop: str,
    point: Tuple[int, int],
    finder: SliceFinder,
    characteristics: Optional[Dict[str, Optional[int]]] = None,
) -> Mark:
    """A one-voxel mark: a small nodule's centre or a non-nodule's locus."""
    where = finder.where(reader, nodule_id)
    finder.check_points([point], z, where)
    k = finder.slice_of(z, sop, where)
    return Mark(reader, nodule_id, kind, (k, point[1], point[0]), np.ones((1, 1, 1), dtype=bool), characteristics or {})


def _boxed(reader: str, nodule_id: str, kind: str, planes: Dict[int, np.ndarray], chars: Dict) -> Mark:
    ks = sorted(planes)
    stack = np.zeros((ks[-1] - ks[0] + 1, *planes[ks[0]].shape), dtype=bool)
    for k in ks:
        stack[k - ks[0]] = planes[k]
    if not stack.any():
        return Mark(reader, nodule_id, kind, (ks[0], 0, 0), np.zeros((1, 1, 1), dtype=bool), chars)
    zz, yy, xx = (np.flatnonzero(stack.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    box = stack[zz[0] : zz[-1] + 1, yy[0] : yy[-1] + 1, xx[0] : xx[-1] + 1]
    return Mark(reader, nodule_id, kind, (ks[0] + int(zz[0]), int(yy[0]), int(xx[0])), box.copy(), chars)


def reader_marks(sessions: Sequence, series: DicomSeries, xml: str) -> List[Mark]:
    """Every mark of every reading session, as :class:`Mark` on the series grid."""
    finder = SliceFinder(series, xml)
    marks: List[Mark] = []
    for session in sessions:
        marks += [nodule_mark(n, finder) for n in session.nodules]
        for n in session.small_nodules:
            roi = next(r for r in n.rois if r.inclusion)
            marks.append(
                point_mark(
                    n.reader, n.nodule_id, "small-nodule", roi.z, roi.sop_uid, roi.points[0], finder, n.characteristics
                )
            )
        nn: NonNodule
        for nn in session.non_nodules:
            marks.append(point_mark(nn.reader, nn.nodule_id, "non-nodule", nn.z, nn.sop_uid, nn.point, finder))
    return marks
