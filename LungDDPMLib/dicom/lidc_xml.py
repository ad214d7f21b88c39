"""LIDC-IDRI reader XML (one file per CT series, up to four readers) read with the standard library.

The schema (LIDC's ``LidcReadMessage``): ``ResponseHeader`` names the series (``SeriesInstanceUid``, spelt so) and
the study (``StudyInstanceUID``); one ``readingSession`` per reader (``servicingRadiologistID``) holds
``unblindedReadNodule`` elements (``noduleID``, ``characteristics``, one ``roi`` per slice: ``imageZposition``,
``imageSOP_UID``, ``inclusion`` TRUE/FALSE, ``edgeMap`` points ``xCoord`` = column, ``yCoord`` = row) and
``nonNodule`` elements (``nonNoduleID``, ``imageZposition``, ``imageSOP_UID``, one ``locus`` point). A nodule every
one of whose inclusion ROIs is a single point is a *small nodule* (< 3 mm: LIDC asks only for its centre).

Tags are matched by local name, so the usual namespace ``http://www.nih.gov``, another one, or none all read the
same. Characteristics left empty or 0 (some readers did) are missing (None), never a rating.

Example::

    read = read_lidc_xml("069.xml")
    read.series_uid, [len(s.nodules) for s in read.sessions]
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

from ..errors import InputError

PathLike = Union[str, Path]
#: The rated characteristics and their valid ranges (LIDC's documentation; calcification 6 = absent).
CHARACTERISTICS: Dict[str, Tuple[int, int]] = {
    "subtlety": (1, 5),
    "internalStructure": (1, 4),
    "calcification": (1, 6),
    "sphericity": (1, 5),
    "margin": (1, 5),
    "lobulation": (1, 5),
    "spiculation": (1, 5),
    "texture": (1, 5),
    "malignancy": (1, 5),
}
ROOT_TAG = "LidcReadMessage"


@dataclass(frozen=True)
class Roi:
    """One contour on one slice: ``points`` are (column, row) pixel indices of the outline, in drawing order."""

    z: Optional[float]
    sop_uid: str
    inclusion: bool
    points: Tuple[Tuple[int, int], ...]


@dataclass(frozen=True)
class ReaderNodule:
    """One reader's mark of a nodule: contours (or a single point for a small nodule) and the ratings."""

    reader: str
    nodule_id: str
    characteristics: Dict[str, Optional[int]]
    rois: Tuple[Roi, ...]

    @property
    def small(self) -> bool:
        included = [r for r in self.rois if r.inclusion]
        return bool(included) and all(len(r.points) == 1 for r in included)


@dataclass(frozen=True)
class NonNodule:
    """A reader's "not a nodule" mark: one point on one slice."""

    reader: str
    nodule_id: str
    z: Optional[float]
    sop_uid: str
    point: Tuple[int, int]


@dataclass
class ReadingSession:
    reader: str
    nodules: List[ReaderNodule]
    small_nodules: List[ReaderNodule]
    non_nodules: List[NonNodule]


@dataclass
class LidcRead:
    path: Path
    series_uid: str
    study_uid: str
    sessions: List[ReadingSession]


def local(tag: str) -> str:
    """A tag's name without its namespace (``{http://www.nih.gov}roi`` -> ``roi``)."""
    return tag.rsplit("}", 1)[-1]


def children(elem: ET.Element, name: str) -> Iterator[ET.Element]:
    return (c for c in elem if local(c.tag) == name)


def child_text(elem: ET.Element, name: str) -> str:
    found = next(children(elem, name), None)
    return (found.text or "").strip() if found is not None else ""


class _Where:
    """Names the place of a bad value in messages: file, reader, nodule."""

    def __init__(self, path: Path) -> None:
        self.path, self.reader, self.nodule = path, "", ""

    def fail(self, what: str) -> InputError:
        at = "".join(f", {k} {v}" for k, v in (("reader", self.reader), ("nodule", self.nodule)) if v)
        return InputError(f"{self.path}{at}: {what}")


def _float(text: str, where: _Where, name: str) -> Optional[float]:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise where.fail(f"{name} is {text!r}, not a number") from None


