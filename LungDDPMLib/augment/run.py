"""An augmentation run end to end: plan, then draw every unfinished variant with the ROI model and write it.

Resuming: each case's sidecar holds a completion record (:mod:`LungDDPMLib.outputs`) keyed by the run's identity;
a case whose record is complete and whose files all still have their recorded sizes is skipped, anything else
(a half-written case, a file removed since) is made again. The run's identity is stored in ``augment_run.json``
before the first case: the same command resumes, a different run pointed at the same output is refused.

Events (``emit``) are the worker's style of JSON-able dicts: ``log``, ``progress`` (``item``/``items``, ``name``,
``step``/``total``, ``eta_s``), ``skipped``, ``result`` and a final ``done``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..config import is_nodule
from ..data.axes import native_grid
from ..errors import InputError, LungDDPMError
from ..nodule_density import density_record
from ..outputs import check_not_foreign, claim_record, completion_record, is_done, read_record, write_sidecar
from .options import AugmentSettings
from .plan import (
    CaseInput,
    CasePlan,
    VariantPlan,
    check_case_names,
    check_model_classes,
    identity_change,
    model_layout,
    plan_case,
    read_case,
    run_identity,
    with_nodules,
)
from .writers import MANIFEST_FILE, RUN_FILE, Entry, OutputWriter, make_writer

Emit = Callable[[Dict[str, Any]], None]


def cases_from_folders(ct_dir: Path, layout_dir: Optional[Path]) -> List[CaseInput]:
    """Pair the two folders by name (:func:`~LungDDPMLib.data.pairing.pair_files`); an unpaired file is an error."""
    from ..data.pairing import pair_files

    return [CaseInput(name, ct, layout) for name, ct, layout in pair_files(ct_dir, layout_dir, strict=True)]


def _claim_run(writer: OutputWriter, identity: Dict[str, Any]) -> None:
    """Refuse another run's output, then record this run's identity (before the first case is written)."""
    writer.check_target()
    marker = writer.root / RUN_FILE
    if marker.is_file():
        try:
            old = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if old != identity:
            raise InputError(
                f"{writer.root} holds the output of another augment run ({identity_change(old, identity)}); resume "
                "with the same command, or choose another --out (or --dataset-id / --name)"
            )
        return
    from ..data.io import write_text_atomic

    writer.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(identity, indent=2), marker)


class Augmenter:
    """Drive one run: ``Augmenter(...).run(emit)``; the model is a :class:`~LungDDPMLib.checkpoint.LoadedCheckpoint`."""

    def __init__(
        self,
        cases: Sequence[CaseInput],
        out: Path,
        settings: AugmentSettings,
        checkpoint: Any,
        *,
        sampler: Any = None,
        aas: Any = None,
        runtime: Any = None,
        should_stop: Optional[Callable[[], bool]] = None,
        density: Any = None,
    ) -> None:
        from ..sampling import AASConfig, RuntimeOptions, SamplerConfig

        cfg = checkpoint.config
        if cfg.spatial_mode != "roi":
            raise InputError(
                f"augment draws new nodules with an ROI-mode model; {checkpoint.path} is a {cfg.spatial_mode!r} model "
                "(leave --checkpoint out for the bundled ROI model)"
            )
        self.cases = sorted(cases, key=lambda c: c.name)
        self.settings = settings
        self.ckpt = checkpoint
        self.sampler = sampler or SamplerConfig()
        self.aas = aas or AASConfig()
        self.runtime = runtime or RuntimeOptions()
        self.should_stop = should_stop
        self.density = density  # per-class targets (LungDDPMLib.nodule_density), or None: the model alone
        self.patch_zyx = native_grid(cfg.grid, cfg.array_order)
        self.writer = make_writer(Path(out).absolute(), settings)
        self.identity = run_identity(self.cases, settings, checkpoint.sha256)
        self.run_key = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()
        inputs = {p.resolve() for c in self.cases for p in (c.ct.parent, c.layout.parent)}
        if not self.writer.writes_real and Path(out).resolve() in inputs:
            raise InputError(f"--out {out} is an input folder; the variants would be paired as cases next time")
        check_case_names([c.name for c in self.cases], settings)
        check_model_classes(settings, cfg.nodule_types, "nodule_type" in cfg.unet.layout_channels)

    # ---- planning ----------------------------------------------------------------------------------------------
    def plan(self, emit: Emit) -> List[CasePlan]:
        """Read every case and place every variant's nodules; nothing is written."""
        plans = []
        for case in self.cases:
            ct, layout = read_case(case)
            plans.append(plan_case(case, ct, layout, self.settings, self.patch_zyx, self.writer))
        count = sum(len(v.placed) for p in plans for v in p.variants)
        emit({"type": "log", "message": f"plan: {len(plans)} case(s), {count} new nodule(s) placed"})
        return plans

    def entries(self, plans: Sequence[CasePlan]) -> List[Entry]:
        out: List[Entry] = []
        for p in plans:
            if self.writer.writes_real:
                out.append((p.source.name, p.source.name, False))
            out += [(v.case_id, p.source.name, True) for v in p.variants]
        return out

    # ---- one case ----------------------------------------------------------------------------------------------
    def _key(self, case_id: str) -> Dict[str, Any]:
        return {"run": self.run_key, "case": case_id}

    def done(self, case_id: str) -> bool:
        return is_done(self.writer.sidecar(case_id), self._key(case_id), self.writer.files(case_id))

    def _save(self, case_id: str, ct: sitk.Image, layout: sitk.Image, record: Dict[str, Any]) -> List[Path]:
        files, sidecar = self.writer.files(case_id), self.writer.sidecar(case_id)
        check_not_foreign(files, sidecar)
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        write_sidecar(sidecar, {"completion": claim_record(self._key(case_id), files)})
        self.writer.write(case_id, ct, layout)
        record["files"] = [str(f.relative_to(self.writer.root)) for f in files]
        record["completion"] = completion_record(self._key(case_id), files)
        write_sidecar(sidecar, record)
        return files

    def _base_record(self, plan: CasePlan) -> Dict[str, Any]:
        from ..outputs import file_identity

        return {
            "tool": "lungddpm augment",
            "lungddpm": __version__,
            "source_case": plan.source.name,
            "inputs": {"ct": file_identity(str(plan.source.ct)), "layout": file_identity(str(plan.source.layout))},
            "existing_nodules": plan.existing_nodules,
        }

    def synthesize(self, plan: CasePlan, variant: VariantPlan, ct: sitk.Image, labels: np.ndarray, progress: Emit):
        """Draw one variant: the new nodules' regions regenerated, everything else the source CT bit for bit."""
        from ..synthesis import synthesize_case

        t0 = time.perf_counter()
        condition = plan.geometry.image_from_array(model_layout(labels, variant.placed))
        result = synthesize_case(
            ct, condition, self.ckpt.model, sampler=self.sampler, aas=self.aas, seeds=[variant.seed],
            runtime=self.runtime, callback=progress, should_stop=self.should_stop, density=self.density,
        )  # fmt: skip
        image = result.images[0]
        existing = is_nodule(labels)
        if not np.array_equal(sitk.GetArrayViewFromImage(image)[existing], sitk.GetArrayViewFromImage(ct)[existing]):
            raise LungDDPMError(f"internal error: variant {variant.case_id} changed an existing nodule's voxels")
        device = next(self.ckpt.model.parameters()).device
        record = {
            **self._base_record(plan),
            "case": variant.case_id,
            "synthetic": True,
            "variant": variant.variant,
            "seeds": {
                "run": self.settings.seed,
                "variant": variant.seed,
                "placement": variant.seed,
                "sampling": variant.seed,
            },
            "nodules": variant.nodules(plan.geometry),
            "model": {
                "path": str(self.ckpt.path),
                "sha256": self.ckpt.sha256,
                "preset": self.ckpt.config.preset,
                "step": self.ckpt.step,
            },
            "sampler": {
                "name": self.sampler.name,
                "steps": self.sampler.steps,
                "eta": self.sampler.eta,
                "levels": list(self.sampler.timesteps) if self.sampler.timesteps is not None else None,
            },
            "aas": {"enabled": self.aas.enabled, "blend_from": self.aas.blend_from},
            "density": density_record(self.density),
            "runtime": self.runtime.resolved(device).to_dict(),
            "regenerated": result.regenerated,
            "nodule_types": result.nodule_types,
            "timing_s": {"synthesis": round(time.perf_counter() - t0, 3)},
        }
        return image, plan.geometry.image_from_array(with_nodules(labels, variant.placed)), record

    # ---- the run -----------------------------------------------------------------------------------------------
    def run(self, emit: Emit) -> Dict[str, Any]:
        """Plan, claim the output, make every unfinished case, then the dataset files and the manifest."""
        start = time.perf_counter()
        plans = self.plan(emit)
        entries = self.entries(plans)
        _claim_run(self.writer, self.identity)
        made, skipped, item = 0, 0, 0
        for plan in plans:
            todo = [cid for cid, src, _ in entries if src == plan.source.name and not self.done(cid)]
            for cid in [c for c, s, _ in entries if s == plan.source.name and c not in todo]:
                item += 1
                skipped += 1
                emit({"type": "skipped", "name": cid, "reason": "done"})
            if not todo:
                continue
            ct, layout = read_case(plan.source)
            labels = sitk.GetArrayFromImage(layout)
            if plan.source.name in todo:  # the real case itself (dataset formats)
                item += 1
                self._save(plan.source.name, ct, layout, {**self._base_record(plan), "case": plan.source.name,
                                                          "synthetic": False})  # fmt: skip
                made += 1
                emit(
                    {
                        "type": "result",
                        "name": plan.source.name,
                        "paths": [str(p) for p in self.writer.files(plan.source.name)],
                    }
                )
            for variant in plan.variants:
                if variant.case_id not in todo:
                    continue
                item += 1
                where = {"item": item, "items": len(entries), "name": variant.case_id}

                def progress(info: Any, where: Dict[str, Any] = where) -> None:
                    emit({"type": "progress", **where, "step": info.step, "total": info.total, "eta_s": info.eta_s})

                image, out_layout, record = self.synthesize(plan, variant, ct, labels, progress)
                paths = self._save(variant.case_id, image, out_layout, record)
                made += 1
                emit({"type": "result", "name": variant.case_id, "paths": [str(p) for p in paths],
                      "seconds": record["timing_s"]["synthesis"]})  # fmt: skip
        dataset_files = self.writer.finish(entries)
        manifest = self.manifest(entries, dataset_files)
        emit({"type": "done", "made": made, "skipped": skipped, "elapsed_s": round(time.perf_counter() - start, 2),
              "manifest": str(self.writer.root / MANIFEST_FILE)})  # fmt: skip
        return manifest

    def manifest(self, entries: Sequence[Entry], dataset_files: Sequence[Path]) -> Dict[str, Any]:
        """The whole run in one file: its identity and every case's record (read back from the sidecars)."""
        from ..data.io import write_text_atomic

        cases = []
        for cid, _, _ in entries:
            try:
                record = json.loads(self.writer.sidecar(cid).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                record = {}
            if read_record(self.writer.sidecar(cid)) is None:
                raise LungDDPMError(f"internal error: case {cid} has no completion record")
            cases.append({k: v for k, v in record.items() if k not in ("completion", "inputs")})
        manifest = {
            "tool": "lungddpm augment",
            "lungddpm": __version__,
            "format": self.settings.out_format,
            "run": self.identity,
            "dataset_files": [str(Path(p).relative_to(self.writer.root)) for p in dataset_files],
            "cases": cases,
        }
        write_text_atomic(json.dumps(manifest, indent=2), self.writer.root / MANIFEST_FILE)
        return manifest
