"""Python packages the worker needs: found in the worker's own Python, installed after asking, or explained.

Why ask the worker's Python: Slicer's process never imports torch or scikit-image (a stock Slicer has neither,
and a CUDA context there would hold GPU memory all session), so whether they are installed is asked of the Python
that runs the worker (PythonSlicer inside Slicer, which shares Slicer's site-packages), in a subprocess that only
looks packages up and imports nothing heavy. Nothing is installed at import time or without a yes from the user.
Torch comes through the PyTorch extension's ``PyTorchUtils`` (it picks the CUDA build that fits the driver); other
packages through pip. Slicer's own numpy, SimpleITK and scipy are never replaced. ``confirm`` is a callable that
shows the question and returns True for yes (``slicer.util.confirmOkCancelDisplay`` in the GUI, a fixed answer in
tests and testing mode).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from typing import Any, Callable, List, Optional, Set

from LungDDPMLib.errors import LungDDPMError

from .process_tree import popen_group_kwargs
from .worker_launcher import python_executable

Confirm = Callable[[str], bool]
#: Import name -> pip requirement of what the worker needs besides torch (Slicer ships numpy, scipy, SimpleITK).
PIP_PACKAGES = {"numpy": "numpy", "SimpleITK": "SimpleITK", "scipy": "scipy", "skimage": "scikit-image"}
TORCH_REQUIREMENT = ">=2.1"
#: Runs in the worker's Python: prints the import names it cannot find (looks up, imports nothing).
_FIND_CODE = (
    "import importlib.util, json, sys\n"
    "def missing(name):\n"
    "    try:\n"
    "        return importlib.util.find_spec(name) is None\n"
    "    except (ImportError, ValueError):\n"
    "        return True\n"
    "print(json.dumps([n for n in sys.argv[1:] if missing(n)]))\n"
)


#: Pythons found to have every package in this session (asking again on each Apply would start a process each time).
_COMPLETE: Set[str] = set()


class DependencyError(LungDDPMError):
    """A package is missing and was not installed; the message says how to install it."""


def is_installed(name: str) -> bool:
    """In this (Slicer's) process: only for Slicer modules such as PyTorchUtils, never for the worker's packages."""
    return importlib.util.find_spec(name) is not None


def missing_packages(python: Optional[str] = None, timeout_s: float = 60.0) -> List[str]:
    """Import names that the worker's Python (``python``; PythonSlicer by default) lacks, torch first."""
    names = ["torch", *PIP_PACKAGES]
    kwargs = {k: v for k, v in popen_group_kwargs().items() if k == "creationflags"}  # no console window on Windows
    done = subprocess.run(
        [python or python_executable(), "-c", _FIND_CODE, *names],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        **kwargs,
    )
    try:
        missing = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise DependencyError(
            f"cannot ask the worker's Python ({python or python_executable()}) which packages it has: "
            f"{done.stderr.strip()[-500:] or 'no answer'}"
        ) from None
    return [n for n in names if n in missing]


def ensure_torch(confirm: Confirm) -> None:
    """Install torch through PyTorchUtils after asking; raise :class:`DependencyError` when that is not possible."""
    if not is_installed("PyTorchUtils"):
        raise DependencyError(
            "PyTorch is not installed and the PyTorch extension is missing: install 'PyTorch' from the "
            "Extensions Manager, restart Slicer, then press Apply again"
        )
    if not confirm(
        "LungDDPM needs PyTorch, which is not installed yet. Install it now? The download can take several "
        "minutes and a few GB; the PyTorch Utils module chooses the build that fits your GPU driver."
    ):
        raise DependencyError("PyTorch is required; install it from the PyTorch Utils module or accept the offer")
    import PyTorchUtils  # the PyTorch extension's module, present inside Slicer only

    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT
    )
    if torch is None:
        raise DependencyError("PyTorch could not be installed; see the Python console, or use the PyTorch Utils module")


def ensure_dependencies(
    confirm: Confirm, python: Optional[str] = None, pip_install: Optional[Callable[[str], Any]] = None
) -> List[str]:
    """Make sure the worker's Python has every package, installing missing ones only after a yes.

    Returns what was installed (empty when nothing was missing). ``pip_install`` defaults to
    ``slicer.util.pip_install`` (which installs into Slicer's Python, the one PythonSlicer runs).
    """
    python = python or python_executable()
    if python in _COMPLETE:
        return []
    missing = missing_packages(python)
    if not missing:
        _COMPLETE.add(python)
        return []
    installed: List[str] = []
    if "torch" in missing:
        ensure_torch(confirm)
        installed.append("torch")
    others = [PIP_PACKAGES[n] for n in missing if n != "torch"]
    if not others:
        return installed
    requirements = " ".join(others)
    if not confirm(f"LungDDPM's worker needs the Python package(s) {requirements}. Install them with pip now?"):
        raise DependencyError(f"missing Python package(s): {requirements}; install them with pip and try again")
    if pip_install is None:
        import slicer

        pip_install = slicer.util.pip_install
    pip_install(requirements)
    return installed + others
