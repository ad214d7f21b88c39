"""FID, MMD and diversity over a set of volumes in the scene, computed by ``lungddpm evaluate`` in a worker process.

Feature extraction takes seconds per volume, so it runs outside Slicer's process like synthesis does (the GUI
polls it on a timer and can cancel it). The module and the CLI share one implementation: the volumes are written
to NRRD under names that ``lungddpm evaluate`` pairs by case (``r0_ct``, ``r0_layout``, ``r0_synthetic_1``: a
synthetic volume on the grid of real volume 0 is a sample of it), the command writes its report, and the report's
numbers fill one table node.

With the default unit ``patch`` the features are taken from 40 mm patches of the lung (the layout drawn in the
segmentation, on each real volume's grid), so one real CT and a few synthetic samples are enough.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import slicer
import vtk

from . import layout_builder as lb
from . import mrml_bridge as mb
from .synthesis_run import WorkerError
from .worker_launcher import WorkerProcess, write_volume_nrrd

UNITS = ("patch", "volume")


def same_grid(a: Any, b: Any, tol: float = 1e-4) -> bool:
    """Two volume nodes sample the same voxels (shape, spacing, origin and axes within ``tol``)."""
    if mb.shape_kji(a) != mb.shape_kji(b):
        return False
    ga, gb = mb.sitk_geometry(a), mb.sitk_geometry(b)
    return all(np.allclose(ga[k], gb[k], atol=tol) for k in ("spacing", "origin", "direction"))


class SetMetricsRun:
    """One set-metric computation: check and export the volumes, run ``lungddpm evaluate``, fill a table node."""

    def __init__(
        self,
        real: Sequence[Any],
        synthetic: Sequence[Any],
        segmentation: Any = None,
        lung_ids: Optional[Sequence[str]] = None,
        nodule_ids: Optional[Sequence[str]] = None,
        unit: str = "patch",
        python: Optional[str] = None,
    ) -> None:
        self.real, self.synthetic = list(real), list(synthetic)
        self.segmentation = segmentation
        self.lung_ids = None if lung_ids is None else list(lung_ids)
        self.nodule_ids = None if nodule_ids is None else list(nodule_ids)
        self.unit = unit
        self.python = python
        self.worker: Optional[WorkerProcess] = None
        self.log: List[str] = []

    def check_inputs(self) -> None:
        """Raise ``LayoutError`` with an actionable message for an unusable selection; creates nothing."""
        if self.unit not in UNITS:
            raise mb.LayoutError(f"unknown set-metric unit {self.unit!r}; use one of {UNITS}")
        if not self.real or not self.synthetic:
            raise mb.LayoutError("check at least one real and one synthetic volume for FID/MMD")
        both = {n.GetID() for n in self.real} & {n.GetID() for n in self.synthetic}
        if both:
            names = [slicer.mrmlScene.GetNodeByID(i).GetName() for i in sorted(both)]
            raise mb.LayoutError(f"{names} are checked both as real and as synthetic; check each volume once")
        need = 2 if self.unit == "volume" else 1
        if min(len(self.real), len(self.synthetic)) < need:
            raise mb.LayoutError(
                "FID/MMD per volume need at least 2 real and 2 synthetic volumes; check more volumes or "
                "use the 'patch' unit"
            )
        for node in self.real + self.synthetic:
            mb.check_ct_volume(node)
        for node in self.synthetic:
            if self.owner(node) is None:
                raise mb.LayoutError(
                    f"the synthetic volume '{node.GetName()}' is not on the grid of any checked real volume; check "
                    "the real CT it was made from (or resample it onto that CT first)"
                )

    def owner(self, synthetic: Any) -> Optional[int]:
        """Index of the real volume a synthetic one is a sample of: the one it was made from (recorded at synthesis)
        when checked, else the first real volume on its grid; None when no real volume shares its grid."""
        made_from = synthetic.GetAttribute(mb.ATTRIBUTE_PREFIX + "referenceVolumeID")
        for i, real in enumerate(self.real):
            if made_from and real.GetID() == made_from and same_grid(real, synthetic):
                return i
        return next((i for i, r in enumerate(self.real) if same_grid(r, synthetic)), None)

    def prepare(self) -> None:
        """Check the inputs, write them to NRRD and start ``lungddpm evaluate`` (returns at once)."""
        self.check_inputs()
        self.worker = WorkerProcess(python=self.python)
        try:
            work = self.worker.workdir
            for folder in ("real", "synthetic"):
                (work / folder).mkdir()
            layouts = False
            for i, node in enumerate(self.real):
                geometry = mb.sitk_geometry(node)
                write_volume_nrrd(mb.volume_array(node), geometry, work / "real" / f"r{i}_ct.nrrd")
                if self.segmentation is not None:
                    lay = lb.layout_from_segmentation(self.segmentation, node, self.lung_ids, self.nodule_ids)
                    write_volume_nrrd(lay.array, geometry, work / "real" / f"r{i}_layout.nrrd")
                    layouts = True
            for k, node in enumerate(self.synthetic):
                name = f"r{self.owner(node)}_synthetic_{k}.nrrd"
                write_volume_nrrd(mb.volume_array(node), mb.sitk_geometry(node), work / "synthetic" / name)
            args = ["evaluate", "--real", str(work / "real"), "--synthetic", str(work / "synthetic")]
            args += ["--out", str(work / "report"), "--set-metrics", "on", "--set-unit", self.unit, "--figures", "0"]
            if layouts:
                args += ["--layout", str(work / "real")]
            self.worker.start_command(args)
        except BaseException:
            self.worker.cleanup()
            raise

    def poll(self) -> List[Dict[str, Any]]:
        """Drain the process's events (``lungddpm evaluate`` prints log lines) into :attr:`log`; returns them."""
        if self.worker is None:
            return []
        events = self.worker.poll()
        self.log.extend(str(e.get("message", "")) for e in events if e.get("type") == "log")
        return events

    @property
    def finished(self) -> bool:
        return self.worker is not None and self.worker.finished()

    def wait(self, timeout: Optional[float] = None) -> None:
        assert self.worker is not None, "prepare() first"
        self.worker.wait(timeout)
        self.poll()

    def cancel(self) -> None:
        """Ask the computation's process tree to stop; returns at once (poll until :attr:`finished`, then
        :meth:`discard`). The scene is left unchanged."""
        if self.worker is not None:
            self.worker.cancel()

    def discard(self) -> None:
        """Remove the temporary files (killing the process tree if it still runs)."""
        if self.worker is not None:
            self.worker.cleanup()

    def finish(self, name: str = "LungDDPM set metrics") -> Any:
        """The report as a table node (metric, value); raises ``WorkerError`` with the command's own message."""
        assert self.worker is not None, "prepare() first"
        try:
            self.poll()
            report_path = self.worker.workdir / "report" / "metrics.json"
            if self.worker.returncode != 0 or not report_path.is_file():
                errors = [line[len("error: ") :] for line in self.log if line.startswith("error: ")]
                message = errors[-1] if errors else "the evaluation stopped: " + " | ".join(self.log[-3:])
                raise WorkerError(message.replace(" (rerun with --debug for details)", ""))  # a CLI hint
            return add_set_metrics_table(name, json.loads(report_path.read_text()))
        finally:
            self.discard()


