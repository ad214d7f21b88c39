"""One synthesis run from the scene: check inputs, run the worker, load the outputs as nodes.

The life of a run: :meth:`SynthesisRun.prepare` reads and checks the scene (a bad input raises here, before
anything is created), writes the inputs to NRRD and starts the worker; :meth:`SynthesisRun.poll` (on the GUI's
timer) collects progress; :meth:`SynthesisRun.finish` loads the outputs into a new subject-hierarchy folder next
to the input: the synthetic volumes and the layout first, all or nothing (if loading them fails, everything added is
removed again), then the metrics table and histogram chart from the worker's ``metrics`` event, which are optional:
a metrics failure is reported in :attr:`RunOutputs.metrics_error` and never removes a finished volume.
:meth:`SynthesisRun.cancel` asks the worker's process tree to stop and returns at once; keep polling until
:attr:`SynthesisRun.finished`, then :meth:`SynthesisRun.discard` removes the files. The scene is left as it was.

Example (a script or the self-test)::

    run = SynthesisRun(ctNode, segNode, RunSettings(steps=2, device="cpu"))
    run.prepare()
    run.wait()
    outputs = run.finish()   # RunOutputs with volumes, table, chart...
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import slicer

from LungDDPMLib.errors import LungDDPMError

from . import evaluation_nodes as ev
from . import layout_builder as lb
from . import mrml_bridge as mb
from . import scene_outputs as so
from .worker_launcher import WorkerProcess, read_volume_nrrd, write_volume_nrrd


class WorkerError(LungDDPMError):
    """The worker reported an error or stopped unexpectedly; the message is the worker's own."""

    def __init__(self, message: str, kind: str = "internal") -> None:
        super().__init__(message)
        self.kind = kind


def dicom_run_folder(folder: str) -> str:
    """Where one run's marked DICOM copies go: a new ``LungDDPM-<date>-<time>`` folder inside the user's ``folder``
    (every run's outputs are named alike, so a shared folder would clash), or ``""`` for no copies."""
    import datetime

    folder = (folder or "").strip()
    if not folder:
        return ""
    return str(Path(folder) / datetime.datetime.now().strftime("LungDDPM-%Y%m%d-%H%M%S-%f"))


@dataclass
class RunSettings:
    """What the GUI's parameter node holds about the model and the sampler (0 means 'the default')."""

    checkpoint: str = ""
    sampler: str = "auto"  # the model's own: dpm++, or a distilled student's sampler and steps
    steps: int = 0
    seed: int = 0
    num_samples: int = 1
    mode: str = "auto"
    aas: bool = True
    blend_from: int = -1  # -1: blend after every step; B >= 0: after steps starting at a level <= B (published)
    device: str = "auto"
    precision: str = "auto"
    auto_lung: bool = False
    recipe: str = "lungddpm"  # "published": the authors' sample.py, which fixes the sampler and the blending
    density: str = "auto"  # the --density text: auto, off or per-class targets
    dicom_dir: str = ""  # also write each sample as a marked DICOM series + SEG here (the job's dicom_dir)

    def job_fields(self) -> Dict[str, Any]:
        if self.recipe == "published":  # the job refuses sampler settings the published recipe would ignore
            fields = dict(RunSettings(**{**self.__dict__, "recipe": "lungddpm"}).job_fields())
            fields.update(sampler="dpm++", steps=None, aas=True, recipe="published")
            return fields
        return {
            "checkpoint": self.checkpoint or "",
            "sampler": None if self.sampler in ("", "auto") else self.sampler,
            "steps": self.steps or None,
            "seed": int(self.seed),
            "num_samples": int(self.num_samples),
            "mode": None if self.mode in ("", "auto") else self.mode,
            "aas": bool(self.aas),
            "blend_from": None if self.blend_from < 0 else int(self.blend_from),
            "device": self.device or "auto",
            "precision": self.precision,
            "recipe": self.recipe,
            "density": self.density or "auto",
            "dicom_dir": self.dicom_dir.strip() or None,
        }


@dataclass
class RunOutputs:
    """What a run added to the scene; the metrics nodes are None when ``metrics_error`` says why."""

    folder: int
    volumes: List[Any]
    layout: Any
    metrics_table: Any = None
    histogram_chart: Any = None
    other_nodes: List[Any] = field(default_factory=list)
    metrics_error: str = ""
    #: What the worker said about the result for the log, e.g. that the model ignored the layout's nodule classes.
    notes: List[str] = field(default_factory=list)

    def nodes(self) -> List[Any]:
        optional = [n for n in (self.metrics_table, self.histogram_chart) if n is not None]
        return [*self.volumes, self.layout, *optional, *self.other_nodes]


@dataclass
class Progress:
    step: int = 0
    total: int = 0
    eta_s: Optional[float] = None

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


