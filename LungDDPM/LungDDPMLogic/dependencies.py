"""Python packages the worker needs: found in the worker's own Python, installed there after asking, or explained.

Why ask the worker's Python: Slicer's process never imports torch or scikit-image (a stock Slicer has neither,
and a CUDA context there would hold GPU memory all session), so whether they are installed is asked of the Python
that runs the worker (PythonSlicer inside Slicer, which shares Slicer's site-packages), in a subprocess that only
looks packages up and imports nothing heavy. Nothing is installed at import time or without a yes from the user,
and the installation itself runs in that Python too, in the background (:mod:`.installer`): torch with
light-the-torch, which picks the CUDA build that fits the driver (what the PyTorch extension's ``PyTorchUtils``
uses, without its ``import torch`` in Slicer's process), other packages with pip. Slicer's own numpy, SimpleITK
and scipy are never replaced. ``confirm`` is a callable that shows the question and returns True for yes
(``slicer.util.confirmOkCancelDisplay`` in the GUI, a fixed answer in tests and testing mode).
"""

from __future__ import annotations

import json
import subprocess
from typing import Callable, List, Optional, Sequence, Set

from .installer import DependencyError, InstallRun, InstallStep, check_step
from .process_tree import popen_group_kwargs
from .worker_launcher import python_executable

Confirm = Callable[[str], bool]
#: Import name -> pip requirement of what the worker needs besides torch (Slicer ships numpy, scipy, SimpleITK).
PIP_PACKAGES = {"numpy": "numpy", "SimpleITK": "SimpleITK", "scipy": "scipy", "skimage": "scikit-image"}
TORCH_REQUIREMENT = ">=2.1"
#: What PyTorchUtils installs to choose the torch build (``light_the_torch``).
LTT_REQUIREMENT = "light-the-torch>=0.5"
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


def install_steps(missing: Sequence[str]) -> List[InstallStep]:
    """The steps that install the import names ``missing`` (torch first), ending with the import check."""
    steps: List[InstallStep] = []
    if "torch" in missing:
        steps.append(InstallStep("light-the-torch, which picks the build", ["-m", "pip", "install", LTT_REQUIREMENT]))
        steps.append(InstallStep("PyTorch", ["-m", "light_the_torch", "install", "torch" + TORCH_REQUIREMENT]))
    others = [PIP_PACKAGES[n] for n in missing if n != "torch"]
    if others:
        steps.append(InstallStep(" ".join(others), ["-m", "pip", "install", *others]))
    return [*steps, check_step(list(missing))]


def install_question(missing: Sequence[str]) -> str:
    """The one question asked before anything is installed: what, how big, where, and that Slicer stays usable."""
    names = ", ".join("PyTorch" if n == "torch" else PIP_PACKAGES[n] for n in missing)
    torch = (
        " PyTorch is a download of a few GB; light-the-torch picks the build that fits your GPU driver, as the "
        "PyTorch extension does."
        if "torch" in missing
        else ""
    )
    return (
        f"LungDDPM's worker needs {names}, which the worker's Python lacks. Install now?{torch} The installation "
        "runs in a background process and can take several minutes; Slicer stays usable, the module's log shows "
        "its progress, and Apply is available again when it is done."
    )


def ensure_dependencies(confirm: Confirm, python: Optional[str] = None) -> Optional[InstallRun]:
    """None when the worker's Python has every package; else, after a yes, the started :class:`InstallRun`.

    Raises :class:`DependencyError` when the user declines. Poll the run (the GUI's timer) and call its
    ``result()`` when it has finished.
    """
    python = python or python_executable()
    if python in _COMPLETE:
        return None
    missing = missing_packages(python)
    if not missing:
        _COMPLETE.add(python)
        return None
    if not confirm(install_question(missing)):
        names = " ".join("torch" if n == "torch" else PIP_PACKAGES[n] for n in missing)
        raise DependencyError(
            f"missing Python package(s) {names}; accept the offer to install them, or install them yourself "
            "(PyTorch: the PyTorch Utils module; others: slicer.util.pip_install) and try again"
        )
    return InstallRun(install_steps(missing), python)
