"""Python packages the worker needs inside Slicer: found, installed after asking, or explained.

Nothing is installed at import time or without a yes from the user. Torch comes through the PyTorch extension's
``PyTorchUtils`` (it picks the CUDA build that fits the driver); other packages through pip. Slicer's own numpy,
SimpleITK and scipy are never replaced. ``confirm`` is a callable that shows the question and returns True for
yes (``slicer.util.confirmOkCancelDisplay`` in the GUI, a fixed answer in tests and testing mode).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

from LungDDPMLib.errors import LungDDPMError

Confirm = Callable[[str], bool]
#: Import name -> pip requirement, for packages that Slicer may lack (numpy and SimpleITK ship with Slicer).
PIP_PACKAGES = {"scipy": "scipy"}
TORCH_REQUIREMENT = ">=2.1"


class DependencyError(LungDDPMError):
    """A package is missing and was not installed; the message says how to install it."""


def is_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def missing_packages() -> List[str]:
    """Import names the worker needs that are not installed (torch first)."""
    return [n for n in ("torch", *PIP_PACKAGES) if not is_installed(n)]


def ensure_torch(confirm: Confirm) -> None:
    """Install torch through PyTorchUtils after asking; raise :class:`DependencyError` when it stays missing."""
    if is_installed("torch"):
        return
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


def ensure_pip_packages(confirm: Confirm, pip_install: Optional[Callable[[str], Any]] = None) -> None:
    """Install the missing pip packages after one question (``slicer.util.pip_install`` by default)."""
    missing = [n for n in PIP_PACKAGES if not is_installed(n)]
    if not missing:
        return
    requirements = " ".join(PIP_PACKAGES[n] for n in missing)
    if not confirm(f"LungDDPM needs the Python package(s) {requirements}. Install with pip now?"):
        raise DependencyError(f"missing Python package(s): {requirements}; install them with pip and try again")
    if pip_install is None:
        import slicer

        pip_install = slicer.util.pip_install
    pip_install(requirements)


def ensure_dependencies(confirm: Confirm, pip_install: Optional[Callable[[str], Any]] = None) -> None:
    ensure_torch(confirm)
    ensure_pip_packages(confirm, pip_install)


@dataclass
class TorchStatus:
    installed: bool
    version: str = ""
    cuda_available: bool = False
    devices: List[Tuple[str, str]] = field(default_factory=list)  # (value, label)
    message: str = ""


def torch_status() -> TorchStatus:
    """What the installed torch can use: the device choices and a message when the GPU is out of reach.

    Imports torch (a second or two), so call it on demand, never at module import.
    """
    if not is_installed("torch"):
        return TorchStatus(False, message="PyTorch is not installed; it will be offered when you press Apply")
    import torch

    devices = [("auto", "auto (GPU if available)"), ("cpu", "CPU")]
    status = TorchStatus(True, torch.__version__, bool(torch.cuda.is_available()), devices)
    if status.cuda_available:
        for i in range(torch.cuda.device_count()):
            label = f"cuda:{i} {torch.cuda.get_device_name(i)}"
            try:
                free, total = torch.cuda.mem_get_info(i)
                label += f" ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"
            except RuntimeError:
                pass
            devices.append((f"cuda:{i}", label))
    else:
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            devices.append(("mps", "Apple GPU (MPS)"))
        status.message = gpu_message(torch.__version__, torch.version.cuda, shutil.which("nvidia-smi") is not None)
    return status


def gpu_message(version: str, cuda_build: Optional[str], nvidia_present: bool) -> str:
    """Why the GPU is not used, and what to do about it ('' when there is nothing to say)."""
    if nvidia_present and not cuda_build:
        return (
            f"The installed PyTorch {version} is a CPU-only build and cannot use your NVIDIA GPU; reinstall it "
            "from the PyTorch Utils module (uninstall, then install with the CUDA version your driver supports)"
        )
    if nvidia_present:
        return (
            f"PyTorch {version} was built for CUDA {cuda_build} but cannot reach the GPU; update the NVIDIA "
            "driver or reinstall PyTorch for an older CUDA from the PyTorch Utils module"
        )
    return "No GPU found: LungDDPM runs on the CPU, which is much slower (the progress bar shows an estimate)"