class SynthesisRun:
    """One run of the worker on one CT volume and its layout segmentation."""

    def __init__(
        self,
        volume: Any,
        segmentation: Any,
        settings: Optional[RunSettings] = None,
        lung_ids: Optional[Sequence[str]] = None,
        nodule_ids: Optional[Sequence[str]] = None,
        python: Optional[str] = None,
    ) -> None:
        self.volume = volume
        self.segmentation = segmentation
        self.settings = settings or RunSettings()
        self.lung_ids = None if lung_ids is None else list(lung_ids)
        self.nodule_ids = None if nodule_ids is None else list(nodule_ids)
        self.python = python
        self.worker: Optional[WorkerProcess] = None
        self.layout: Optional[lb.Layout] = None
        self.progress = Progress()
        self.results: List[Dict[str, Any]] = []
        self.errors: List[Dict[str, Any]] = []
        self.metrics: Dict[int, Dict[str, Any]] = {}
        self.log: List[str] = []
        self.started = 0.0

    # --- before ---------------------------------------------------------------------------------------------

    def check_inputs(self) -> lb.Layout:
        """Check the scene inputs and build the layout; raises ``LayoutError`` and creates nothing."""
        mb.check_ct_volume(self.volume)
        if self.settings.num_samples < 1:
            raise mb.LayoutError(f"the number of samples must be at least 1, got {self.settings.num_samples}")
        self.layout = lb.layout_from_segmentation(
            self.segmentation, self.volume, self.lung_ids, self.nodule_ids, self.settings.auto_lung
        )
        self.log.extend(self.layout.warnings)
        return self.layout

    def prepare(self) -> None:
        """Check the inputs, write them to NRRD and start the worker (returns at once)."""
        self.check_inputs()
        self.worker = WorkerProcess(python=self.python)
        try:
            ct_path, layout_path = self.write_inputs(self.worker.workdir)
            case = {"name": "case", "ct": str(ct_path), "layout": str(layout_path), "out_prefix": str(self.out_prefix)}
            self.started = time.monotonic()
            job = {"cases": [case], **self.settings.job_fields(), "auto_lung": "never"}
            self.worker.start(job, ["--metrics"])
        except BaseException:
            self.worker.cleanup()
            raise

    def write_inputs(self, folder: Any) -> Tuple[Any, Any]:
        """Write the CT and the checked layout to ``folder`` as the worker's NRRD inputs; returns their paths."""
        assert self.layout is not None, "check_inputs() first"
        geometry = mb.sitk_geometry(self.volume)
        voxels = slicer.util.arrayFromVolume(self.volume)  # a view: writing copies it once, not twice
        ct_path = write_volume_nrrd(voxels, geometry, Path(folder) / "ct.nrrd")
        return ct_path, write_volume_nrrd(self.layout.array, geometry, Path(folder) / "layout.nrrd")

    @property
    def out_prefix(self) -> Any:
        assert self.worker is not None
        return self.worker.workdir / "out" / "synthetic"

    # --- during ---------------------------------------------------------------------------------------------

    def poll(self) -> List[Dict[str, Any]]:
        """Drain the worker's events and update :attr:`progress`, :attr:`results`, :attr:`errors`, :attr:`log`."""
        if self.worker is None:
            return []
        events = self.worker.poll()
        for event in events:
            kind = event.get("type")
            if kind == "progress":
                self.progress = Progress(int(event.get("step", 0)), int(event.get("total", 0)), event.get("eta_s"))
            elif kind == "result":
                self.results.append(event)
            elif kind == "error":
                self.errors.append(event)
            elif kind == "metrics":
                self.metrics[int(event.get("case", 0))] = event
            elif kind == "log":
                self.log.append(str(event.get("message", "")))
        return events

    @property
    def finished(self) -> bool:
        return self.worker is not None and self.worker.finished()

    def wait(self, timeout: Optional[float] = None) -> None:
        """Block until the worker is done (scripts, tests and the self-test; the GUI polls instead)."""
        if self.worker is not None:
            self.worker.wait(timeout)
            self.poll()

    # --- after ----------------------------------------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        assert self.worker is not None
        self.poll()
        if self.errors:
            first = self.errors[0]
            raise WorkerError(f"synthesis failed: {first.get('message', 'unknown error')}", first.get("kind", ""))
        code = self.worker.returncode
        if code != 0 or not self.results:
            tail = self.worker.stderr_text().strip().splitlines()[-3:]
            raise WorkerError(
                f"the worker stopped with exit code {code} and no result"
                + (": " + " | ".join(tail) if tail else "")
                + "; see the Python console log for details"
            )

    def finish(self) -> RunOutputs:
        """Load the outputs into the scene and remove the temporary files.

        The volumes and the layout are loaded all or nothing (a failure removes the run folder with everything in
        it and raises); the metrics nodes come after and their failure only sets ``metrics_error``.
        """
        assert self.worker is not None and self.layout is not None, "prepare() first"
        try:
            outputs = self._load_volumes()
            outputs.metrics_error = self._add_metrics(outputs)
            return outputs
        finally:
            self.discard()

    def _load_volumes(self) -> RunOutputs:
        import SimpleITK as sitk

        assert self.layout is not None
        self._raise_if_failed()
        result = self.results[-1]
        provenance = result.get("provenance") or {}
        seeds = provenance.get("seeds") or list(range(self.settings.num_samples))
        images = [self._read_output(p) for p in result["paths"]]  # read and checked before any node is created
        name = self.volume.GetName()
        folder, created = 0, None
        try:
            folder = so.create_run_folder(self.volume, f"{name} LungDDPM {time.strftime('%Y-%m-%d %H:%M:%S')}")
            volumes = []
            for k, image in enumerate(images):
                voxels = sitk.GetArrayViewFromImage(image)  # a view (the node copies it); ``images`` keeps it valid
                node = so.add_volume_like(self.volume, voxels, f"{name} synthetic {k}")
                so.place_in_folder([node], folder)
                so.set_provenance(node, provenance, seed=seeds[k] if k < len(seeds) else None)
                node.SetAttribute(mb.ATTRIBUTE_PREFIX + "referenceVolumeID", self.volume.GetID())
                volumes.append(node)
            layout_node = so.add_volume_like(self.volume, self.layout.array, f"{name} layout", labelmap=True)
            so.place_in_folder([layout_node], folder)
            layout_node.SetAttribute(mb.ATTRIBUTE_PREFIX + "role", "layout")
            created = so.show_with_layout_colors(layout_node)
            so.follow_parent_transform([*volumes, layout_node], self.volume)
        except BaseException:
            so.remove_folder(folder)
            if created is not None:  # the scene's layout colours, made for this run
                slicer.mrmlScene.RemoveNode(created)
            raise
        note = (provenance.get("nodule_types") or {}).get("note")
        return RunOutputs(folder, volumes, layout_node, notes=[str(note)] if note else [])

    def _add_metrics(self, outputs: RunOutputs) -> str:
        """Add the metrics table and histogram chart to the run folder; returns '' or why they are missing."""
        event = self.metrics.get(int(self.results[-1].get("case", 0)))
        if event is None:
            return "the worker sent no metrics (the synthetic volumes are complete)"
        if not event.get("ok"):
            return f"the metrics could not be computed: {event.get('message', 'unknown error')}"
        name = self.volume.GetName()
        added: List[Any] = []
        try:
            outputs.metrics_table = ev.add_metrics_table(f"{name} LungDDPM metrics", ev.metrics_rows(event))
            added.append(outputs.metrics_table)
            plot_nodes = ev.add_histogram_plot(f"{name} HU histograms", event["histograms"])
            added.extend(plot_nodes)
            outputs.histogram_chart, outputs.other_nodes = plot_nodes[1], [plot_nodes[0], *plot_nodes[2:]]
            so.place_in_folder(added, outputs.folder)
        except Exception as exc:  # a malformed event must not cost the finished volumes
            for node in added:
                slicer.mrmlScene.RemoveNode(node)
            outputs.metrics_table = outputs.histogram_chart = None
            outputs.other_nodes = []
            return f"the metrics could not be shown: {type(exc).__name__}: {exc}"
        return ""

    def _read_output(self, path: str) -> Any:
        """The worker's output as a SimpleITK image, checked to lie on the input's grid."""
        import SimpleITK as sitk

        image = read_volume_nrrd(path)
        shape = tuple(sitk.GetArrayViewFromImage(image).shape)  # a view: no copy of the voxels
        expected = mb.shape_kji(self.volume)
        if shape != expected:
            raise WorkerError(f"the worker wrote {path} with shape {shape}, expected {expected}")
        geometry = mb.sitk_geometry(self.volume)
        if not np.allclose(image.GetOrigin(), geometry["origin"], atol=1e-3) or not np.allclose(
            image.GetDirection(), geometry["direction"], atol=1e-5
        ):
            raise WorkerError(f"the worker wrote {path} on another grid than the input; this is a bug, please report")
        return image

    def cancel(self) -> None:
        """Ask the worker's process tree to stop; returns at once. Poll until :attr:`finished`, then
        :meth:`discard`. Nothing is added to the scene."""
        if self.worker is not None:
            self.worker.cancel()

    def discard(self) -> None:
        """Remove the temporary files (killing the worker's tree if it still runs)."""
        if self.worker is not None:
            self.poll()
            self.worker.cleanup()

    def eta_text(self) -> str:
        """One line for the status label: starting, the step and its ETA, or the metrics after sampling."""
        p = self.progress
        if self.results and not self.metrics:
            return "sampling done; computing the metrics in the worker..."
        if not p.total:
            return "starting the worker..." if self.worker and self.worker.running else ""
        eta = "" if p.eta_s is None else f", about {round(p.eta_s)} s left"
        return f"step {p.step} of {p.total}{eta}"


def scene_node_count() -> int:
    return slicer.mrmlScene.GetNumberOfNodes()
