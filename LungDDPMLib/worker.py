"""The job engine: synthesise a list of cases and report everything as events.

One engine serves three callers: ``lungddpm worker`` (a separate process that prints one JSON object per line,
for the Slicer module and scripts), ``lungddpm synthesize`` (the same job with human-readable progress) and batch
runs under ``torchrun`` (each rank takes every world-size-th case). Events are dicts with a ``type``:

* ``log`` {message}
* ``progress`` {case, cases, name, step, total, eta_s}
* ``result`` {case, name, paths, provenance}
* ``skipped`` {case, name, paths} - every output already exists (a resumed batch)
* ``error`` {kind, message, case?, name?} - a bad case is reported and the batch goes on
* ``done`` {ok, skipped, failed, cancelled, elapsed_s}
* ``metrics`` {case, name, ok, samples, histograms | message} - only with ``lungddpm worker --metrics``, after each
  ``result`` (see :mod:`LungDDPMLib.gui_tasks`; a metrics failure never fails the case)

Outputs are written atomically and only after a case has finished, so a cancel or a crash never leaves an
output that looks complete.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from .config import reject_unknown_fields
from .errors import InputError, LungDDPMError, SamplingCancelled

if TYPE_CHECKING:  # the worker module loads without torch; sampling is imported when a job runs
    from .sampling import RuntimeOptions

Emit = Callable[[Dict[str, Any]], None]


@dataclass(frozen=True)
class Case:
    """One CT with its layout, and where its outputs go (``<prefix>.nrrd`` or ``<prefix>_<k>.nrrd``)."""

    name: str
    ct: str
    layout: str
    out_prefix: str


@dataclass(frozen=True)
class Job:
    """Everything a worker needs; serialisable as JSON so it can cross a process boundary."""

    cases: List[Case]
    checkpoint: str = ""
    sampler: str = "dpm++"
    steps: Optional[int] = None
    eta: float = 0.0
    seed: int = 0
    num_samples: int = 1
    mode: Optional[str] = None
    aas: bool = True
    blend_from: Optional[int] = None
    feather_voxels: int = 0
    feather_mm: float = 0.0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    batch_size: Optional[int] = None
    lung_labels: Optional[List[int]] = None
    nodule_labels: Optional[List[int]] = None
    lung_segments: Optional[List[str]] = None
    nodule_segments: Optional[List[str]] = None
    auto_lung: str = "never"
    out_format: str = "nrrd"

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Job:
        reject_unknown_fields(cls, data, "job fields")
        if not data.get("cases"):
            raise InputError("the job names no cases")
        try:
            cases = [c if isinstance(c, Case) else Case(**c) for c in data["cases"]]
        except TypeError as exc:
            raise InputError(f"a case needs name, ct, layout and out_prefix: {exc}") from None
        return cls(**{**data, "cases": cases})

    @classmethod
    def from_json_file(cls, path: str) -> Job:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read the job file {path}: {exc}") from None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def output_paths(self, case: Case) -> List[Path]:
        suffix = ".nii.gz" if self.out_format == "nii.gz" else ".nrrd"
        if self.num_samples == 1:
            return [Path(case.out_prefix + suffix)]
        return [Path(f"{case.out_prefix}_{k}{suffix}") for k in range(self.num_samples)]

    @staticmethod
    def sidecar(case: Case) -> Path:
        """The provenance JSON, written after the images: its presence marks the case as complete."""
        return Path(case.out_prefix + ".json")

    def seeds(self) -> List[int]:
        return [self.seed + k for k in range(self.num_samples)]

    def runtime(self) -> RuntimeOptions:
        """The job's speed settings as :class:`~LungDDPMLib.sampling.RuntimeOptions` (validated)."""
        from .sampling import RuntimeOptions

        return RuntimeOptions(
            precision=self.precision,
            channels_last=self.channels_last,
            compile=self.compile,
            cuda_graphs=self.cuda_graphs,
        )


