"""LIDC-IDRI-style fixtures made from scratch: a CT series written with pydicom and a reader XML in LIDC's schema.

The CT is a small chest: air around a body (40 HU) with two lungs (-850 HU) holding spherical nodules (30 HU).
Slice files are named in a shuffled order (and InstanceNumber follows the names), so only the positions give the
right order. Each reader's contour of a nodule on a slice is the outline of a digital disc (every pixel centre within
the reader's sphere), traced as an 8-connected chain of pixels the way LIDC's edgeMaps are; by LIDC's rule the disc
is exactly what the contour encloses, so tests compute the truth from the discs, never from the importer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

import numpy as np

NIH = "http://www.nih.gov"
SHAPE = (20, 80, 96)  # z, y, x
SPACING = (0.68, 0.74, 1.6)  # x (between columns), y (between rows), z (mm)
ORIGIN = (-30.5, -25.25, -100.0)
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
#: x, y, z (index), radius mm of the nodules in the CT.
TRUE_NODULES = {"A": (30, 35, 10, 4.0), "B": (66, 30, 8, 3.5), "C": (64, 52, 12, 3.0), "D": (28, 58, 6, 1.2)}


@dataclass
class ReaderSphere:
    """One reader's contoured nodule: a sphere (index centre, radius mm) cut by every slice it reaches."""

    reader: str
    nodule_id: str
    centre: Tuple[float, float, float]
    radius_mm: float
    chars: Dict[str, object] = field(default_factory=dict)
    hole_mm: Optional[float] = None  # an inclusion FALSE contour on the centre slice, a disc of this radius
    unknown_sop_slices: Tuple[int, ...] = ()  # slices whose ROI names a SOP UID not in the series (found by z)
    wrong_z_slices: Tuple[int, ...] = ()  # slices whose ROI quotes another slice's z (the SOP UID must win)


@dataclass
class Series:
    folder: Path
    series_uid: str
    study_uid: str
    patient_id: str
    sop_uids: List[str]  # slice order
    z: List[float]
    files: List[Path]  # slice order


def disc(k: int, centre: Sequence[float], radius_mm: float) -> np.ndarray:
    """(y, x) mask of the pixel centres of slice ``k`` within the sphere."""
    y, x = np.mgrid[: SHAPE[1], : SHAPE[2]]
    d2 = ((x - centre[0]) * SPACING[0]) ** 2 + ((y - centre[1]) * SPACING[1]) ** 2 + ((k - centre[2]) * SPACING[2]) ** 2
    return d2 <= radius_mm**2


def sphere(centre: Sequence[float], radius_mm: float) -> np.ndarray:
    return np.stack([disc(k, centre, radius_mm) for k in range(SHAPE[0])])


_NBRS = [(0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1)]  # clockwise on screen, from west


def trace_outline(mask: np.ndarray) -> List[Tuple[int, int]]:
    """Moore-neighbour trace of a one-piece 2D mask: its outer outline as (x, y) pixels in drawing order."""
    ys, xs = np.nonzero(mask)
    start = min(zip(ys.tolist(), xs.tolist()))
    inside = lambda p: 0 <= p[0] < mask.shape[0] and 0 <= p[1] < mask.shape[1] and mask[p]  # noqa: E731
    chain, current, back = [start], start, 0  # the west neighbour of the top-left pixel is background
    for _ in range(4 * mask.size):
        for i in range(1, 9):
            j = (back + i) % 8
            cand = (current[0] + _NBRS[j][0], current[1] + _NBRS[j][1])
            if inside(cand):
                prev = (current[0] + _NBRS[j - 1][0], current[1] + _NBRS[j - 1][1])
                back = _NBRS.index((prev[0] - cand[0], prev[1] - cand[1]))
                current = cand
                break
        else:
            break  # a single pixel
        if current == start and back == 0:
            break
        chain.append(current)
    if len(chain) > 1 and chain[-1] == start:
        chain.pop()
    return [(x, y) for y, x in chain]


def chest_hu() -> np.ndarray:
    _, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    hu = np.full(SHAPE, -1000, dtype=np.int32)
    hu[((x - 48) / 44.0) ** 2 + ((y - 40) / 36.0) ** 2 <= 1] = 40
    for cx in (30, 66):
        hu[((x - cx) / 14.0) ** 2 + ((y - 41) / 28.0) ** 2 <= 1] = -850
    for cx, cy, cz, r in TRUE_NODULES.values():
        hu[sphere((cx, cy, cz), r)] = 30
    return hu


