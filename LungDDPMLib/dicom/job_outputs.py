"""A job's outputs as DICOM: each sample a marked series plus its layout as a SEG (``--format dicom``), or such
copies beside the images in the job's ``dicom_dir`` (the Slicer module's "DICOM copies to"), never replacing files
that LungDDPM did not write. pydicom and highdicom load only when a series is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List

from ..errors import InputError
from ..job import Case, Job


def write_job_dicom(
    job: Job, case: Case, result: Any, ckpt: Any, paths: List[Path], layout: Any, source: Any, sampler: Any = None
) -> None:
    """Each sample as a marked DICOM series plus its layout as a SEG; ``source``: the headers of a DICOM ``--ct``.

    Our own earlier outputs may be replaced (:func:`~LungDDPMLib.outputs.check_not_foreign` refused any other)."""
    from .case import write_dicom_case

    for k, (image, seed) in enumerate(zip(result.images, result.seeds)):
        ran = {"sampler": sampler.name, "steps": sampler.steps} if sampler is not None else {"sampler": job.sampler}
        facts = {"model_sha256": ckpt.sha256, "model": ckpt.config.preset, "seed": seed, **ran, "aas": job.aas,
                 "recipe": job.recipe, "density": job.density, "provenance": Job.sidecar(case).name}  # fmt: skip
        what = f"LungDDPM {ckpt.config.preset or 'model'} seed {seed}"
        write_dicom_case(image, layout, paths[2 * k], paths[2 * k + 1], source=source, provenance=facts,
                         description=what, overwrite=True)  # fmt: skip


def check_dicom_copies(job: Job, case: Case, sidecar: Path) -> None:
    """Refuse DICOM copies that would replace a folder or file this case's earlier run did not write."""
    if not job.dicom_dir:
        return
    try:
        ours = set(json.loads(sidecar.read_text()).get("dicom_copies") or [])
    except (OSError, ValueError, AttributeError):
        ours = set()  # no earlier run of this case (or an unreadable record): nothing there is ours
    clash = [p for p in job.dicom_copy_paths(case) if p.exists() and str(p) not in ours]
    if clash:
        raise InputError(
            f"{clash[0]} exists and was not written by LungDDPM for {case.name}; it is never replaced: choose another "
            "DICOM folder or move it away"
        )
