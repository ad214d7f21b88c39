"""The headers of the DICOM series a CT was read from, to carry its patient and study over and reference it.

A stopgap until the strict series reader (:mod:`.series`) is merged: it only groups the folder's files by Series
Instance UID, takes the largest series (the one :func:`LungDDPMLib.data.io.read_dicom_series` reads), and sorts its
slices by position along the slice normal. The pixels come from the reader as before; these are headers only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ..errors import InputError
from .uids import require_dicom


def dicom_folder(ct: Union[str, Path]) -> Optional[Path]:
    """The series folder a ``--ct`` names (a folder, or one ``.dcm`` file in it), or ``None`` for an image file."""
    p = Path(ct)
    if p.is_dir():
        return p
    if p.suffix.lower() == ".dcm" and p.is_file():
        return p.parent
    return None


def read_source_headers(ct: Union[str, Path]) -> Optional[List[Any]]:
    """The pydicom headers (no pixel data) of the series ``ct`` names, sorted by position; ``None`` for a CT that
    is not DICOM."""
    folder = dicom_folder(ct)
    if folder is None:
        return None
    require_dicom()
    import pydicom

    by_series: Dict[str, List[Any]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError):
            continue  # not DICOM (a DICOMDIR-less folder may hold notes or thumbnails)
        if "SeriesInstanceUID" in ds and "ImagePositionPatient" in ds:
            by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    if not by_series:
        raise InputError(f"no DICOM image headers in {folder}; cannot carry the source series over")
    series = max(by_series.values(), key=len)
    try:
        iop = np.array([float(v) for v in series[0].ImageOrientationPatient])
    except (AttributeError, TypeError, ValueError):
        raise InputError(f"the DICOM series in {folder} has no Image Orientation (Patient)") from None
    normal = np.cross(iop[:3], iop[3:])
    return sorted(series, key=lambda ds: float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)))