def classify_error(exc: BaseException) -> str:
    """Error kinds for the protocol: what a front end needs to choose its message and its remedy."""
    from .errors import CheckpointError

    if isinstance(exc, CheckpointError):
        return "checkpoint"
    if isinstance(exc, InputError):
        return "input"
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return "out-of-memory"
    return "internal"


def error_message(exc: BaseException, kind: str) -> str:
    if kind == "out-of-memory":
        return (
            "the GPU ran out of memory; try --mode roi (small patches), fewer samples per call (--batch-size 1), "
            "--precision bf16, or --device cpu"
        )
    return str(exc) or type(exc).__name__


def _load_model(job: Job, emit: Emit) -> Any:
    from .checkpoint import load_checkpoint
    from .device import resolve_device
    from .registry import DEMO_FILE as BUNDLED

    path = job.checkpoint or str(BUNDLED)
    device = resolve_device(job.device)
    ckpt = load_checkpoint(path, map_location=device)
    if job.mode is not None and job.mode != ckpt.config.spatial_mode:
        raise InputError(
            f"this model was trained in {ckpt.config.spatial_mode!r} mode and cannot run in {job.mode!r} mode; "
            "drop --mode or choose a model trained for it"
        )
    emit({"type": "log", "message": f"model {path} ({ckpt.config.preset or 'custom'}) on {device}"})
    return ckpt


def _write_case(job: Job, case: Case, result: Any, ckpt: Any, paths: List[Path], elapsed: float) -> Dict:
    from .data.io import write_image

    runtime = job.runtime().resolved(next(ckpt.model.parameters()).device)  # what actually ran, not "auto"
    provenance = {
        "model": {"path": ckpt.path, "sha256": ckpt.sha256, "preset": ckpt.config.preset, "step": ckpt.step},
        "sampler": job.sampler,
        "steps": job.steps,
        "aas": {"enabled": job.aas, "blend_from": job.blend_from, "feather_voxels": job.feather_voxels},
        "seeds": result.seeds,
        "precision": runtime.precision,
        "runtime": runtime.to_dict(),
        "inputs": {
            "ct": case.ct,
            "layout": case.layout,
            # How the layout was read: load_layout converts these labels/segments and resamples onto the CT grid.
            "layout_options": {
                "lung_labels": job.lung_labels,
                "nodule_labels": job.nodule_labels,
                "lung_segments": job.lung_segments,
                "nodule_segments": job.nodule_segments,
                "auto_lung": job.auto_lung,
                "resampled_to_ct_grid": "nearest neighbour, when the layout's grid differs",
            },
        },
        "timing_s": {**{k: round(v, 3) for k, v in result.timing_s.items()}, "case": round(elapsed, 3)},
        "preprocess": json.loads(result.record.to_json()),
    }
    for image, path in zip(result.images, paths):
        write_image(image, path)
    sidecar = Job.sidecar(case)
    tmp = sidecar.with_name(f".{sidecar.name}.partial")
    tmp.write_text(json.dumps(provenance, indent=2))
    tmp.replace(sidecar)
    return provenance


