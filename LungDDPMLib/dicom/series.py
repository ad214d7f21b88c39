"""A CT series folder read strictly: one series, slices ordered by position, HU exactly as stored, or one clear line.

Why strict: a gap, a duplicate, uneven spacing or a tilted gantry put every voxel after it in the wrong place
without any visible error (a volume still comes out), so each is refused by name instead of being "fixed"
silently. Slices are ordered by ImagePositionPatient projected on the slice normal (the cross product of the two
ImageOrientationPatient vectors), never by file name or InstanceNumber, and HU = stored * RescaleSlope +
RescaleIntercept, slice by slice.

Example::

    series = read_ct_series("LIDC-IDRI-0001/01-01-2000-30178/3000566-03192")
    sitk.WriteImage(series.image, "ct.nii.gz")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .requires import require_pydicom

PathLike = Union[str, Path]
#: Files in a series folder that are not slices and are passed over (LIDC-IDRI keeps the reader XML beside them;
#: outputs written into the series folder must not stop the next read). Any other file must be DICOM.
NOT_SLICES = (".xml", ".txt", ".json", ".csv", ".md", ".gz", ".nii", ".nrrd")
#: Slice steps may differ by this share of the series' step (and at least :data:`MIN_SPACING_TOL_MM`).
SPACING_REL_TOL = 0.01
MIN_SPACING_TOL_MM = 0.01
#: Orientation vectors must be unit length and orthogonal within this (direction cosines).
ORIENTATION_TOL = 1e-3
#: Two slices closer than this along the normal are duplicates.
DUPLICATE_TOL_MM = 1e-3


@dataclass
class DicomSeries:
    """One CT series: the volume on the series' own grid and the slice headers in slice order.

    ``image`` holds HU (int16 where every value is a whole number in range, else float32); its origin is the first
    slice's ImagePositionPatient, its direction columns are the row, column and slice-normal vectors, so the world
    coordinates are DICOM patient coordinates (LPS), as SimpleITK uses them. ``datasets`` are the headers without
    pixel data; ``sop_uids`` and ``z_positions`` (ImagePositionPatient z, the value LIDC's ``imageZposition``
    quotes) follow the slice order.
    """

    image: sitk.Image
    datasets: List[Any]
    series_uid: str
    study_uid: str
    patient_id: str
    sop_uids: List[str]
    z_positions: List[float]
    folder: Path = field(default_factory=Path)
    files: List[Path] = field(default_factory=list)

    @property
    def slice_spacing(self) -> float:
        return float(self.image.GetSpacing()[2])


def slice_files(folder: Path) -> List[Path]:
    """The files of a folder that should be slices: not hidden, not DICOMDIR, not a known non-DICOM suffix."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.name.upper() != "DICOMDIR"
        and p.suffix.lower() not in NOT_SLICES
    )


def _read(path: Path, stop_before_pixels: bool) -> Any:
    pydicom = require_pydicom()
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # pydicom raises many kinds for damaged files; all mean the same to the user
        raise InputError(
            f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc}); remove it or replace it"
        ) from None


