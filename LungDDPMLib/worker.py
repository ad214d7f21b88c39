"""The job engine: synthesise a list of cases and report everything as events.

One engine serves three callers: ``lungddpm worker`` (a separate process that prints one JSON object per line,
for the Slicer module and scripts), ``lungddpm synthesize`` (the same job with human-readable progress) and batch
runs under ``torchrun`` (each rank takes every world-size-th case). Events are dicts with a ``type``:

* ``log`` {message, level?} - ``level: "warning"`` for what a user must see even when progress is hidden: a rerun
  with other settings replacing our own earlier outputs of a case (also ``case``, ``name`` and ``replaced``, the
  paths; see :func:`LungDDPMLib.outputs.replacement_note`)
* ``progress`` {case, cases, name, step, total, eta_s}
* ``result`` {case, name, paths, provenance}
* ``skipped`` {case, name, paths, reason, message?} - ``done``: a completion record says this exact case (same
  inputs, model, sampler, steps, seeds) is finished; ``locked``: another live process is synthesising it right now
  (``message`` names it), so its outputs are not there yet
* ``error`` {kind, message, case?, name?} - kind ``input``, ``checkpoint``, ``out-of-memory``, ``disk-full``,
  ``numerical`` (NaN/inf in a sample) or ``internal``; a bad case is reported and the batch goes on
* ``metrics`` {case, name, ok, samples, histograms | message} - only with ``lungddpm worker --metrics``, after each
  ``result`` (see :mod:`LungDDPMLib.gui_tasks`; a metrics failure never fails the case)
* ``done`` {ok, skipped, failed, locked, cancelled, elapsed_s} - always the last event, whatever failed before it;
  ``skipped`` counts both reasons, ``locked`` names the cases skipped as locked whose outputs were still not
  complete at the end (the commands then exit 75, :mod:`LungDDPMLib.commands.exit_codes`)

Outputs are written atomically and only after a case has finished, each verified by reading it back, so a cancel,
a crash or a full disk never leaves an output that looks complete; no output may be an input, files this tool did
not write are never replaced, and a per-case lock makes two runs on one folder do each case once
(:mod:`LungDDPMLib.outputs`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import CaseLockedError, InputError, LungDDPMError, SamplingCancelled, classify_error, error_message
from .job import (  # noqa: F401 - the job model's names, re-exported: callers import them from here
    CHOICES,
    MINIMA,
    OUT_FORMATS,
    Case,
    Job,
    cases_from_folders,
    check_distinct_cases,
    check_job_values,
    out_format_of,
    single_case,
)

Emit = Callable[[Dict[str, Any]], None]


def estimate_case_bytes(voxels: int, pixel: int, num_samples: int, grid: Sequence[int], batch: int) -> Dict[str, int]:
    """Memory and disk a case needs: every sample is held as float32 and as an image of the CT's type (``pixel``
    bytes a voxel) until the case is written, and the network works on ``batch`` volumes of the model grid (about
    16 copies each)."""
    grid_voxels = 1
    for n in grid:
        grid_voxels *= int(n)
    memory = num_samples * voxels * (4 + pixel) + 16 * 4 * grid_voxels * batch + 3 * 4 * voxels
    return {"memory": memory, "disk": num_samples * voxels * pixel + (1 << 20)}


def check_case_memory(job: Job, case: Case, voxels: int, pixel: int, grid: Sequence[int]) -> Dict[str, int]:
    """Refuse a case whose samples cannot fit in memory, with the figure (before any work per sample)."""
    from .data.validation import check_memory

    need = estimate_case_bytes(voxels, pixel, job.num_samples, grid, job.batch_size or 1)  # one sample per call
    check_memory(need["memory"], f"case {case.name} with {job.num_samples} sample(s)")
    return need


def is_distilled(path: str) -> bool:
    """Whether a model file is a student of ``lungddpm distill`` (its default sampler is its own); False for a file
    that cannot be read as a checkpoint (loading it later reports why)."""
    from .checkpoint import read_checkpoint_file
    from .sampling.distilled import DISTILLATION_KEY

    try:
        provenance = json.loads(str(read_checkpoint_file(path).get("provenance", "{}")))
    except (LungDDPMError, ValueError):
        return False
    return isinstance(provenance, dict) and provenance.get(DISTILLATION_KEY) is not None


def _load_model(job: Job, emit: Emit) -> Any:
    from .checkpoint import load_checkpoint
    from .device import resolve_device
    from .registry import model_file

    path = str(model_file(job.checkpoint, job.mode))
    device = resolve_device(job.device)
    ckpt = load_checkpoint(path, map_location=device)
    if job.mode is not None and job.mode != ckpt.config.spatial_mode:
        raise InputError(
            f"this model was trained in {ckpt.config.spatial_mode!r} mode and cannot run in {job.mode!r} mode; "
            "drop --mode or choose a model trained for it"
        )
    emit({"type": "log", "message": f"model {path} ({ckpt.config.preset or 'custom'}) on {device}"})
    return ckpt


def _write_case(
    job: Job,
    case: Case,
    result: Any,
    ckpt: Any,
    paths: List[Path],
    elapsed: float,
    key: Dict,
    layout_info: Dict,
    sampler: Any,
    layout: Any = None,
    source: Any = None,
) -> Dict:
    """Write the images (each verified and renamed into place), then the sidecar with the completion record."""
    from .data.io import write_image
    from .dicom.job_outputs import write_job_dicom
    from .nodule_density import density_record, resolve_density
    from .outputs import claim_record, completion_record, write_sidecar

    runtime = job.runtime().resolved(next(ckpt.model.parameters()).device)  # what actually ran, not "auto"
    provenance = {
        "model": {"path": ckpt.path, "sha256": ckpt.sha256, "preset": ckpt.config.preset, "step": ckpt.step},
        "sampler": sampler.name,
        "steps": sampler.steps,
        "levels": list(sampler.timesteps) if sampler.timesteps is not None else None,
        "distilled": ckpt.distillation.to_dict() if ckpt.distillation is not None else None,
        "aas": {"enabled": job.aas, "blend_from": job.blend_from, "feather_voxels": job.feather_voxels},
        "seeds": result.seeds,
        "precision": runtime.precision,
        "runtime": runtime.to_dict(),
        "inputs": {
            "ct": case.ct,
            "layout": case.layout,
            # How the layout was read: these labels/segments, and whether it had to be resampled onto the CT grid.
            "layout_options": {
                "lung_labels": job.lung_labels,
                "nodule_labels": job.nodule_labels,
                "ignore_labels": job.ignore_labels,
                "lung_segments": job.lung_segments,
                "nodule_segments": job.nodule_segments,
                "nodule_types": job.nodule_types,
                "auto_lung": job.auto_lung,
            },
            "layout_geometry": layout_info,
        },
        # The layout's nodule classes and whether the model used them (a two-channel model ignores them).
        "nodule_types": result.nodule_types,
        "regenerated": result.regenerated,
        "density": density_record(resolve_density(job.density, ckpt.config)),
        "timing_s": {**{k: round(v, 3) for k, v in result.timing_s.items()}, "case": round(elapsed, 3)},
        "preprocess": None if result.record is None else json.loads(result.record.to_json()),
        "recipe": result.recipe,
    }
    # Claim the output names first: a run killed between two images leaves files a later run knows as its own.
    copies = job.dicom_copy_paths(case) if job.dicom_dir else []
    # The copies are named in the claim too: after a kill while they are written, they are known as this case's.
    write_sidecar(Job.sidecar(case), {"completion": claim_record(key, paths), "dicom_copies": [str(p) for p in copies]})
    if job.out_format == "dicom":
        write_job_dicom(job, case, result, ckpt, paths, layout, source, sampler)
    else:
        for image, path in zip(result.images, paths):
            write_image(image, path)
    if copies:  # a marked DICOM copy beside the images (the Slicer module's "DICOM copies to")
        write_job_dicom(job, case, result, ckpt, copies, layout, source, sampler)
        provenance["dicom_copies"] = [str(p) for p in copies]
    provenance["completion"] = completion_record(key, paths)
    write_sidecar(Job.sidecar(case), provenance)
    return provenance


def read_case(job: Job, case: Case) -> Tuple[Any, Any, Dict[str, Any]]:
    """A case's CT, and its layout read with the job's options (labels, segments, auto lung, resampling), plus the
    layout report for the provenance; the one place a case's inputs are read (synthesis and metrics alike)."""
    from .data.io import read_ct
    from .data.layout import read_layout

    ct = read_ct(case.ct)
    layout, info = read_layout(
        case.layout,
        ct,
        job.lung_labels,
        job.nodule_labels,
        job.lung_segments,
        job.nodule_segments,
        auto_lung=job.auto_lung,
        ignore_labels=job.ignore_labels,
        resample=job.resample_layout,
        nodule_types=job.nodule_types,
    )
    return ct, layout, info


