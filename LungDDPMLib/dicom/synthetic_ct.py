"""A synthetic CT as a DICOM CT Image series that no one can take for an acquired one.

One file per slice (CT Image Storage, explicit VR little endian), every slice marked synthetic
(:mod:`.marking` says which attributes and where the standard defines them). The geometry comes from the SimpleITK
image exactly: Image Position (Patient) of slice k is ``origin + k * spacing_z * direction[:, 2]``; Image
Orientation (Patient) is the direction's first two columns; Pixel Spacing is (row spacing, column spacing) =
(spacing_y, spacing_x). A left-handed image (its slice axis points against the normal that readers compute from the
orientation) is written with its slices in reverse order, which describes the same voxels in space.

Pixels are int16 with Rescale Slope 1 and Rescale Intercept 0, so stored value = HU. CTs are integral in HU and
then the series holds exactly the NIfTI/NRRD output's values; a float image with fractions is rounded to the
nearest integer HU (half to even, at most 0.5 HU off; CT scanners store integers too). Values that do not fit int16
after rounding are refused rather than clipped.
"""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .marking import (
    SYNTHETIC_PREFIX,
    contributing_equipment,
    mark_slice,
    patient_and_study,
    reference_source,
)
from .uids import new_uid, require_dicom

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
INT16 = np.iinfo(np.int16)


def check_orthonormal(image: sitk.Image, what: str) -> np.ndarray:
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{what} must be a single-component 3D image, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)"
        )
    d = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-5):
        raise InputError(f"{what} has a sheared (non-orthogonal) direction matrix, which DICOM slices cannot describe")
    return d


def right_handed(image: sitk.Image) -> sitk.Image:
    """The same voxels in space with the slice axis along row x column (what DICOM readers sort slices by)."""
    d = check_orthonormal(image, "the image")
    if np.linalg.det(d) > 0:
        return image
    return sitk.Flip(image, [False, False, True], flipAboutOrigin=False)


def hu_pixels(image: sitk.Image) -> np.ndarray:
    """``(z, y, x)`` int16 stored values (= HU with slope 1, intercept 0); fractions rounded, out of range refused."""
    arr = sitk.GetArrayFromImage(image)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError("the image has NaN or infinite values; a DICOM CT cannot hold them")
        arr = np.rint(arr)
    lo, hi = (arr.min(), arr.max()) if arr.size else (0, 0)
    if lo < INT16.min or hi > INT16.max:
        raise InputError(
            f"the image's values {lo:g}..{hi:g} do not fit 16-bit CT pixels ({INT16.min}..{INT16.max} HU); "
            "is it in Hounsfield units?"
        )
    return arr.astype("<i2")


def _ds(value: float) -> Any:
    from pydicom.valuerep import DSfloat

    return DSfloat(float(value), auto_format=True)


def slice_geometry(image: sitk.Image) -> Tuple[List[float], List[np.ndarray], np.ndarray]:
    """Image Orientation (Patient), each slice's Image Position (Patient), and the slice normal, of a right-handed
    image."""
    d = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    dz = image.GetSpacing()[2]
    positions = [origin + k * dz * d[:, 2] for k in range(image.GetSize()[2])]
    return [*d[:, 0], *d[:, 1]], positions, d[:, 2]


def match_source(
    source: Sequence[Any], orientation: Sequence[float], positions: Sequence[np.ndarray], tol: float
) -> List[Any]:
    """The source slice at each output slice's position; the source must be one series on the image's grid."""
    needed = ("SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID")
    missing = [k for k in needed if any(k not in ds for ds in source)]
    if missing:
        raise InputError(f"the source DICOM headers lack {', '.join(missing)}; they cannot be referenced")
    series = {str(ds.get("SeriesInstanceUID")) for ds in source}
    if len(series) != 1:
        raise InputError(f"the source headers belong to {len(series)} series; give the slices of one series")
    try:
        where = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in source])
        iop = np.array([float(v) for v in source[0].ImageOrientationPatient])
    except (AttributeError, TypeError, ValueError):
        raise InputError("the source DICOM headers lack Image Position/Orientation (Patient)") from None
    if not np.allclose(iop, orientation, atol=1e-3):
        raise InputError(
            f"the source series' orientation {np.round(iop, 4).tolist()} is not the image's "
            f"{np.round(orientation, 4).tolist()}: the image is not on the source's grid"
        )
    matched = []
    for k, p in enumerate(positions):
        dist = np.linalg.norm(where - p, axis=1)
        best = int(np.argmin(dist))
        if dist[best] > tol:
            raise InputError(
                f"no source slice at the image's slice {k} ({np.round(p, 3).tolist()} mm; nearest "
                f"{dist[best]:.3f} mm away): the image is not on the source series' grid"
            )
        matched.append(source[best])
    return matched


def save_dataset(ds: Any, path: Path) -> None:
    """Save as a DICOM file (preamble, file meta) with pydicom 3, or 2.4 (Python 3.9, where 3 does not install)."""
    import pydicom

    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pragma: no cover - CI pins pydicom 3
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def _series_description(description: str) -> str:
    text = description.strip()
    if not text.upper().startswith(SYNTHETIC_PREFIX):
        text = f"{SYNTHETIC_PREFIX} {text}".strip()
    return text[:64]  # LO


def _derivation(version: str, description: str, provenance: Dict[str, Any]) -> str:
    scalars = [f"{k}={v}" for k, v in provenance.items() if isinstance(v, (str, int, float, bool)) or v is None]
    return f"LungDDPM {version} synthesis: {description}; " + "; ".join(scalars)