def read_headers(folder: PathLike) -> List[Tuple[Path, Any]]:
    """(file, header) of every slice file of ``folder``, headers without pixel data; unreadable files refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (give the folder that holds the series' DICOM files)")
    files = slice_files(folder)
    if not files:
        raise InputError(f"{folder}: no DICOM files in the folder")
    return [(p, _read(p, stop_before_pixels=True)) for p in files]


def _one_series(folder: Path, headers: Sequence[Tuple[Path, Any]]) -> None:
    groups: Dict[str, List[Tuple[Path, Any]]] = {}
    for p, ds in headers:
        groups.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append((p, ds))
    if len(groups) > 1:
        named = "; ".join(
            f"{uid or '(no SeriesInstanceUID)'} ({len(v)} file(s), {getattr(v[0][1], 'Modality', '?')}, "
            f"e.g. {v[0][0].name})"
            for uid, v in sorted(groups.items())
        )
        raise InputError(f"{folder} holds {len(groups)} series: {named}; put each series in its own folder")
    uid = next(iter(groups))
    if not uid:
        raise InputError(f"{headers[0][0]}: no SeriesInstanceUID")
    for p, ds in headers:
        modality = str(getattr(ds, "Modality", "") or "(none)")
        if modality != "CT":
            raise InputError(f"{p}: Modality is {modality}, not CT; only CT series can be read")


def _vector(path: Path, ds: Any, name: str, n: int) -> np.ndarray:
    value = getattr(ds, name, None)
    try:
        vec = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        vec = np.zeros(0)
    if vec.shape != (n,) or not np.all(np.isfinite(vec)):
        raise InputError(f"{path}: {name} is missing or not {n} numbers ({value!r}); the slice cannot be placed")
    return vec


def _check_grid(headers: Sequence[Tuple[Path, Any]]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Common orientation (row, column, normal) and pixel spacing of all slices, refused where they differ."""
    p0, ds0 = headers[0]
    iop0 = _vector(p0, ds0, "ImageOrientationPatient", 6)
    ps0 = _vector(p0, ds0, "PixelSpacing", 2)
    shape0 = (getattr(ds0, "Rows", None), getattr(ds0, "Columns", None))
    for p, ds in headers:
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise InputError(f"{p}: a multi-frame (enhanced) CT object; export the series as one file per slice")
        if (getattr(ds, "Rows", None), getattr(ds, "Columns", None)) != shape0 or None in shape0:
            raise InputError(
                f"{p}: {ds.get('Rows')}x{ds.get('Columns')} pixels where {p0.name} has {shape0[0]}x{shape0[1]}"
            )
        if not np.allclose(_vector(p, ds, "ImageOrientationPatient", 6), iop0, atol=ORIENTATION_TOL):
            raise InputError(f"{p}: ImageOrientationPatient differs from {p0.name}'s; the slices are not one stack")
        if not np.allclose(_vector(p, ds, "PixelSpacing", 2), ps0, rtol=1e-4):
            raise InputError(f"{p}: PixelSpacing differs from {p0.name}'s")
        tilt = float(getattr(ds, "GantryDetectorTilt", 0) or 0)
        if abs(tilt) > 1e-3:
            raise InputError(f"{p}: gantry tilt of {tilt} degrees; resample the series to an orthogonal grid first")
    if np.any(ps0 <= 0):
        raise InputError(f"{p0}: PixelSpacing {ps0.tolist()} is not positive")
    row, col = iop0[:3], iop0[3:]
    if abs(np.linalg.norm(row) - 1) > ORIENTATION_TOL or abs(np.linalg.norm(col) - 1) > ORIENTATION_TOL:
        raise InputError(f"{p0}: ImageOrientationPatient {iop0.tolist()} has vectors that are not unit length")
    if abs(float(row @ col)) > ORIENTATION_TOL:
        raise InputError(f"{p0}: non-orthogonal ImageOrientationPatient {iop0.tolist()} (sheared or tilted geometry)")
    return row, col, np.cross(row, col)


def _order(folder: Path, headers: Sequence[Tuple[Path, Any]], normal: np.ndarray, pixel: float) -> Tuple[list, float]:
    """Headers sorted along the normal and the slice step; gaps, duplicates, uneven steps and drift refused."""
    ipp = [(_vector(p, ds, "ImagePositionPatient", 3), p, ds) for p, ds in headers]
    ipp.sort(key=lambda t: float(t[0] @ normal))
    pos = np.asarray([float(t[0] @ normal) for t in ipp])
    if len(pos) < 2:
        raise InputError(f"{folder}: only one slice; a CT volume needs at least two")
    steps = np.diff(pos)
    for k in np.flatnonzero(steps < DUPLICATE_TOL_MM):
        raise InputError(
            f"{folder}: duplicate slice position {pos[k]:.3f} mm in {ipp[k][1].name} and {ipp[k + 1][1].name}; "
            "remove the repeated slice"
        )
    step = float(np.median(steps))
    tol = max(MIN_SPACING_TOL_MM, SPACING_REL_TOL * step)
    for k, s in enumerate(steps):
        if abs(s - step) <= tol:
            continue
        z0, z1 = ipp[k][0][2], ipp[k + 1][0][2]
        ratio = s / step
        if ratio > 1.5 and abs(ratio - round(ratio)) * step <= tol:
            raise InputError(
                f"{folder}: missing slice(s) between z={z0:.3f} and z={z1:.3f} mm ({ipp[k][1].name}, "
                f"{ipp[k + 1][1].name}): a {s:.3f} mm step where the series steps {step:.3f} mm, "
                f"about {round(ratio) - 1} slice(s) absent"
            )
        raise InputError(
            f"{folder}: uneven slice spacing: a {s:.3f} mm step between z={z0:.3f} and z={z1:.3f} mm "
            f"({ipp[k][1].name}, {ipp[k + 1][1].name}) where the series steps {step:.3f} mm"
        )
    origin = ipp[0][0]
    for (x, p, _), s in zip(ipp, pos):
        drift = x - origin - (s - pos[0]) * normal
        if np.linalg.norm(drift) > 0.1 * pixel:
            raise InputError(
                f"{p}: the slice lies {np.linalg.norm(drift):.2f} mm off the stack's normal through the first slice "
                "(gantry tilt or sheared geometry); resample the series to an orthogonal grid first"
            )
    return [(p, ds) for _, p, ds in ipp], float((pos[-1] - pos[0]) / (len(pos) - 1))


