"""UIDs for what LungDDPM writes: always new, never derived from an input's UIDs.

A synthetic instance that reused (or was derived by hashing) a source UID could be taken for the original by a
PACS that deduplicates by UID; pydicom's :func:`~pydicom.uid.generate_uid` draws 128 random bits under pydicom's
registered root, which is what the standard's UUID-derived form is for (PS3.5 B.2).
"""

from __future__ import annotations

import re

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def new_uid() -> str:
    """A fresh, globally unique UID (at most 64 characters)."""
    from pydicom.uid import generate_uid

    return str(generate_uid())


def is_valid_uid(uid: object) -> bool:
    """Whether ``uid`` is a syntactically valid DICOM UID (PS3.5 9.1: digits and dots, no leading zeros, <= 64)."""
    return isinstance(uid, str) and len(uid) <= 64 and bool(_UID.match(uid))


def require_dicom() -> None:
    """Raise one actionable line when the optional DICOM packages are missing."""
    from ..errors import InputError

    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError:
        raise InputError(
            "DICOM output needs pydicom and highdicom: pip install 'lungddpm[dicom]' (or pydicom highdicom)"
        ) from None
