"""Other people's DICOM: CT series in (:mod:`.series`), LIDC-IDRI reader XML to layouts (:mod:`.lidc_import`), and
synthetic CT out, marked synthetic (:mod:`.synthetic_ct`, :mod:`.seg`, :mod:`.case`).

pydicom and highdicom are optional (``pip install 'lungddpm[dicom]'``) and imported only where a DICOM file is read or
written, so ``import LungDDPMLib`` and every command that needs no DICOM work without them.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "read_ct_series": "series",
    "write_synthetic_ct_series": "synthetic_ct",
    "write_layout_seg": "seg",
    "write_dicom_case": "case",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