def _hu(path: Path, ds: Any) -> np.ndarray:
    if "PixelData" not in ds:
        raise InputError(f"{path}: no pixel data; it is not a CT slice")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # missing decoders (compressed transfer syntaxes) and damaged data alike
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise InputError(
            f"{path}: cannot decode the pixel data (transfer syntax {getattr(syntax, 'name', syntax)}): {exc}"
        ) from None
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    return stored.astype(np.float64) * slope + intercept


def _volume(hu: np.ndarray) -> np.ndarray:
    """int16 where every HU is a whole number within its range (the usual CT), else float32."""
    if np.all(np.isfinite(hu)) and np.array_equal(hu, np.round(hu)) and hu.min() >= -32768 and hu.max() <= 32767:
        return hu.astype(np.int16)
    return hu.astype(np.float32)


def series_headers(folder: PathLike) -> List[Any]:
    """The headers (no pixel data) of the one CT series in ``folder``, in slice order, after every check of
    :func:`read_ct_series` that needs no pixels: what a synthetic series carries over from its source."""
    folder = Path(folder)
    headers = read_headers(folder)
    _one_series(folder, headers)
    _, _, normal = _check_grid(headers)
    spacing_rc = _vector(headers[0][0], headers[0][1], "PixelSpacing", 2)
    ordered, _ = _order(folder, headers, normal, float(spacing_rc.min()))
    return [ds for _, ds in ordered]


def read_ct_series(folder: PathLike) -> DicomSeries:
    """Read the one CT series in ``folder`` (files of any name; ``.xml`` and other text files are passed over).

    Raises:
        InputError: no DICOM file, an unreadable file, two series in the folder (both named), a modality other than
        CT, a missing slice, a duplicate slice position, uneven spacing, gantry tilt or non-orthogonal orientation,
        or pixel data that cannot be decoded; the message names the folder or file and what is wrong.
    """
    folder = Path(folder)
    headers = read_headers(folder)
    _one_series(folder, headers)
    row, col, normal = _check_grid(headers)
    spacing_rc = _vector(headers[0][0], headers[0][1], "PixelSpacing", 2)  # (between rows, between columns)
    ordered, step = _order(folder, headers, normal, float(spacing_rc.min()))
    slices, datasets = [], []
    for p, _ in ordered:
        ds = _read(p, stop_before_pixels=False)
        slices.append(_hu(p, ds))
        del ds.PixelData
        datasets.append(ds)
    image = sitk.GetImageFromArray(_volume(np.stack(slices)))
    image.SetSpacing((float(spacing_rc[1]), float(spacing_rc[0]), step))
    image.SetOrigin(tuple(float(v) for v in _vector(ordered[0][0], datasets[0], "ImagePositionPatient", 3)))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, col, normal]).ravel()))
    first = datasets[0]
    return DicomSeries(
        image=image,
        datasets=datasets,
        series_uid=str(first.SeriesInstanceUID),
        study_uid=str(getattr(first, "StudyInstanceUID", "")),
        patient_id=str(getattr(first, "PatientID", "")),
        sop_uids=[str(getattr(ds, "SOPInstanceUID", "")) for ds in datasets],
        z_positions=[float(ds.ImagePositionPatient[2]) for ds in datasets],
        folder=folder,
        files=[p for p, _ in ordered],
    )