def _staging(folder: Path, overwrite: bool) -> Path:
    if folder.exists() and not overwrite:
        raise InputError(f"{folder} already exists; move it or choose another output name (nothing was written)")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} exists and is not a folder; move it or choose another output name")
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as exc:
        raise InputError(
            f"cannot write the DICOM series to {folder}: {exc.strerror or exc}; choose a writable output folder"
        ) from None
    return tmp


def _move_into_place(tmp: Path, folder: Path) -> None:
    if not folder.exists():
        os.replace(tmp, folder)
        return
    old = folder.with_name(f".{folder.name}.{os.getpid()}.partial.old")
    os.replace(folder, old)  # a folder cannot be replaced in one step; the old one is gone only once the new is in
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def write_synthetic_ct_series(
    image: sitk.Image,
    folder: Union[str, Path],
    *,
    source: Optional[Sequence[Any]] = None,
    description: str,
    provenance: Optional[Dict[str, Any]] = None,
    study: str = "source",
    patient_id: Optional[str] = None,
    series_number: Optional[int] = None,
    overwrite: bool = False,
) -> List[Path]:
    """Write ``image`` (HU) as a synthetic CT series in ``folder``, one file per slice; returns the files in order.

    Args:
        image: the synthetic CT, a scalar 3D image in HU with an orthonormal direction.
        folder: the series folder to create; the slices are written to a hidden temporary folder beside it and
            renamed into place at the end, so ``folder`` holds the whole series or does not exist.
        source: the source series' pydicom headers (pixel data not needed), on the image's grid: patient, study and
            frame of reference are carried over and each slice references its source slice. ``None``: a new
            placeholder patient and study.
        description: what the series is; Series Description is it prefixed with ``SYNTHETIC`` (64 characters).
        provenance: short facts (model sha256, seed, sampler...) recorded in Derivation Description; the full record
            belongs in LungDDPM's JSON sidecar.
        study: ``"source"`` (default) joins the source study; ``"new"`` starts a new study of the same patient.
        patient_id: overrides the Patient ID (without a source the default is derived from the new study UID).
        series_number: default the source's + 1000, or 1000.
        overwrite: replace an existing ``folder`` (callers that know it is their own earlier output).

    Raises:
        InputError: not a 3D scalar image, a sheared direction, values outside int16 or not finite, a source not on
            the image's grid, an existing ``folder`` without ``overwrite``, an unwritable place.

    Example:
        >>> files = write_synthetic_ct_series(ct, "out/case_dicom", description="LungDDPM seed 0")  # doctest: +SKIP
    """
    require_dicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from .. import __version__

    if study not in ("source", "new"):
        raise InputError(f"study must be 'source' or 'new', got {study!r}")
    check_orthonormal(image, "the image")
    image = right_handed(image)
    pixels = hu_pixels(image)
    orientation, positions, normal = slice_geometry(image)
    spacing = image.GetSpacing()
    provenance = dict(provenance or {})
    matched = None
    if source:
        matched = match_source(source, orientation, positions, tol=max(1e-3, 0.05 * min(spacing)))
    first = matched[0] if matched else None
    shared = patient_and_study(first, study, patient_id)
    series_uid = new_uid()
    equipment = contributing_equipment(
        __version__, f"synthesised with a 3D diffusion model: {description}"[:1024], first
    )
    now = datetime.datetime.now()
    if series_number is None:
        base = first.get("SeriesNumber") if first is not None else None
        series_number = (int(base) if isinstance(base, (int, float)) or str(base or "").isdigit() else 0) + 1000
    folder = Path(folder)
    width = max(4, len(str(len(positions))))
    tmp = _staging(folder, overwrite)
    files: List[Path] = []
    try:
        for k, position in enumerate(positions):
            ds = Dataset()
            ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: a carried-over name in any script survives
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = new_uid()
            ds.InstanceCreationDate = now.strftime("%Y%m%d")
            ds.InstanceCreationTime = now.strftime("%H%M%S")
            for key, value in shared.items():
                setattr(ds, key, value)
            ds.Modality = "CT"
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = series_number
            ds.SeriesDescription = _series_description(description)
            ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
            ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
            ds.InstanceNumber = k + 1
            ds.AcquisitionNumber = 1
            mark_slice(ds, __version__, equipment)
            ds.DerivationDescription = _derivation(__version__, description, provenance)[:1024]
            if matched is not None:
                reference_source(ds, matched[k], same_study=study == "source")
                if "KVP" in matched[k]:
                    ds.KVP = matched[k].KVP
            if "KVP" not in ds:
                ds.KVP = ""  # Type 2
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.ImageOrientationPatient = [_ds(v) for v in orientation]
            ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # (between rows, between columns)
            ds.SliceThickness = _ds(spacing[2])
            ds.SpacingBetweenSlices = _ds(spacing[2])
            ds.SliceLocation = _ds(float(np.dot(position, normal)))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
            ds.WindowCenter, ds.WindowWidth = -600, 1500
            ds.WindowCenterWidthExplanation = "LUNG"
            ds.LossyImageCompression = "00"
            ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            path = tmp / f"slice_{k + 1:0{width}d}.dcm"
            save_dataset(ds, path)
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            files.append(folder / path.name)
        _move_into_place(tmp, folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(
            f"cannot write the DICOM series to {folder}: {exc.strerror or exc}; nothing was left under that name"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files
