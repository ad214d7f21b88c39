"""Make a test interpreter lack packages, as a stock 3D Slicer's Python lacks torch and scikit-image.

Put this folder first on ``PYTHONPATH`` and set ``LUNGDDPM_BLOCK`` (comma-separated module names; a name blocks
its submodules too) and optionally ``LUNGDDPM_ALLOW`` (exceptions: exact names, or ``pkg.*`` for a package's
submodules). Importing a blocked module then raises ``ModuleNotFoundError`` and ``importlib.util.find_spec``
reports it missing. The variables and this folder are removed from the environment at start-up, so the
processes this interpreter starts (the worker) are ordinary Pythons, as PythonSlicer's worker would be.
"""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))


def _names(variable):
    return [n.strip() for n in os.environ.pop(variable, "").split(",") if n.strip()]


class _Blocker:
    """A meta-path finder that refuses blocked modules before any other finder can find them."""

    def __init__(self, blocked, allowed):
        self.blocked, self.allowed = blocked, allowed

    def _is_allowed(self, name):
        return any(name == a or (a.endswith(".*") and name.startswith(a[:-1])) for a in self.allowed)

    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in self.blocked) and not self._is_allowed(name):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked for this test)", name=name)
        return None


_blocked, _allowed = _names("LUNGDDPM_BLOCK"), _names("LUNGDDPM_ALLOW")
if _blocked:
    sys.meta_path.insert(0, _Blocker(_blocked, _allowed))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != _here]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
