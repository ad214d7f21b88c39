"""Find the ``LungDDPMLib`` engine package, in an installed extension and in a source checkout.

An installed extension ships ``LungDDPMLib`` next to the module in ``qt-scripted-modules`` (on ``sys.path``). In
a source checkout it sits one folder above ``LungDDPM/``, which is not on ``sys.path`` when a developer adds the
module folder to Slicer's module paths; then that folder is added. Nothing is imported here (no torch).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Optional

MODULE_DIR = Path(__file__).resolve().parent.parent


def engine_root() -> Optional[Path]:
    """The folder that holds the ``LungDDPMLib`` package (to put on a worker's PYTHONPATH), or None."""
    spec = importlib.util.find_spec("LungDDPMLib")
    if spec is not None and spec.origin:
        return Path(spec.origin).resolve().parent.parent
    for candidate in (MODULE_DIR, MODULE_DIR.parent):
        if (candidate / "LungDDPMLib" / "__init__.py").is_file():
            return candidate
    return None


def ensure_engine_importable() -> None:
    """Make ``import LungDDPMLib`` work (source checkout); a no-op when it already does."""
    if importlib.util.find_spec("LungDDPMLib") is not None:
        return
    root = engine_root()
    if root is not None and str(root) not in sys.path:
        sys.path.append(str(root))
