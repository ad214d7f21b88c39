"""The qt-free logic of the LungDDPM Slicer module.

Everything here works on the MRML scene (``slicer`` and ``vtk``) and never imports ``qt``, so it runs inside
Slicer and headless with the ``slicer-core`` package (that is how it is tested). The engine (``LungDDPMLib``)
runs in a separate process started by :mod:`.worker_launcher`; of the engine, Slicer's process imports only the
light ``errors``, ``config`` and ``data`` modules (numpy, scipy, SimpleITK), never torch or scikit-image.
"""

from __future__ import annotations

import sys
from typing import List

from .engine_path import ensure_engine_importable

ensure_engine_importable()

#: Packages whose modules a developer reload must drop (the module file alone is what Slicer re-executes): this one,
#: the engine, and the module's Qt side (``LungDDPMGui``, which the module file imports again when re-executed).
RELOADED_PACKAGES = ("LungDDPMLogic", "LungDDPMLib", "LungDDPMGui")


def unload() -> List[str]:
    """Forget this package and the engine modules in ``sys.modules``, so the next import reads the files again.

    Why: Slicer's *Reload* re-executes ``LungDDPM.py`` only; edits in this package would otherwise be ignored until
    Slicer restarts. The widget imports this package lazily, so after ``unload()`` it gets the new code.
    """
    names = [n for n in sys.modules if n.split(".")[0] in RELOADED_PACKAGES]
    for name in names:
        del sys.modules[name]
    return sorted(names)


__all__ = ["ensure_engine_importable", "unload"]
