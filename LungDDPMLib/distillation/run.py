"""A whole distillation run: the rounds in their folders, resume, and the student written at the end.

Run folder::

    RUN/distill.json            the teacher (path, sha256), the DistillConfig and the training settings
    RUN/round-1/ ... round-R/   one Trainer run each: checkpoints/step-N.pt, last.pt, loss.jsonl

Round r's teacher is the original checkpoint (r = 1) or round r-1's ``last.pt`` (its EMA weights), always read from
the file, so an interrupted and an uninterrupted run see the very same teacher. A resume skips finished rounds and
continues the unfinished one from its ``last.pt``; the student is written (atomically) only once every round is
done, so a partial run never leaves a file that looks like a finished student.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from torch.utils.data import Dataset

from .. import __version__
from ..checkpoint import FORMAT_OURS, FORMAT_VERSION, LoadedCheckpoint, atomic_torch_save, load_checkpoint
from ..data.writing import write_text_atomic
from ..errors import CheckpointError, InputError
from ..sampling.distilled import DISTILLATION_KEY, DistillationRecord
from ..training import TrainConfig, dataset_augmentation, derive_seed
from .config import DistillConfig
from .rounds import RoundTrainer

log = logging.getLogger("LungDDPMLib.distillation")
#: ``callback(round, rounds, step, round_steps, loss, eta_s)`` after every update.
Progress = Callable[[int, int, int, int, float, float], None]


@dataclass
class DistillResult:
    """What :func:`distill` did: the rounds finished, whether it was stopped, the student file (when finished)."""

    rounds_done: int
    stopped_early: bool
    student: Optional[Path] = None
    losses: Dict[int, List[float]] = field(default_factory=dict)


def round_dir(run_dir: Union[str, Path], index: int) -> Path:
    return Path(run_dir) / f"round-{index}"


def round_config(train: TrainConfig, distill: DistillConfig, index: int) -> TrainConfig:
    """Round ``index``'s training settings: ``round_steps`` updates, and a seed of its own (data order, noise)."""
    return dataclasses.replace(train, max_steps=distill.round_steps, seed=derive_seed(train.seed, "round", index))


def check_teacher(teacher: LoadedCheckpoint, distill: DistillConfig) -> None:
    """Refuse a teacher the recipe cannot halve: too few levels, or a student distilled for another step count."""
    T = teacher.model.num_timesteps
    if distill.teacher_steps > T:
        raise InputError(f"--teacher-steps {distill.teacher_steps} exceeds the model's {T} noise levels")
    if teacher.distillation is not None and teacher.distillation.steps != distill.teacher_steps:
        raise InputError(
            f"{teacher.path} is already a student distilled for {teacher.distillation.steps} steps; distil it further "
            f"with --teacher-steps {teacher.distillation.steps}"
        )


def refuse_existing_run(run_dir: Union[str, Path], resume: bool) -> None:
    """Without ``resume`` a new run would overwrite the rounds of the run already in ``run_dir``."""
    run_dir = Path(run_dir)
    if not resume and ((run_dir / "distill.json").is_file() or round_dir(run_dir, 1).is_dir()):
        raise InputError(
            f"{run_dir} already holds a distillation run; pass --resume to continue it, or choose another run folder"
        )


def _run_record(teacher: LoadedCheckpoint, distill: DistillConfig, train: TrainConfig) -> Dict[str, Any]:
    return {
        "teacher": {"path": teacher.path, "sha256": teacher.sha256, "step": teacher.step},
        "distill": distill.to_dict(),
        "train": train.to_dict(),
    }


def _check_resume(path: Path, record: Dict[str, Any]) -> None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the distillation record {path}: {exc}") from None
    if saved.get("teacher", {}).get("sha256") != record["teacher"]["sha256"]:
        raise InputError(
            f"{path.parent} distils another teacher (sha256 {saved.get('teacher', {}).get('sha256')}); resume it with "
            "that checkpoint, or choose another run folder"
        )
    mine, theirs = record["distill"], dict(saved.get("distill", {}))
    # round_steps too: a longer round 1 after round 2 has started would leave round 2 distilled from another teacher.
    changed = sorted(k for k in mine if mine[k] != theirs.get(k))
    if changed:
        raise InputError(
            f"{path.parent} was started with other distillation settings ({', '.join(changed)}: "
            f"{[theirs.get(k) for k in changed]}); resume with those, or choose another run folder"
        )


