"""The headers of the DICOM series a CT was read from, to carry its patient and study over and reference it.

The headers come from the strict series reader (:mod:`.series`), so the series they describe is one complete, evenly
spaced, untilted CT series; the pixels come from :func:`LungDDPMLib.data.io.read_dicom_series` as for any CT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Union


def dicom_folder(ct: Union[str, Path]) -> Optional[Path]:
    """The series folder a ``--ct`` names (a folder, or one ``.dcm`` file in it), or ``None`` for an image file."""
    p = Path(ct)
    if p.is_dir():
        return p
    if p.suffix.lower() == ".dcm" and p.is_file():
        return p.parent
    return None


def read_source_headers(ct: Union[str, Path]) -> Optional[List[Any]]:
    """The pydicom headers (no pixel data) of the series ``ct`` names, in slice order; ``None`` for a CT that is not
    DICOM. The series passes the strict reader's checks (:func:`.series.series_headers`): a folder with two series, a
    missing slice or a tilted stack is refused before any sampling, not written as a broken synthetic series."""
    folder = dicom_folder(ct)
    if folder is None:
        return None
    from .series import series_headers

    return series_headers(folder)
