"""Work a GUI needs from the engine, done in the engine's own process and returned as JSON events.

Why a separate module: 3D Slicer bundles numpy, scipy and SimpleITK but neither torch nor scikit-image, and
importing torch in Slicer's process (``torch.cuda.mem_get_info`` even more) creates a CUDA context that holds GPU
memory for the whole session. So the Slicer module never computes these itself; it runs the engine in a worker
process and reads events (one JSON object per line, like the synthesis events of :mod:`LungDDPMLib.worker`):

* ``metrics`` {case, name, ok, samples, histograms | message}: after each ``result`` of ``lungddpm worker
  --metrics``. ``samples[k][region][metric]`` holds :func:`LungDDPMLib.evaluation.paired_metrics` of sample k
  (``None`` where a metric does not apply); ``histograms`` {bins_hu, regions: {lung: {real, synthetic: [...]}}} are
  the fractions of a region's voxels per 20 HU bin. A failure is reported here (``ok`` false with a ``message``)
  and never fails the case: the synthetic images are already written.
* ``devices`` {torch, cuda_build, cuda_available, devices: [[value, label], ...], message}: ``lungddpm probe devices``.
* ``model`` {path, exists, sha256, known, text}: ``lungddpm probe model FILE`` (hashes the file; the bundled demo
  model when FILE is empty).

Example:
    >>> event = model_event("")  # the bundled demo model
    >>> event["type"], event["known"]
    ('model', 'lungddpm-demo')
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

#: Histogram bins in HU: 20 HU wide from -1100 to 600 (air to soft tissue and beyond; values outside are clipped).
HISTOGRAM_BINS_HU = np.arange(-1100.0, 600.0 + 1e-9, 20.0)
#: Regions whose histograms are sent (the generated ones; "kept" equals the input with AAS).
HISTOGRAM_REGIONS = ("lung", "nodule")

Emit = Callable[[Dict[str, Any]], None]


# --- paired metrics after a synthesis -----------------------------------------------------------------------


def histogram(values: np.ndarray) -> List[float]:
    """Fraction of ``values`` per bin of :data:`HISTOGRAM_BINS_HU` (so regions of any size compare)."""
    counts, _ = np.histogram(np.clip(values, HISTOGRAM_BINS_HU[0], HISTOGRAM_BINS_HU[-1]), bins=HISTOGRAM_BINS_HU)
    return [float(c) for c in counts / max(1, values.size)]


def metrics_payload(real_hu: np.ndarray, synthetics: Sequence[np.ndarray], layout: np.ndarray) -> Dict[str, Any]:
    """Paired metrics per sample and region, and HU histograms per generated region (JSON-ready)."""
    from .evaluation.paired import paired_metrics, region_masks

    samples = [paired_metrics(real_hu, s, layout) for s in synthetics]
    masks = region_masks(layout)
    regions = {}
    for region in HISTOGRAM_REGIONS:
        if masks[region].any():
            regions[region] = {
                "real": histogram(real_hu[masks[region]]),
                "synthetic": [histogram(s[masks[region]]) for s in synthetics],
            }
    centres = (HISTOGRAM_BINS_HU[:-1] + HISTOGRAM_BINS_HU[1:]) / 2
    return {"samples": samples, "histograms": {"bins_hu": [float(c) for c in centres], "regions": regions}}


def case_metrics(job: Any, case: Any, paths: Sequence[str]) -> Dict[str, Any]:
    """:func:`metrics_payload` for one finished case of ``job``, its layout read exactly as the synthesis read it."""
    import SimpleITK as sitk

    from .data.io import read_image
    from .worker import read_case

    ct, layout, _ = read_case(job, case)
    real = sitk.GetArrayFromImage(ct).astype(np.float32)
    labels = sitk.GetArrayFromImage(layout)
    synthetics = [sitk.GetArrayFromImage(read_image(p)).astype(np.float32) for p in paths]
    return metrics_payload(real, synthetics, labels)


def metrics_event(job: Any, result: Dict[str, Any]) -> Dict[str, Any]:
    """The ``metrics`` event that follows a ``result`` event; never raises (metrics are optional)."""
    index = int(result.get("case", 0))
    event: Dict[str, Any] = {"type": "metrics", "case": index, "name": result.get("name")}
    try:
        payload = case_metrics(job, job.cases[index], result["paths"])
    except Exception as exc:  # e.g. scikit-image missing: the images are written, only the numbers are lost
        return {**event, "ok": False, "message": f"{type(exc).__name__}: {exc}"}
    return {**event, "ok": True, **payload}


def with_metrics(emit: Emit, job: Any) -> Emit:
    """Wrap ``emit`` so that each ``result`` event is followed by its ``metrics`` event."""

    def emit_and_measure(event: Dict[str, Any]) -> None:
        emit(event)
        if event.get("type") == "result":
            emit({"type": "log", "message": f"computing paired metrics and histograms of {event.get('name')}"})
            emit(metrics_event(job, event))

    return emit_and_measure


# --- devices ---------------------------------------------------------------------------------------------


def gpu_message(version: str, cuda_build: Optional[str], nvidia_present: bool) -> str:
    """Why the GPU is not used, and what to do about it."""
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


def devices_event() -> Dict[str, Any]:
    """The compute devices this Python's torch can use, with free GPU memory; a message when the GPU is out of reach."""
    devices: List[List[str]] = [["auto", "auto (GPU if available)"], ["cpu", "CPU"]]
    event: Dict[str, Any] = {"type": "devices", "torch": None, "cuda_build": None, "cuda_available": False}
    try:
        import torch
    except ImportError:
        return {**event, "devices": devices, "message": "PyTorch is not installed; it is offered when you press Apply"}
    event.update(torch=torch.__version__, cuda_build=torch.version.cuda, cuda_available=bool(torch.cuda.is_available()))
    message = ""
    if event["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            label = f"cuda:{i} {torch.cuda.get_device_name(i)}"
            try:
                free, total = torch.cuda.mem_get_info(i)
                label += f" ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"
            except RuntimeError:
                pass
            devices.append([f"cuda:{i}", label])
    else:
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            devices.append(["mps", "Apple GPU (MPS)"])
        message = gpu_message(torch.__version__, torch.version.cuda, shutil.which("nvidia-smi") is not None)
    return {**event, "devices": devices, "message": message}


# --- model files -----------------------------------------------------------------------------------------


def model_event(path: str) -> Dict[str, Any]:
    """One line about a model file: the known model's title, preset and grid, or why it is not recognised.

    Hashes the whole file (a second for the 160 MB published weights), which is why it runs here and not in a GUI.
    """
    from .registry import DEMO_FILE, file_sha256, identify

    p = Path(path) if path and path != "." else DEMO_FILE
    event: Dict[str, Any] = {"type": "model", "path": str(p), "exists": p.is_file(), "sha256": None, "known": None}
    if not p.is_file():
        if p == DEMO_FILE:
            missing = "No model file chosen and the bundled demo model is missing from this installation"
            return {**event, "text": missing}
        return {**event, "text": f"File not found: {p}"}
    sha256 = file_sha256(p)
    model, how = identify(str(p), sha256)
    if model is None:
        text = (
            f"{p.name}: not a known model; its preset and grid are read from the file when it runs "
            "('lungddpm info' prints them)"
        )
    else:
        text = f"{model.title} - preset {model.preset}, grid {'x'.join(str(n) for n in model.grid)}"
        if how == "name":
            text += " (recognised by file name only; the weights are checked when it runs)"
    return {**event, "sha256": sha256, "known": None if model is None else model.key, "text": text}
