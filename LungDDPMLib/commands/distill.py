"""``lungddpm distill``: a few-step student of a trained model, by progressive distillation, resumable like train."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict

from .data_args import add_data_arguments, dataset_from_args

#: Training settings a student inherits from its teacher's own training record unless given (the same recipe).
INHERITED = (
    "lr",
    "optimizer",
    "betas",
    "weight_decay",
    "batch_size",
    "grad_accum",
    "grad_clip",
    "nodule_weight",
    "nodule_weight_margin",
    "ema_decay",
    "ema_every",
    "ema_start",
)
_OPTIONS = ("lr", "batch_size", "grad_accum", "grad_clip", "nodule_weight", "nodule_weight_margin", "ema_decay")
_OPTIONS += ("ema_every", "ema_start", "checkpoint_every", "log_every", "num_workers")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="distil a model into a few-step student (progressive distillation of its DDIM sampler)",
        description="Progressive distillation (Salimans & Ho 2022): each round trains a student to take two of its "
        "teacher's DDIM steps in one, halving the steps from --teacher-steps down to --steps. The student is an "
        "ordinary checkpoint of the same architecture that records its teacher and the sampler it is for; "
        "synthesize, worker and the Slicer module then use that sampler by default. Train it on the teacher's own "
        "training data (--data or --phantom, prepared exactly as for training it). The run folder (--run-dir) holds "
        "one training run per round (checkpoints, last.pt, loss.jsonl); SIGTERM/SIGINT write a checkpoint and "
        "exit with code 130; continue with --resume. Exit codes: 0 done, 1 error, 130 stopped by a signal.",
    )
    p.add_argument("checkpoint", help="the teacher: a LungDDPM checkpoint or the published Lung-DDPM file")
    p.add_argument("--steps", type=int, required=True, help="DDIM steps of the student (teacher steps / 2^k)")
    p.add_argument("--out", required=True, help="the student .pt, written when every round is done")
    p.add_argument("--teacher-steps", type=int, default=64, help="DDIM steps of the teacher in round 1 (default 64)")
    p.add_argument("--round-steps", type=int, default=2000, help="optimiser updates per round (default 2000)")
    p.add_argument("--run-dir", help="run folder (default: OUT without .pt, plus .distill)")
    p.add_argument(
        "--weighting",
        choices=("eps", "snr-truncated"),
        default="eps",
        help="loss weighting: a plain error on the predicted noise (default) or the paper's max(SNR,1) on the x0 "
        "error (see docs/distillation.md)",
    )
    p.add_argument(
        "--no-clip-x0", action="store_true", help="do not clamp x0 estimates to [-1, 1] (teacher and student)"
    )
    add_data_arguments(p)
    p.add_argument("--lr", type=float, help="default: the teacher's training lr (else 1e-5)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--nodule-weight", type=float, help="default: the teacher's (bundled ROI model: 10)")
    p.add_argument("--nodule-weight-margin", type=int)
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--ema-every", type=int)
    p.add_argument("--ema-start", type=int)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def default_run_dir(out: str) -> Path:
    p = Path(out)
    return p.with_name((p.name[:-3] if p.name.endswith(".pt") else p.name) + ".distill")


def train_fields(args: argparse.Namespace, teacher_provenance: Dict[str, Any]) -> Dict[str, Any]:
    """The student's training settings: the teacher's recipe where it records one, then what was given."""
    recorded = teacher_provenance.get("train_config") if isinstance(teacher_provenance, dict) else None
    fields = {k: recorded[k] for k in INHERITED if isinstance(recorded, dict) and k in recorded}
    if "betas" in fields:
        fields["betas"] = tuple(fields["betas"])
    fields.update({name: getattr(args, name) for name in _OPTIONS if getattr(args, name) is not None})
    return fields


def _progress(quiet: bool) -> Callable[..., None]:
    last = [0.0]

    def report(index: int, rounds: int, step: int, total: int, loss: float, eta_s: float) -> None:
        now = time.monotonic()
        if quiet or (now - last[0] < 5.0 and step != total):
            return
        last[0] = now
        print(
            f"round {index}/{rounds}  step {step}/{total}  loss {loss:.4g}  eta {eta_s / 60:.1f} min",
            file=sys.stderr,
            flush=True,
        )

    return report


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..distillation import DistillConfig, distill
    from ..distillation.run import check_teacher, refuse_existing_run
    from ..errors import InputError
    from ..training import TrainConfig
    from .exit_codes import EXIT_CANCELLED
    from .job_args import cancel_on_signals

    if not Path(args.checkpoint).is_file():
        raise InputError(f"teacher checkpoint not found: {args.checkpoint} (pass an existing .pt file)")
    if Path(args.out).exists() and not args.resume:
        raise InputError(f"{args.out} already exists; choose another --out (or --resume the run that writes it)")
    config = DistillConfig(
        steps=args.steps,
        teacher_steps=args.teacher_steps,
        round_steps=args.round_steps,
        clip_x0=not args.no_clip_x0,
        weighting=args.weighting,
    )
    teacher = load_checkpoint(args.checkpoint)  # refuses untrusted or foreign files before any data is prepared
    check_teacher(teacher, config)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.out)
    refuse_existing_run(run_dir, args.resume)
    train = TrainConfig(seed=args.seed, **train_fields(args, teacher.provenance))
    dataset = dataset_from_args(args, teacher.config)
    if not args.quiet:
        print(
            f"distilling {teacher.config.preset or 'custom'} ({args.checkpoint}) from {config.teacher_steps} to "
            f"{config.steps} DDIM steps in {config.rounds} rounds of {config.round_steps} updates, on "
            f"{len(dataset)} {'phantoms' if args.phantom else 'cases'}; run folder {run_dir}",
            file=sys.stderr,
            flush=True,
        )
    should_stop, restore = cancel_on_signals()
    try:
        result = distill(
            args.checkpoint,
            dataset,
            config,
            train,
            run_dir,
            args.out,
            device=args.device,
            resume=args.resume,
            callback=_progress(args.quiet),
            should_stop=should_stop,
        )
    finally:
        restore()
    summary = {
        "student": str(result.student) if result.student else None,
        "rounds_done": result.rounds_done,
        "stopped_early": result.stopped_early,
        "run_dir": str(run_dir),
    }
    print(json.dumps(summary), flush=True)
    if result.stopped_early:
        print(
            f"stopped by a signal in round {result.rounds_done + 1}; its checkpoint is written. Continue with the same "
            "command and --resume.",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_CANCELLED
    return 0
