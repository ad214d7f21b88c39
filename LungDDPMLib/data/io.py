"""Reading and writing volumes with SimpleITK, keeping the geometry exact.

Users bring CTs as NRRD, NIfTI, MetaImage or a DICOM series folder, with any spacing and orientation. The
result has to go back to them on exactly the same grid, so the :class:`Geometry` of every input is captured
and compared, and everything that goes wrong while reading becomes an :class:`InputError` that names the
file and says what to do, instead of an ITK traceback.

The geometry itself lives in :mod:`.geometry`, file suffixes in :mod:`.suffixes` and the all-or-nothing writing
in :mod:`.writing`; their names are importable from here too, where they were first defined.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .geometry import Geometry, same_geometry
from .suffixes import READ_SUFFIXES, WRITE_SUFFIXES, PathLike, file_suffix, strip_suffix
from .validation import check_ct_intensities, check_dimension, check_memory, warn
from .writing import (
    TEMP_PATTERN,
    clean_orphans,
    disk_full_error,
    fsync_file,
    pid_alive,
    temp_path,
    write_image,
    write_text_atomic,
)

__all__ = [
    "DEFLATE_MAX_RATIO",
    "READ_SUFFIXES",
    "TEMP_PATTERN",
    "WRITE_SUFFIXES",
    "Geometry",
    "PathLike",
    "clean_orphans",
    "disk_full_error",
    "file_suffix",
    "fsync_file",
    "header_size",
    "pid_alive",
    "read_ct",
    "read_dicom_series",
    "read_image",
    "same_geometry",
    "strip_suffix",
    "temp_path",
    "write_image",
    "write_text_atomic",
]


def _bytes_per_voxel(reader: sitk.ImageFileReader) -> int:
    try:
        probe = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), reader.GetNumberOfComponents())
        return int(sitk.GetArrayViewFromImage(probe).dtype.itemsize) * reader.GetNumberOfComponents()
    except RuntimeError:
        return 8


# deflate (gzip, zlib) cannot compress better than about 1032:1, even all zeros; above this ratio the header lies.
DEFLATE_MAX_RATIO = 1100


def _payload_and_encoding(path: Path) -> Tuple[Optional[Path], str]:
    """The file that holds the voxels and how they are stored: ``raw``, ``deflate`` or ``other`` (not checked).

    Only the text header is read (NRRD ``encoding``/``data file``, MetaImage ``CompressedData``/
    ``ElementDataFile``); a list or pattern of data files gives ``None`` (not checked).
    """
    suffix = file_suffix(path)
    if suffix in (".nii", ".nii.gz"):
        return path, "raw" if suffix == ".nii" else "deflate"
    with open(path, "rb") as fh:
        head = fh.read(1 << 16).decode("latin-1").split("\n\n", 1)[0]
    sep = ":" if suffix in (".nrrd", ".seg.nrrd", ".nhdr") else "="
    fields = {}
    for line in head.splitlines():
        key, found, value = line.partition(sep)
        if found and not line.startswith("#"):
            fields[key.strip().lower()] = value.strip()
    if sep == ":":
        encoding = {"raw": "raw", "gz": "deflate", "gzip": "deflate"}.get(fields.get("encoding", "raw"), "other")
        data = fields.get("data file", fields.get("datafile"))
    else:
        encoding = "deflate" if fields.get("compresseddata", "false").lower() == "true" else "raw"
        data = fields.get("elementdatafile", "LOCAL")
        data = None if data == "LOCAL" else data
    if data is None:
        return path, encoding
    if " " in data or "%" in data or data.upper().startswith("LIST"):
        return None, encoding
    return path.parent / data, encoding


def _check_header_against_file_size(path: Path, reader: sitk.ImageFileReader) -> None:
    """Refuse a header that claims more voxels than its file can hold, before anything is allocated.

    A damaged or hostile header (say 1200^3 float32 over a 1 KB payload) would otherwise make ITK allocate
    gigabytes and only then fail. Uncompressed data must be at least voxels x bytes per voxel long; deflate-
    compressed data (``.nii.gz``, gzip NRRD, compressed MetaImage) at least that / :data:`DEFLATE_MAX_RATIO`,
    a bound no valid file can break. Other encodings (ASCII, hex, bzip2) and file lists are not checked.
    """
    payload, encoding = _payload_and_encoding(path)
    if payload is None or encoding == "other" or not payload.is_file():
        return
    needed = int(np.prod(reader.GetSize())) * _bytes_per_voxel(reader)
    have = payload.stat().st_size
    limit = have if encoding == "raw" else have * DEFLATE_MAX_RATIO
    if needed > limit:
        stored = "uncompressed" if encoding == "raw" else f"gzip-compressed (at most {DEFLATE_MAX_RATIO}:1)"
        raise InputError(
            f"cannot read {path}: its header claims {reader.GetSize()} voxels ({needed:,} bytes) but the "
            f"{stored} data in {payload.name} is only {have:,} bytes; the file is truncated or its header is "
            "wrong - export the image again"
        )


def header_size(path: PathLike) -> Optional[Tuple[int, int]]:
    """``(voxels, bytes per voxel)`` from an image file's header, without reading the voxels; ``None`` for DICOM
    folders and unreadable headers (reading the image reports those properly)."""
    p = Path(path)
    if not p.is_file() or file_suffix(p) == ".dcm":
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return int(np.prod(reader.GetSize())), _bytes_per_voxel(reader)


def _read_file(path: Path, allow_multicomponent: bool) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(
            f"cannot read {path}: not a valid {file_suffix(path)} image or the file is corrupt "
            f"({str(exc).strip().splitlines()[-1][:200]})"
        ) from None
    _check_header_against_file_size(path, reader)
    n_voxels = int(np.prod(reader.GetSize()))
    check_memory(n_voxels * _bytes_per_voxel(reader) * 3, f"reading {path.name} ({reader.GetSize()})")
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"cannot read the voxels of {path}: the file is truncated or corrupt "
            f"({str(exc).strip().splitlines()[-1][:200]})"
        ) from None
    if not allow_multicomponent:
        check_dimension(image, str(path))
    return image


def read_dicom_series(folder: PathLike) -> sitk.Image:
    """Read the DICOM series in ``folder`` (the largest one if there are several, with a warning)."""
    folder = Path(folder)
    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError:
        series = ()
    if not series:
        raise InputError(
            f"no DICOM series found in folder {folder}; point to the folder that holds the "
            "slice files, or give an image file (.nrrd, .nii.gz, .mha)"
        )
    files = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series}
    chosen = max(series, key=lambda sid: len(files[sid]))
    if len(series) > 1:
        warn(
            f"{folder} holds {len(series)} DICOM series; using {chosen} ({len(files[chosen])} files). "
            "Put each series in its own folder to choose another."
        )
    if len(files[chosen]) < 2:
        raise InputError(f"the DICOM series in {folder} has a single slice; LungDDPM needs a 3D series")
    first = sitk.ImageFileReader()
    first.SetFileName(files[chosen][0])
    try:
        first.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"cannot read {files[chosen][0]}: {str(exc).strip().splitlines()[-1][:200]}") from None
    n_voxels = int(np.prod(first.GetSize()[:2])) * len(files[chosen])
    check_memory(n_voxels * _bytes_per_voxel(first) * 3, f"reading the DICOM series in {folder}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files[chosen])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"cannot read the DICOM series in {folder}: {str(exc).strip().splitlines()[-1][:200]}"
        ) from None
    check_dimension(image, f"the DICOM series in {folder}")
    return image


def read_image(path: PathLike, allow_multicomponent: bool = False) -> sitk.Image:
    """Read a 3D volume from NRRD, NIfTI, MetaImage or a DICOM series folder, geometry intact.

    ``allow_multicomponent`` lets Slicer's layered 4D ``.seg.nrrd`` through; everything else must be a
    single-component 3D volume.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        return read_dicom_series(path)
    suffix = file_suffix(path)
    if suffix not in READ_SUFFIXES and suffix != ".dcm":
        raise InputError(
            f"unsupported file type {suffix or '(none)'} for {path}; use "
            f"{', '.join(READ_SUFFIXES)} or a DICOM series folder"
        )
    if suffix == ".dcm":
        return read_dicom_series(path.parent)
    return _read_file(path, allow_multicomponent)


def read_ct(path: PathLike, check_intensities: bool = True) -> sitk.Image:
    """Read a CT and check that it is a 3D volume in Hounsfield units."""
    image = read_image(path)
    if check_intensities:
        check_ct_intensities(image, f"the CT {Path(path).name}")
    return image