def run_job(
    job: Job, emit: Emit, should_stop: Optional[Callable[[], bool]] = None, rank: int = 0, world: int = 1
) -> int:
    """Run every case of ``job`` that belongs to ``rank``; return the number of failed cases.

    Raises :class:`SamplingCancelled` after emitting ``done`` when ``should_stop`` turns true; a failure to load
    the model (nothing can run) is raised too. A failure in one case is reported and the next case runs.
    """
    from .data.io import read_ct
    from .data.layout import load_layout
    from .sampling import AASConfig, SamplerConfig
    from .synthesis import synthesize_case

    start = time.perf_counter()
    sampler = SamplerConfig(job.sampler, steps=job.steps, eta=job.eta)
    aas = AASConfig(enabled=job.aas, blend_from=job.blend_from, feather_voxels=job.feather_voxels)
    runtime = job.runtime()
    if job.num_samples < 1:
        raise InputError(f"num_samples must be >= 1, got {job.num_samples}")
    mine = [(i, c) for i, c in enumerate(job.cases) if i % world == rank]
    ok, skipped, failed = 0, 0, []
    ckpt = None
    for i, case in mine:
        paths = job.output_paths(case)
        if all(p.exists() for p in paths) and Job.sidecar(case).exists():
            skipped += 1
            emit({"type": "skipped", "case": i, "name": case.name, "paths": [str(p) for p in paths]})
            continue
        case_start = time.perf_counter()
        if ckpt is None:
            try:
                ckpt = _load_model(job, emit)
                runtime.check_device(next(ckpt.model.parameters()).device)
            except (LungDDPMError, RuntimeError, OSError) as exc:  # nothing can run without the model
                kind = classify_error(exc)
                emit({"type": "error", "kind": kind, "message": error_message(exc, kind)})
                failed.extend(c.name for _, c in mine if c.name not in failed)
                break
        try:
            ct = read_ct(case.ct)
            layout = load_layout(
                case.layout,
                ct,
                job.lung_labels,
                job.nodule_labels,
                job.lung_segments,
                job.nodule_segments,
                auto_lung=job.auto_lung,
            )

            def progress(info: Any, i: int = i, name: str = case.name) -> None:
                emit(
                    {
                        "type": "progress",
                        "case": i,
                        "cases": len(job.cases),
                        "name": name,
                        "step": info.step,
                        "total": info.total,
                        "eta_s": round(info.eta_s, 2),
                    }
                )

            result = synthesize_case(
                ct,
                layout,
                ckpt.model,
                sampler=sampler,
                aas=aas,
                seeds=job.seeds(),
                feather_mm=job.feather_mm,
                batch_size=job.batch_size,
                callback=progress,
                should_stop=should_stop,
                runtime=runtime,
            )
            provenance = _write_case(job, case, result, ckpt, paths, time.perf_counter() - case_start)
            ok += 1
            emit(
                {
                    "type": "result",
                    "case": i,
                    "name": case.name,
                    "paths": [str(p) for p in paths],
                    "provenance": provenance,
                }
            )
        except SamplingCancelled:
            emit({"type": "done", "ok": ok, "skipped": skipped, "failed": failed, "cancelled": True,
                  "elapsed_s": round(time.perf_counter() - start, 2)})  # fmt: skip
            raise
        except (LungDDPMError, RuntimeError, OSError, ValueError) as exc:
            kind = classify_error(exc)
            emit({"type": "error", "kind": kind, "message": error_message(exc, kind), "case": i, "name": case.name})
            failed.append(case.name)
    emit({"type": "done", "ok": ok, "skipped": skipped, "failed": failed, "cancelled": False,
          "elapsed_s": round(time.perf_counter() - start, 2)})  # fmt: skip
    return len(failed)


def cases_from_folders(ct_dir: str, layout_dir: Optional[str], out_dir: str) -> List[Case]:
    """Pair CTs and layouts by name (see :func:`LungDDPMLib.data.datasets.pair_files`)."""
    from .data.datasets import pair_files

    pairs = pair_files(ct_dir, layout_dir)
    return [Case(name, str(ct), str(lay), str(Path(out_dir) / f"{name}_synthetic")) for name, ct, lay in pairs]


def single_case(ct: str, layout: str, out: str) -> Case:
    """A case whose outputs are named after ``out`` (its extension is dropped)."""
    p = Path(out)
    name = p.name
    for suffix in (".nii.gz", ".nrrd", ".nii", ".mha"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Case(name, ct, layout, str(p.with_name(name)))


def emit_json_lines(stream: Any) -> Emit:
    def emit(event: Dict[str, Any]) -> None:
        stream.write(json.dumps(event, default=str) + "\n")
        stream.flush()

    return emit


__all__: Sequence[str] = ["Case", "Job", "cases_from_folders", "emit_json_lines", "run_job", "single_case"]