def distill(
    teacher_path: Union[str, Path],
    dataset: Dataset,
    distill_config: DistillConfig,
    train_config: TrainConfig,
    run_dir: Union[str, Path],
    out: Union[str, Path],
    *,
    device: Union[str, torch.device, None] = "auto",
    resume: bool = False,
    callback: Optional[Progress] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> DistillResult:
    """Distil ``teacher_path`` to ``distill_config.steps`` DDIM steps and write the student to ``out``.

    Args:
        teacher_path: any checkpoint ``load_checkpoint`` reads (ours or the published file); its EMA weights teach.
        dataset: the teacher's training data, built as for training it
            (:func:`LungDDPMLib.data.datasets.model_data_options` of its configuration).
        distill_config: steps, teacher steps, updates per round, clipping, weighting.
        train_config: optimiser, batch, EMA, checkpoint and log settings (``max_steps`` is replaced per round).
        run_dir: the run folder (see the module docstring); ``resume`` continues it.
        out: the student file, written when the last round is done.
        callback: progress after every update; ``should_stop``: polled before every update (a checkpoint of the
            round is written and the result says ``stopped_early``).
    Raises:
        InputError: a teacher the recipe cannot halve, an existing run without ``resume``, or a resume that names
            another teacher or recipe.
        CheckpointError: an unreadable or untrusted teacher (it is never unpickled beyond weights_only).
    """
    teacher = load_checkpoint(teacher_path)
    check_teacher(teacher, distill_config)
    run_dir, out = Path(run_dir), Path(out)
    record = _run_record(teacher, distill_config, train_config)
    record_path = run_dir / "distill.json"
    refuse_existing_run(run_dir, resume)
    if record_path.is_file():
        _check_resume(record_path, record)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(record, indent=2, sort_keys=True) + "\n", record_path)
    result = DistillResult(rounds_done=0, stopped_early=False)
    rounds = distill_config.rounds
    last: Optional[Path] = None
    for index in range(1, rounds + 1):
        teacher_steps, _ = distill_config.round_levels(index)
        source = teacher if index == 1 else load_checkpoint(round_dir(run_dir, index - 1) / "last.pt")
        trainer = RoundTrainer(
            source.model,
            dataset,
            round_config(train_config, distill_config, index),
            round_dir(run_dir, index),
            teacher_steps=teacher_steps,
            distill=distill_config,
            device=device,
            resume="auto" if resume else False,
        )

        def progress(step: int, total: int, loss: float, eta: float, index: int = index) -> None:
            if callback is not None:
                callback(index, rounds, step, total, loss, eta)

        log.info("round %d/%d: %d -> %d steps", index, rounds, teacher_steps, teacher_steps // 2)
        fit = trainer.fit(max_steps=distill_config.round_steps, callback=progress, should_stop=should_stop)
        result.losses[index] = fit.losses
        last = trainer.last_path
        if fit.stopped_early:
            result.stopped_early = True
            return result
        result.rounds_done = index
    assert last is not None
    result.student = write_student(last, out, teacher, distill_config, dataset)
    return result


def write_student(
    last: Path, out: Path, teacher: LoadedCheckpoint, distill_config: DistillConfig, dataset: Dataset
) -> Path:
    """The final round's EMA weights as an inference file (one set of weights, no optimiser), with the record."""
    final = load_checkpoint(last)
    record = DistillationRecord(
        method=distill_config.method,
        steps=distill_config.steps,
        sampler="ddim",
        spacing="trailing",
        clip_x0=distill_config.clip_x0,
        teacher_steps=distill_config.teacher_steps,
        teacher_sha256=teacher.sha256,
        teacher_path=teacher.path,
        rounds=distill_config.rounds,
        round_steps=distill_config.round_steps,
        weighting=distill_config.weighting,
    )
    provenance = {
        **final.provenance,
        DISTILLATION_KEY: record.to_dict(),
        "teacher": {"format": teacher.format, "step": teacher.step, "provenance": teacher.provenance},
        "augmentation": dataset_augmentation(dataset),
        "lungddpm_version": __version__,
        "torch_version": torch.__version__,
    }
    state = {k: v.detach().cpu() for k, v in final.model.state_dict().items()}
    payload = {
        "format": FORMAT_OURS,
        "format_version": FORMAT_VERSION,
        "config": final.config.to_json(),
        "step": distill_config.rounds * distill_config.round_steps,
        "model": state,
        "ema": dict(state),  # the same tensors: torch.save writes them once
        "provenance": json.dumps(provenance, sort_keys=True, default=str),
    }
    atomic_torch_save(payload, out)
    log.info("wrote the %d-step student %s", distill_config.steps, out)
    return out