def set_metrics_rows(report: Dict[str, Any]) -> List[List[str]]:
    """(metric, value) rows from a ``lungddpm evaluate`` report: set metrics, then diversity per real volume."""
    sets = report["set_metrics"]
    rows = [["status", str(sets.get("status"))]]
    for key in ("fid", "mmd2", "mmd_bandwidth", "n_real", "n_synthetic", "unit", "extractor", "fid_reliable"):
        if key in sets:
            value = sets[key]
            rows.append([key, f"{value:.6g}" if isinstance(value, float) else str(value)])
    if "reason" in sets:
        rows.append(["reason", str(sets["reason"])])
    for real, div in sorted(report.get("diversity", {}).items()):
        if div and div.get("mean_pairwise_mae_hu") is not None:
            case = Path(real).name.split("_")[0]
            rows.append([f"diversity {case}: mean pairwise MAE (HU)", f"{div['mean_pairwise_mae_hu']:.2f}"])
            rows.append([f"diversity {case}: mean voxel SD (HU)", f"{div['mean_voxel_sd_hu']:.2f}"])
    return rows


def add_set_metrics_table(name: str, report: Dict[str, Any]) -> Any:
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    rows = set_metrics_rows(report)
    for col, values in (("metric", [r[0] for r in rows]), ("value", [r[1] for r in rows])):
        array = vtk.vtkStringArray()
        array.SetName(col)
        for v in values:
            array.InsertNextValue(v)
        table.AddColumn(array)
    table.Modified()
    return node
