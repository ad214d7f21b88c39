"""The qt-free logic of the LungDDPM Slicer module.

Everything here works on the MRML scene (``slicer`` and ``vtk``) and never imports ``qt``, so it runs inside
Slicer and headless with the ``slicer-core`` package (that is how it is tested). The engine (``LungDDPMLib``)
runs in a separate process started by :mod:`.worker_launcher`; this package never imports torch.
"""

from __future__ import annotations

from .engine_path import ensure_engine_importable

ensure_engine_importable()

__all__ = ["ensure_engine_importable"]