def _int(text: str, where: _Where, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise where.fail(f"{name} is {text!r}, not a whole number") from None


def _characteristics(elem: Optional[ET.Element], where: _Where) -> Dict[str, Optional[int]]:
    out: Dict[str, Optional[int]] = {name: None for name in CHARACTERISTICS}
    if elem is None:
        return out
    for name, (lo, hi) in CHARACTERISTICS.items():
        text = child_text(elem, name)
        value = _int(text, where, name) if text else 0
        if value == 0:
            continue
        if not lo <= value <= hi:
            raise where.fail(f"{name} is {value}, outside {lo}..{hi}")
        out[name] = value
    return out


def _point(elem: ET.Element, where: _Where) -> Tuple[int, int]:
    x, y = child_text(elem, "xCoord"), child_text(elem, "yCoord")
    if not x or not y:
        raise where.fail(f"a <{local(elem.tag)}> point without xCoord or yCoord")
    return _int(x, where, "xCoord"), _int(y, where, "yCoord")


def _roi(elem: ET.Element, where: _Where) -> Roi:
    inclusion = child_text(elem, "inclusion").upper() or "TRUE"
    if inclusion not in ("TRUE", "FALSE"):
        raise where.fail(f"inclusion is {inclusion!r}, not TRUE or FALSE")
    z = _float(child_text(elem, "imageZposition"), where, "imageZposition")
    sop = child_text(elem, "imageSOP_UID")
    if z is None and not sop:
        raise where.fail("a roi with neither imageZposition nor imageSOP_UID: its slice is unknown")
    points = tuple(_point(e, where) for e in children(elem, "edgeMap"))
    if not points:
        raise where.fail(f"a roi without edgeMap points (slice z={z})")
    return Roi(z, sop, inclusion == "TRUE", points)


def _session(elem: ET.Element, index: int, where: _Where) -> ReadingSession:
    reader = child_text(elem, "servicingRadiologistID") or f"session{index + 1}"
    where.reader, where.nodule = reader, ""
    session = ReadingSession(reader, [], [], [])
    for k, node in enumerate(children(elem, "unblindedReadNodule")):
        where.nodule = child_text(node, "noduleID") or f"#{k + 1}"
        rois = tuple(_roi(r, where) for r in children(node, "roi"))
        if not rois:
            raise where.fail("a nodule without any roi")
        mark = ReaderNodule(
            reader, where.nodule, _characteristics(next(children(node, "characteristics"), None), where), rois
        )
        (session.small_nodules if mark.small else session.nodules).append(mark)
    for k, node in enumerate(children(elem, "nonNodule")):
        where.nodule = child_text(node, "nonNoduleID") or f"non-nodule #{k + 1}"
        locus = next(children(node, "locus"), None)
        if locus is None:
            raise where.fail("a nonNodule without a locus")
        z = _float(child_text(node, "imageZposition"), where, "imageZposition")
        sop = child_text(node, "imageSOP_UID")
        session.non_nodules.append(NonNodule(reader, where.nodule, z, sop, _point(locus, where)))
    return session


def parse_root(path: PathLike) -> ET.Element:
    """The root element, or one line naming the file where it is not well-formed XML."""
    path = Path(path)
    try:
        return ET.parse(str(path)).getroot()
    except ET.ParseError as exc:
        raise InputError(f"{path}: malformed XML ({exc}); the reader file is damaged") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the reader XML ({exc.strerror or exc})") from None


def header_uids(root: ET.Element, path: PathLike) -> Tuple[str, str]:
    """(SeriesInstanceUid, StudyInstanceUID) from the ResponseHeader; the series UID is required."""
    if local(root.tag) != ROOT_TAG:
        raise InputError(f"{path}: root element <{local(root.tag)}>, not <{ROOT_TAG}>: not a LIDC CT reader XML")
    header = next(children(root, "ResponseHeader"), None)
    series = child_text(header, "SeriesInstanceUid") if header is not None else ""
    if not series:
        raise InputError(f"{path}: no ResponseHeader/SeriesInstanceUid, so the file names no CT series")
    return series, child_text(header, "StudyInstanceUID")


def read_lidc_xml(path: PathLike) -> LidcRead:
    """Read a LIDC reader XML: every reading session's nodules, small nodules and non-nodules.

    Raises:
        InputError: malformed XML, another root element, no SeriesInstanceUid, or a bad value (the message names
        the file, the reader and the nodule).
    """
    path = Path(path)
    root = parse_root(path)
    series, study = header_uids(root, path)
    where = _Where(path)
    sessions = [_session(s, i, where) for i, s in enumerate(children(root, "readingSession"))]
    return LidcRead(path, series, study, sessions)
