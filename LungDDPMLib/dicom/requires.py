"""pydicom, imported when a DICOM file is first read, with one line of advice where it is missing."""

from __future__ import annotations

from types import ModuleType

from ..errors import InputError

#: What to run where pydicom is absent: the ``dicom`` extra pins the versions the tests use.
INSTALL_HINT = "pip install 'lungddpm[dicom]'"


def require_pydicom() -> ModuleType:
    """The ``pydicom`` module, or :class:`InputError` telling the user how to install it."""
    try:
        import pydicom
    except ImportError:
        raise InputError(f"reading DICOM needs pydicom, which is not installed: {INSTALL_HINT}") from None
    return pydicom
