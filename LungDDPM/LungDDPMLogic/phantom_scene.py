"""The module's self-test: a procedural chest phantom made by the engine in a worker, synthesis, then FID/MMD.

Why a worker: the phantom generator is part of the engine, and Slicer's process must not depend on more of the
engine than it needs (the self-test used to import torch in Slicer's process to build a model). Here the engine
writes NRRD files (``lungddpm phantom``) and the scene reads them with SimpleITK, which Slicer bundles; the
synthesis then uses the bundled demo model, so no torch is imported here and nothing is downloaded.
:func:`self_test` is the whole flow; ``LungDDPMTest`` (inside Slicer) and the test-suite (headless) both run it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import slicer

from . import mrml_bridge as mb
from . import scene_outputs as so
from .dependencies import missing_packages
from .nodule_placement import NODULE_COLORS
from .segment_choice import set_terminology
from .set_metrics_run import SetMetricsRun
from .synthesis_run import RunOutputs, RunSettings, SynthesisRun, WorkerError
from .worker_launcher import WorkerProcess

PHANTOM_SIZE, PHANTOM_SPACING, PHANTOM_SEED = (64, 64, 40), (3.2, 3.2, 6.0), 3


def write_phantom(folder: Path, python: Optional[str] = None, timeout_s: float = 120.0) -> Tuple[Path, Path]:
    """Write a small phantom CT (HU) and its layout (0 background, 1 lung, 3-5 nodules by class) to ``folder`` with
    ``lungddpm phantom``."""
    worker = WorkerProcess(python=python)
    try:
        args = ["phantom", str(folder), "--n", "1", "--seed", str(PHANTOM_SEED), "--nodules", "1", "--no-seg"]
        args += ["--size", *map(str, PHANTOM_SIZE), "--spacing", *map(str, PHANTOM_SPACING)]
        worker.start_command(args)
        if worker.wait(timeout_s) != 0:
            raise WorkerError(f"'lungddpm phantom' failed: {worker.stderr_text()[-500:]}")
    finally:
        worker.cleanup()
    name = f"phantom{PHANTOM_SEED:04d}"
    return Path(folder) / f"{name}_ct.nrrd", Path(folder) / f"{name}_layout.nrrd"


def phantom_segments(labels: np.ndarray) -> List[Tuple[str, int, str]]:
    """(segment name, label value, role) for each segment of a layout: "Lung", then a nodule segment per class
    present whose name states the class ("Nodule solid", "Nodule part-solid", "Nodule ground-glass"), so that the
    module reads the same classes back; "Nodule" for nodules of unstated type, or when there is no nodule at all."""
    present = set(np.unique(labels).tolist())
    out = [("Lung", mb.LABEL_LUNG, "lung")]
    if mb.LABEL_NODULE in present or not present & set(mb.NODULE_LABELS):
        out.append(("Nodule", mb.LABEL_NODULE, "nodule"))
    out += [(f"Nodule {kind}", value, "nodule") for kind, value in mb.LABEL_OF_TYPE.items() if value in present]
    return out


def load_phantom(ct_path: Path, layout_path: Path, name: str = "Phantom CT") -> Tuple[Any, Any]:
    """The CT as a volume node and the layout as a segmentation with coded "Lung" and typed nodule segments
    (:func:`phantom_segments`)."""
    import SimpleITK as sitk

    ct = so.add_volume_from_sitk(sitk.ReadImage(str(ct_path)), name)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(layout_path)))
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} layout")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    for segment_name, value, role in phantom_segments(labels):
        kind = next((k for k, v in mb.LABEL_OF_TYPE.items() if v == value), None)
        color = NODULE_COLORS[kind] if kind else (0.5, 0.5, 0.5)
        segment_id = seg.GetSegmentation().AddEmptySegment("", segment_name, list(color))
        set_terminology(seg.GetSegmentation().GetSegment(segment_id), role)
        slicer.util.updateSegmentBinaryLabelmapFromArray((labels == value).astype(np.uint8), seg, segment_id, ct)
    return ct, seg


def run_to_end(task: Any, timeout_s: float = 300.0, idle: Optional[Any] = None) -> None:
    """Poll a task until it has finished (``idle`` is called between polls, e.g. ``slicer.app.processEvents``)."""
    deadline = time.monotonic() + timeout_s
    while not task.finished:
        if time.monotonic() > deadline:
            task.cancel()
            raise WorkerError(f"the task did not finish within {timeout_s:g} s")
        task.poll()
        if idle is not None:
            idle()
        time.sleep(0.05)
    task.poll()


def self_test_skip_reason(python: Optional[str] = None) -> Optional[str]:
    """Why the self-test cannot run (the worker's Python lacks packages), or None when it can."""
    missing = missing_packages(python)
    if not missing:
        return None
    return (
        f"the worker's Python lacks {', '.join(missing)}; press Apply in the LungDDPM module to install "
        "(it asks first), then run the self-test again"
    )


def self_test(
    folder: Path, checkpoint: str = "", idle: Optional[Callable[[], Any]] = None, python: Optional[str] = None
) -> Tuple[RunOutputs, Dict[str, str]]:
    """Phantom -> 2-step synthesis (the bundled demo model by default) -> FID/MMD against the phantom.

    Returns the run's outputs and the FID/MMD table as {metric: value}; raises on any failure.
    """
    ct, seg = load_phantom(*write_phantom(folder, python))
    run = SynthesisRun(ct, seg, RunSettings(checkpoint=checkpoint, steps=2, device="cpu"), python=python)
    run.prepare()
    run_to_end(run, idle=idle)
    outputs = run.finish()
    set_run = SetMetricsRun([ct], outputs.volumes, seg, python=python)
    set_run.prepare()
    run_to_end(set_run, idle=idle)
    table = set_run.finish().GetTable()
    values = {table.GetValue(r, 0).ToString(): table.GetValue(r, 1).ToString() for r in range(table.GetNumberOfRows())}
    return outputs, values
