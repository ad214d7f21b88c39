"""``lungddpm train``: train a model on paired CT/layout folders or on phantoms, alone or under torchrun."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from .data_args import add_data_arguments, dataset_from_args
from .data_args import augmentation_options as data_augmentation_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (published recipe by default) on CT/layout pairs or phantoms",
        description="Train on --data (paired CT/layout files matched by name) or --phantom N (generated). "
        "Defaults follow the published Lung-DDPM recipe (Adam 1e-5, batch 1 x 2 accumulation, EMA 0.995 every "
        "10 steps from 2000). Under `torchrun --nproc-per-node K -m LungDDPMLib train ...` each process takes "
        "its share of every batch. SIGTERM (what a cluster scheduler sends before killing a job) or SIGINT "
        "(Ctrl-C) finishes the current update, writes a checkpoint at that step and exits with code 130; "
        "continue with --resume. Exit codes: 0 done, 1 error, 130 stopped by a signal (checkpoint written).",
    )
    add_data_arguments(p)
    p.add_argument(
        "--init-from",
        metavar="CHECKPOINT",
        help="start from this trained model (same architecture; condition channels it lacks start at zero weight, "
        "so step 0 computes what it computes); ignored by --resume, which continues the run's own weights",
    )
    p.add_argument(
        "--out",
        required=True,
        help="run folder: checkpoints/step-N.pt, last.pt, loss.jsonl and train.json (settings and each session's "
        "start/end step and outcome)",
    )
    p.add_argument(
        "--preset", default="small", help="architecture preset (tiny, small, roi-small, lung-ddpm, lung-ddpm-plus)"
    )
    p.add_argument("--grid", type=int, nargs="+", help="model grid (one size or D H W); default: the preset's")
    p.add_argument("--steps", type=int, default=None, help="optimiser updates to reach (default 100000)")
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=("adam", "adamw"))
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--grad-clip", type=float)
    p.add_argument(
        "--nodule-weight",
        type=float,
        help="loss weight of voxels in and near nodules (default 1: all alike, as published; bundled ROI model: 10)",
    )
    p.add_argument(
        "--nodule-weight-margin", type=int, help="voxels around each nodule that share its weight (default 2)"
    )
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--ema-every", type=int)
    p.add_argument("--ema-start", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--precision", choices=("fp32", "bf16"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last.pt (without it, a folder holding a run is refused)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def augmentation_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The dataset options the command adds to the model's data handling: the seed and the preset's flips."""
    return data_augmentation_options(args, args.preset)


_TRAIN_FIELDS = (
    "lr",
    "optimizer",
    "batch_size",
    "grad_accum",
    "grad_clip",
    "nodule_weight",
    "nodule_weight_margin",
    "ema_decay",
    "ema_every",
    "ema_start",
    "checkpoint_every",
    "log_every",
    "num_workers",
    "precision",
)


def _progress(quiet: bool) -> Callable[[int, int, float, Optional[float]], None]:
    last = [0.0]

    def report(step: int, total: int, loss: float, eta_s: Optional[float]) -> None:
        now = time.monotonic()
        if quiet or (now - last[0] < 5.0 and step != total):
            return
        last[0] = now
        eta = f"{eta_s / 60:.1f} min" if eta_s is not None else "?"
        print(f"step {step}/{total}  loss {loss:.4f}  eta {eta}", file=sys.stderr, flush=True)

    return report


