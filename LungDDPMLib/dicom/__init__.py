"""DICOM in and out. Every submodule imports pydicom (the optional ``dicom`` extra) only when it is used: importing
this package costs nothing and works without it."""

from __future__ import annotations

from typing import Any

_LAZY = {
    "write_synthetic_ct_series": "synthetic_ct",
    "write_layout_seg": "seg",
    "write_dicom_case": "case",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