def _finish(
    emit: Emit, start: float, ok: int, skipped: int, failed: List[str], cancelled: bool, locked: Sequence[str] = ()
) -> None:
    emit({"type": "done", "ok": ok, "skipped": skipped, "failed": failed, "locked": list(locked),
          "cancelled": cancelled, "elapsed_s": round(time.perf_counter() - start, 2)})  # fmt: skip


def _still_locked(held: List[Tuple[str, Path, Dict[str, Any], List[Path]]]) -> List[str]:
    """The cases another process held when we came to them and has not finished since: their outputs are not
    there, so the run must not end looking done (a case finished meanwhile is done, whoever did it)."""
    from .outputs import is_done

    return [name for name, sidecar, key, paths in held if not is_done(sidecar, key, paths)]


def run_job(
    job: Job, emit: Emit, should_stop: Optional[Callable[[], bool]] = None, rank: int = 0, world: int = 1
) -> int:
    """Run every case of ``job`` that belongs to ``rank``; return the number of failed cases.

    Raises :class:`SamplingCancelled` after emitting ``done`` when ``should_stop`` turns true; a failure to load
    the model (nothing can run) is reported for every case. A failure in one case is reported and the next runs.
    """
    from .data.io import clean_orphans, header_size
    from .dicom.job_outputs import check_dicom_copies
    from .nodule_density import resolve_density
    from .outputs import CaseLock, check_apart, check_not_foreign, check_writable, is_done, replacement_note, same_file
    from .registry import file_sha256, model_file
    from .sampling import AASConfig, SamplerConfig
    from .sampling.distilled import sampler_for
    from .synthesis import synthesize_case

    start = time.perf_counter()
    sampler = SamplerConfig(job.sampler or "dpm++", steps=job.steps, eta=job.eta)  # checked before any case runs
    aas = AASConfig(enabled=job.aas, blend_from=job.blend_from, feather_voxels=job.feather_voxels)
    runtime = job.runtime()
    mine = [(i, c) for i, c in enumerate(job.cases) if i % world == rank]
    ok, skipped, failed = 0, 0, []
    held: List[Tuple[str, Path, Dict[str, Any], List[Path]]] = []  # skipped because another process has them
    ckpt = None
    model_path = str(model_file(job.checkpoint, job.mode))
    try:
        model_sha = file_sha256(model_path)
        distilled = is_distilled(model_path)
    except OSError as exc:
        emit({"type": "error", "kind": "checkpoint", "message": f"cannot read the model file {model_path}: {exc}"})
        _finish(emit, start, ok, skipped, [c.name for _, c in mine], False)
        return len(mine)
    if job.out_format == "dicom" or job.dicom_dir:
        from .dicom.uids import require_dicom

        try:
            require_dicom()
        except InputError as exc:  # before any sampling: nothing could be written
            emit({"type": "error", "kind": "input", "message": str(exc)})
            _finish(emit, start, ok, skipped, [c.name for _, c in mine], False)
            return len(mine)
    cleaned: set = set()
    for i, case in mine:
        where = {"case": i, "name": case.name}
        try:  # the header alone tells whether the samples can fit: refuse before naming a million outputs
            header = header_size(case.ct)
            if header is not None:
                check_case_memory(job, case, *header, grid=())
        except LungDDPMError as exc:
            emit({"type": "error", "kind": classify_error(exc), "message": str(exc), **where})
            failed.append(case.name)
            continue
        paths = job.output_paths(case)
        sidecar, lock_path = Job.sidecar(case), Job.lock(case)
        try:
            check_apart([*paths, sidecar, lock_path], [Path(case.ct), Path(case.layout)])
            if Path(case.ct).exists() and same_file(Path(case.ct), Path(case.layout)):
                raise InputError(f"the CT and the layout of case {case.name!r} are the same file: {case.ct}")
            key = job.completion_key(case, model_sha, distilled)
        except (LungDDPMError, OSError) as exc:
            kind = classify_error(exc) if isinstance(exc, LungDDPMError) else "input"
            emit({"type": "error", "kind": kind, "message": error_message(exc, kind), **where})
            failed.append(case.name)
            continue
        if is_done(sidecar, key, paths):
            skipped += 1
            emit({"type": "skipped", "reason": "done", **where, "paths": [str(p) for p in paths]})
            continue
        case_start = time.perf_counter()
        if ckpt is None:
            try:
                ckpt = _load_model(job, emit)
                runtime.check_device(next(ckpt.model.parameters()).device)
                if job.recipe == "published" and ckpt.distillation is not None:
                    raise InputError(
                        "--recipe published runs the authors' full sampler; this file is a distilled student, which "
                        "is run with its own few steps: use --recipe lungddpm (or the teacher)"
                    )
                sampler, warning = sampler_for(ckpt.distillation, job.sampler, job.steps, job.eta)
                if warning is not None:
                    emit({"type": "log", "level": "warning", "message": warning})
                elif ckpt.distillation is not None:
                    at = f" at levels {list(sampler.timesteps)}" if sampler.timesteps is not None else ""
                    emit({"type": "log", "message": f"distilled model: {sampler.name} with {sampler.steps} steps{at}"})
            except (LungDDPMError, RuntimeError, OSError, MemoryError) as exc:  # nothing can run without the model
                kind = classify_error(exc)
                emit({"type": "error", "kind": kind, "message": error_message(exc, kind)})
                failed.extend(c.name for _, c in mine if c.name not in failed)
                break
        try:
            with CaseLock(lock_path):
                if is_done(sidecar, key, paths):  # finished by another run while we waited for the lock
                    skipped += 1
                    emit({"type": "skipped", "reason": "done", **where, "paths": [str(p) for p in paths]})
                    continue
                check_not_foreign(paths, sidecar)
                check_dicom_copies(job, case, sidecar)
                replacing = replacement_note(sidecar, key, paths)  # read before the claim overwrites the record
                for folder in {p.parent for p in (*paths, sidecar)} - cleaned:
                    for orphan in clean_orphans(folder):
                        emit({"type": "log", "message": f"removed {orphan.name}, left by a run that was killed"})
                    cleaned.add(folder)
                ct, layout, layout_info = read_case(job, case)
                source = None
                if job.out_format == "dicom" or job.dicom_dir:  # a DICOM --ct: its headers, read before sampling
                    from .dicom.source import read_source_headers

                    source = read_source_headers(case.ct)
                for warning in layout_info.get("warnings", []):
                    emit({"type": "log", "message": f"{case.name}: {warning}"})
                pixel = max(int(ct.GetSizeOfPixelComponent()), 1)
                need = check_case_memory(job, case, int(ct.GetNumberOfPixels()), pixel, ckpt.config.grid)
                check_writable(paths[0].parent, need["disk"])

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
                    roi_margin_mm=job.roi_margin_mm,
                    density=resolve_density(job.density, ckpt.config),
                    batch_size=job.batch_size,
                    callback=progress,
                    should_stop=should_stop,
                    runtime=runtime,
                    recipe=job.recipe,
                )
                elapsed = time.perf_counter() - case_start
                if replacing is not None:
                    emit({"type": "log", "level": "warning", **where, "message": f"{case.name}: {replacing['message']}",
                          "replaced": replacing["replaced"]})  # fmt: skip
                provenance = _write_case(
                    job, case, result, ckpt, paths, elapsed, key, layout_info, sampler, layout, source
                )
            ok += 1
            emit({"type": "result", **where, "paths": [str(p) for p in paths], "provenance": provenance})
        except SamplingCancelled:
            _finish(emit, start, ok, skipped, failed, True, _still_locked(held))
            raise
        except CaseLockedError as exc:
            skipped += 1
            held.append((case.name, sidecar, key, paths))
            emit({"type": "skipped", "reason": "locked", **where, "paths": [str(p) for p in paths],
                  "message": str(exc)})  # fmt: skip
        except (LungDDPMError, RuntimeError, OSError, ValueError, MemoryError) as exc:
            kind = classify_error(exc)
            emit({"type": "error", "kind": kind, "message": error_message(exc, kind), **where})
            failed.append(case.name)
    _finish(emit, start, ok, skipped, failed, False, _still_locked(held))
    return len(failed)


def emit_json_lines(stream: Any) -> Emit:
    def emit(event: Dict[str, Any]) -> None:
        stream.write(json.dumps(event, default=str) + "\n")
        stream.flush()

    return emit


__all__: Sequence[str] = ["Case", "Job", "cases_from_folders", "emit_json_lines", "run_job", "single_case"]