def _write_json_atomically(path: Path, data: Dict[str, Any]) -> None:
    """Replace ``path`` in one step, so a killed run never leaves half a record."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class RunRecord:
    """``train.json``: the run's model and data, and one entry per session (the first, each resume).

    Kept beside the checkpoints so a run folder says how it was made and where each session ended (done,
    stopped by a signal, failed) without reading a .pt file. Training settings are per session: a resume may
    change the step target, the workers or the logging.
    """

    def __init__(self, out: Path, run: Dict[str, Any], session: Dict[str, Any]) -> None:
        self.path = out / "train.json"
        try:
            previous = json.loads(self.path.read_text(encoding="utf-8"))
            sessions = list(previous.get("sessions", [])) if isinstance(previous, dict) else []
        except (OSError, ValueError):
            sessions = []
        self.data: Dict[str, Any] = {**run, "sessions": sessions}
        self.session = dict(session)

    def start(self, step: int) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.session.update({"started": now, "argv": sys.argv[1:], "start_step": step, "status": "running"})
        self.data["sessions"].append(self.session)
        self._write()

    def end(self, status: str, **fields: Any) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.session.update({"ended": now, "status": status, **fields})
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomically(self.path, self.data)


def _refuse_existing_run(out: Path) -> None:
    """Without --resume a new run would overwrite last.pt and the step files of the run already there."""
    from ..errors import InputError

    if (out / "last.pt").is_file():
        raise InputError(
            f"{out} already holds a training run ({out / 'last.pt'}); pass --resume to continue it, or choose "
            "another --out for a new run"
        )


def run(args: argparse.Namespace) -> int:
    """Stop on SIGTERM/SIGINT from the start: a signal during data preparation still ends with a checkpoint."""
    from .job_args import cancel_on_signals

    should_stop, restore_signals = cancel_on_signals()
    try:
        return _train(args, should_stop)
    finally:
        restore_signals()


def _train(args: argparse.Namespace, should_stop: Callable[[], bool]) -> int:
    from ..config import preset
    from ..errors import InputError
    from ..phantom.nodules import parse_nodule_mix
    from ..training import TrainConfig, Trainer, seeded_model
    from ..training.distributed import init_from_env, shutdown
    from .exit_codes import EXIT_CANCELLED

    out = Path(args.out)
    if not args.resume:
        _refuse_existing_run(out)
    overrides = {}
    if args.grid:
        if len(args.grid) not in (1, 3):
            raise InputError(f"--grid takes one size or three (D H W), got {args.grid}")
        overrides["grid"] = tuple(args.grid) * 3 if len(args.grid) == 1 else tuple(args.grid)
    model_cfg = preset(args.preset, **overrides)
    fields = {name: getattr(args, name) for name in _TRAIN_FIELDS if getattr(args, name) is not None}
    if args.steps is not None:
        fields["max_steps"] = args.steps
    config = TrainConfig(seed=args.seed, **fields)
    dataset = dataset_from_args(args, model_cfg)
    model = seeded_model(model_cfg, args.seed)
    warm = None
    if args.init_from and not args.resume:
        from ..checkpoint import load_checkpoint
        from ..registry import file_sha256
        from ..training.warm_start import warm_start

        if not Path(args.init_from).is_file():
            raise InputError(f"--init-from checkpoint not found: {args.init_from} (pass an existing .pt file)")
        source_model = load_checkpoint(args.init_from).model
        warm = {"checkpoint": str(args.init_from), "sha256": file_sha256(args.init_from)}
        warm.update(warm_start(model, source_model))
    info = init_from_env(args.device)
    record: Optional[RunRecord] = None
    try:
        trainer = Trainer(
            model,
            dataset,
            config,
            args.out,
            device=args.device,
            distributed=info,
            resume="auto" if args.resume else False,
        )
        if info.is_main and not args.quiet:
            print(
                f"training {model_cfg.preset} on {len(dataset)} {'phantoms' if args.phantom else 'cases'}, "
                f"grid {model_cfg.grid}, {config.max_steps} steps, world size {info.world_size}",
                file=sys.stderr,
                flush=True,
            )
        if info.is_main:
            source = {"phantom": args.phantom} if args.phantom is not None else {"data": args.data}
            if args.phantom is not None and args.phantom_nodule_mix:
                source["phantom_nodule_mix"] = parse_nodule_mix(args.phantom_nodule_mix)
            run = {
                "model": model_cfg.to_dict(),
                "data": {**source, "layout_dir": args.layout_dir, "cases": len(dataset)},
            }
            flips = {"flip_axes": list(dataset.flip_axes), "flip_prob": dataset.flip_prob}  # axis 2: x, NIfTI i
            session = {"train": config.to_dict(), "augmentation": flips, "world_size": info.world_size}
            if warm is not None:
                session["init_from"] = warm
            record = RunRecord(out, run, session)
            record.start(trainer.step)
        try:
            result = trainer.fit(callback=_progress(args.quiet or not info.is_main), should_stop=should_stop)
        except BaseException as exc:
            if record is not None:
                record.end("failed", step=trainer.step, error=str(exc) or type(exc).__name__)
            raise
        summary = {
            "step": result.step,
            "stopped_early": result.stopped_early,
            "last_loss": result.last_loss,
            "checkpoint": str(result.checkpoint),
            "elapsed_s": round(result.elapsed_s, 1),
        }
        if info.is_main:
            assert record is not None
            record.end("stopped" if result.stopped_early else "done", **summary)
            print(json.dumps(summary), flush=True)
            if result.stopped_early:
                print(
                    f"stopped by a signal at step {result.step}; checkpoint {trainer.last_path} written. Continue "
                    "with the same command and --resume.",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        shutdown(info)
    return EXIT_CANCELLED if result.stopped_early else 0