def write_series(
    folder: Path,
    stored: np.ndarray,
    *,
    slope: float = 1.0,
    intercept: float = -1024.0,
    positions: Optional[Sequence[Sequence[float]]] = None,
    orientation: Sequence[float] = AXIAL,
    patient_id: str = "LIDC-TEST-0001",
    series_uid: Optional[str] = None,
    study_uid: Optional[str] = None,
    modality: str = "CT",
    seed: int = 3,
    extra: Optional[Dict[str, object]] = None,
    prefix: str = "",
) -> Series:
    """Write ``stored`` (z, y, x unsigned values) as one file per slice, names shuffled; returns what was written."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    n = stored.shape[0]
    if positions is None:
        positions = [(ORIGIN[0], ORIGIN[1], ORIGIN[2] + k * SPACING[2]) for k in range(n)]
    names = list(range(n))
    random.Random(seed).shuffle(names)
    sops, files = [], []
    for k in range(n):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.Modality, ds.PatientID, ds.PatientName = modality, patient_id, "Test^Lidc"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.InstanceNumber = names[k] + 1
        ds.ImagePositionPatient = [float(v) for v in positions[k]]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [SPACING[1], SPACING[0]]  # between rows, between columns
        ds.SliceThickness = SPACING[2]
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(stored[k].astype("<u2")).tobytes()
        path = folder / f"{prefix}{names[k]:03d}.dcm"
        ds.save_as(str(path), enforce_file_format=True)
        sops.append(sop)
        files.append(path)
    return Series(folder, series_uid, study_uid, patient_id, sops, [float(p[2]) for p in positions], files)


def write_chest_series(folder: Path, **kwargs) -> Series:
    return write_series(folder, (chest_hu() + 1024).astype(np.uint16), **kwargs)


# --- the reader XML ------------------------------------------------------------------------------------------------


def _roi(z: float, sop: str, inclusion: bool, points: Sequence[Tuple[int, int]]) -> str:
    edges = "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>" for x, y in points)
    return (
        f"<roi><imageZposition>{z:.6f}</imageZposition><imageSOP_UID>{sop}</imageSOP_UID>"
        f"<inclusion>{'TRUE' if inclusion else 'FALSE'}</inclusion>{edges}</roi>"
    )


def _chars(chars: Dict[str, object]) -> str:
    if not chars:
        return ""
    return "<characteristics>" + "".join(f"<{k}>{v}</{k}>" for k, v in chars.items()) + "</characteristics>"


def sphere_rois(mark: ReaderSphere, series: Series) -> Tuple[List[str], Dict[int, List[Tuple[int, int]]]]:
    """The ROI elements of a contoured mark and the hole outlines it drew (slice -> points)."""
    rois, holes = [], {}
    for k in range(SHAPE[0]):
        d = disc(k, mark.centre, mark.radius_mm)
        if not d.any():
            continue
        sop = f"1.2.3.999.{k}" if k in mark.unknown_sop_slices else series.sop_uids[k]
        z = series.z[k] + (3 * SPACING[2] if k in mark.wrong_z_slices else 0.0)
        rois.append(_roi(z, sop, True, trace_outline(d)))
        if mark.hole_mm and k == round(mark.centre[2]):
            holes[k] = trace_outline(disc(k, mark.centre, mark.hole_mm))
            rois.append(_roi(series.z[k], sop, False, holes[k]))
    return rois, holes


def reader_xml(
    series: Series,
    spheres: Sequence[ReaderSphere],
    points: Sequence[Tuple[str, str, str, Tuple[int, int, int]]] = (),
    namespace: Optional[str] = NIH,
    series_uid: Optional[str] = None,
) -> Tuple[str, Dict[Tuple[str, str], Dict[int, List[Tuple[int, int]]]]]:
    """LIDC XML text for the readers' ``spheres`` and ``points`` ((reader, kind "small"/"non", id, (x, y, k))).

    Returns the text and the hole outlines drawn, by (reader, nodule id)."""
    readers = sorted({s.reader for s in spheres} | {p[0] for p in points})
    holes: Dict[Tuple[str, str], Dict[int, List[Tuple[int, int]]]] = {}
    sessions = []
    for reader in readers:
        body = [f"<annotationVersion>3.12</annotationVersion><servicingRadiologistID>{reader}</servicingRadiologistID>"]
        for s in (s for s in spheres if s.reader == reader):
            rois, holes[(reader, s.nodule_id)] = sphere_rois(s, series)
            body.append(f"<unblindedReadNodule><noduleID>{escape(s.nodule_id)}</noduleID>{_chars(s.chars)}")
            body += rois
            body.append("</unblindedReadNodule>")
        for r, kind, pid, (x, y, k) in points:
            if r != reader:
                continue
            if kind == "small":
                body.append(f"<unblindedReadNodule><noduleID>{pid}</noduleID>")
                body.append(_roi(series.z[k], series.sop_uids[k], True, [(x, y)]) + "</unblindedReadNodule>")
            else:
                body.append(
                    f"<nonNodule><nonNoduleID>{pid}</nonNoduleID><imageZposition>{series.z[k]:.6f}</imageZposition>"
                    f"<imageSOP_UID>{series.sop_uids[k]}</imageSOP_UID>"
                    f"<locus><xCoord>{x}</xCoord><yCoord>{y}</yCoord></locus></nonNodule>"
                )
        sessions.append("<readingSession>" + "".join(body) + "</readingSession>")
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    header = (
        "<ResponseHeader><Version>1.8.1</Version><TaskDescription>Second unblinded read</TaskDescription>"
        f"<SeriesInstanceUid>{series_uid or series.series_uid}</SeriesInstanceUid>"
        f"<StudyInstanceUID>{series.study_uid}</StudyInstanceUID></ResponseHeader>"
    )
    text = f'<?xml version="1.0" encoding="UTF-8"?>\n<LidcReadMessage{xmlns} uid="1.3.6.1.4.1.14519.5.2.1.6279.6001.1">'
    return text + header + "".join(sessions) + "</LidcReadMessage>\n", holes


def ratings(texture, malignancy, subtlety) -> Dict[str, object]:
    return {
        "subtlety": subtlety, "internalStructure": 1, "calcification": 6, "sphericity": 4, "margin": 4,
        "lobulation": 1, "spiculation": 1, "texture": texture, "malignancy": malignancy,
    }  # fmt: skip


def four_readers() -> Tuple[List[ReaderSphere], List[Tuple[str, str, str, Tuple[int, int, int]]]]:
    """Four readers who disagree: sizes differ, one misses B, one draws a hole in A, one leaves C's texture empty,
    D is under 3 mm, a small nodule marked by two readers, one non-nodule."""
    A, B, C, D = (TRUE_NODULES[k][:3] for k in "ABCD")
    spheres = [
        ReaderSphere("111", "N-A1", A, 4.0, ratings(5, 3, 5), hole_mm=1.6),
        ReaderSphere("222", "N-A2", A, 3.4, ratings(5, 4, 4), unknown_sop_slices=(9,)),
        ReaderSphere("333", "N-A3", A, 4.6, ratings(4, 4, 5)),
        ReaderSphere("444", "N-A4", A, 4.0, ratings(4, 5, 5), wrong_z_slices=(8, 11)),
        ReaderSphere("111", "N-B1", B, 3.5, ratings(2, 2, 3)),
        ReaderSphere("222", "N-B2", B, 3.5, ratings(2, 2, 3)),  # median texture 2: the ground-glass bound
        ReaderSphere("333", "N-B3", B, 3.0, ratings(1, 3, 2)),
        ReaderSphere("222", "N-C2", C, 3.0, ratings(3, 2, 4)),
        ReaderSphere("444", "N-C4", C, 3.3, ratings("", 3, 4)),
        ReaderSphere("111", "N-D1", D, 1.2, ratings(5, 1, 2)),
        ReaderSphere("333", "N-D3", D, 1.3, ratings(5, 1, 3)),
    ]
    points = [
        ("111", "small", "S-1", (40, 50, 14)),
        ("333", "small", "S-3", (41, 50, 14)),
        ("222", "non", "NN-2", (60, 44, 4)),
    ]
    return spheres, points


def make_case(tmp: Path, namespace: Optional[str] = NIH, **series_kwargs):
    """A chest series with the four readers' XML beside its slices: (series, xml, spheres, points, holes)."""
    series = write_chest_series(tmp / "series", **series_kwargs)
    spheres, points = four_readers()
    text, holes = reader_xml(series, spheres, points, namespace=namespace)
    xml = tmp / "series" / "069.xml"  # LIDC keeps the XML beside the slices; the reader must pass over it
    xml.write_text(text)
    return series, xml, spheres, points, holes


def positions(steps: Sequence[float]) -> List[Tuple[float, float, float]]:
    """Slice positions from the origin along z by the given steps (gaps, duplicates and uneven steps for refusals)."""
    z = np.concatenate([[ORIGIN[2]], ORIGIN[2] + np.cumsum(steps)])
    return [(ORIGIN[0], ORIGIN[1], float(v)) for v in z]


def nothing_written(out: Path) -> bool:
    """No output folder, or an empty one."""
    return not out.exists() or not any(out.iterdir())
