"""``lungddpm downstream``: does synthetic data help nodule segmentation? Measured on phantoms, on a CPU.

Trains the same segmentation network once per arm and seed - on a few real phantoms only, and on those plus 1x, 2x,
4x... as many synthetic CTs (new nodules drawn by the diffusion model into the real phantoms) - and scores every arm
on held-out phantoms with one nodule of each class (Dice, sensitivity, false-positive components, per class too).
Progress goes to stderr; the table and the output paths to stdout; ``downstream.json`` and ``downstream.csv`` hold
everything. See :mod:`LungDDPMLib.downstream.experiment`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: ``--quick``: a smoke run of a few minutes on small, coarse phantoms that shows the pipeline, not a result.
QUICK = {
    "n_real": 2,
    "n_test": 2,
    "multiples": (0, 1),
    "repeats": 1,
    "steps": 20,
    "batch_size": 2,
    "sampler_steps": 3,
    "phantom_size": (128, 128, 80),
    "phantom_spacing": (1.6, 1.6, 3.0),
    "patch": (16, 32, 32),
}
#: ``--powered``: the powered design of docs/evaluation.md (issue 21), one (segnet, n_real) chunk at a time; with
#: ``--real``, ``--segnet``, ``--seed`` and ``--repeats`` a command selects its chunk. Sized on the 2-core CPU
#: (see benchmarks/downstream_runs.sh for the chunks and what each took).
POWERED = {
    "n_test": 20,
    "test_nodules": 3,
    "n_validation": 4,
    "multiples": (0, 1, 2, 4),
    "repeats": 5,
    "steps": 2000,
    "patience": 4,
    "eval_every": 100,
    "validation_patches": 48,
    "phantom_size": (256, 256, 112),
    "overlap": 0.25,
}
#: CLI option -> DownstreamConfig field, for the options whose value must be >= 1.
COUNTS = {
    "real": "n_real",
    "test": "n_test",
    "steps": "steps",
    "batch_size": "batch_size",
    "repeats": "repeats",
    "sampler_steps": "sampler_steps",
    "test_nodules": "test_nodules",
    "eval_every": "eval_every",
    "validation_patches": "validation_patches",
    "patience": "patience",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "downstream",
        help="measure whether synthetic CTs help a nodule-segmentation network (phantoms, scarce real data)",
        description="Writes downstream.json (config, seeds, per-case metrics, summary) and downstream.csv "
        "(one row per arm x seed x test case) into --out. Defaults: 4 real and 6 test phantoms at 0.8 x 0.8 x 1.5 "
        "mm, arms real-only and +2x synthetic from the bundled ROI model, MONAI U-Net, 400 steps of batch 4, "
        "three training seeds.",
    )
    p.add_argument("--out", default="lungddpm-downstream", help="output folder (default: ./lungddpm-downstream)")
    p.add_argument("--checkpoint", help="diffusion model (default: the bundled model of --mode)")
    p.add_argument("--mode", choices=("roi", "full"), help="roi: nodule patches (default); full: the whole lung")
    p.add_argument("--types", choices=("on", "off"), help="tell the model each nodule's class (default on)")
    p.add_argument(
        "--density",
        help="nodule density of the synthetic cases, as synthesize --density (default auto; off: the model alone)",
    )
    p.add_argument("--segnet", choices=("monai", "own"), help="MONAI 3D U-Net (default) or our small U-Net")
    p.add_argument("--real", type=int, help="real training phantoms (seeds 2000...)")
    p.add_argument(
        "--multiples",
        type=float,
        nargs="+",
        help="one arm per value: real + value x real synthetic cases (0: real only; default 0 2)",
    )
    p.add_argument(
        "--test", type=int, help="held-out test phantoms (seeds 3000...), --test-nodules each (classes and sizes cycle)"
    )
    p.add_argument("--steps", type=int, help="optimisation steps per arm")
    p.add_argument("--batch-size", type=int, help="patches per step")
    p.add_argument("--repeats", type=int, help="training seeds SEED..SEED+R-1, each used by every arm")
    p.add_argument("--seed", type=int, default=0, help="first training seed")
    p.add_argument(
        "--synthetic-fraction",
        default="pooled",
        help="share of synthetic patches in an arm with synthetic cases, or 'pooled' (by case counts; default)",
    )
    p.add_argument("--lr", type=float, help="Adam learning rate of the segmentation network (default 1e-3)")
    p.add_argument("--patch", type=int, nargs=3, metavar=("Z", "Y", "X"), help="patch size in voxels (24 48 48)")
    p.add_argument("--phantom-size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="voxels (256 256 160)")
    p.add_argument("--phantom-spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), help="mm (0.8 0.8 1.5)")
    p.add_argument("--cache", help="folder of synthetic cases, reused across runs (default: OUT/synthetic-cache)")
    p.add_argument("--sampler", choices=("dpm++", "ddim", "ddpm"), default="dpm++")
    p.add_argument("--sampler-steps", type=int, help="network evaluations per synthetic case (default 20)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is often faster on a machine others share)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (2 real, 2 test, 20 steps, small phantoms)")
    p.add_argument(
        "--powered",
        action="store_true",
        help="the powered design (20 test phantoms, 4 validation phantoms, early stopping, arms 0 1 2 4, 5 seeds); "
        "pick the chunk with --segnet, --real, --seed, --repeats; finished runs in --out are skipped",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        metavar="MIN",
        help="start no new run after about MIN minutes (rerun the same command to go on; finished runs are kept)",
    )
    p.add_argument(
        "--prepare-only",
        action="store_true",
        help="make and cache the phantoms and synthetic cases, train nothing (the synthesis chunk)",
    )
    p.add_argument("--validation", type=int, help="validation phantoms for early stopping (seeds 2500...)")
    p.add_argument("--test-nodules", type=int, help="nodules per validation/test phantom (classes, sizes cycle)")
    p.add_argument("--patience", type=int, help="stop after this many validations without improvement")
    p.add_argument("--eval-every", type=int, help="steps between validations (default 100)")
    p.add_argument("--validation-patches", type=int, help="fixed validation patches (default 64)")
    p.add_argument("--overlap", type=float, help="inference tile overlap (default 0.25 MONAI, 0.5 own)")
    p.add_argument(
        "--stop-on", choices=("loss", "dice"), help="early stopping watches the validation loss (default) or Dice"
    )
    p.add_argument(
        "--monai-dice",
        choices=("per-patch", "batch"),
        help="ablation: MONAI's Dice term per patch (default, MONAI's own) or over the whole batch (like ours)",
    )
    p.add_argument(
        "--synthetic-intensity",
        choices=("as-drawn", "matched"),
        help="ablation: move synthetic nodules to the real class mean and SD (matched)",
    )
    p.add_argument(
        "--synthetic-source",
        choices=("model", "phantom"),
        help="who draws the synthetic cases' nodules: the diffusion model (default) or, as an ablation, the phantom "
        "generator itself (the same layouts and anatomy: a perfect model)",
    )
    p.set_defaults(func=run)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def config_from_args(args: argparse.Namespace):  # -> DownstreamConfig (imported late: keeps --help fast)
    """Options given win over ``--quick``, which wins over the config defaults."""
    from ..downstream import DownstreamConfig
    from ..errors import InputError

    if args.quick and args.powered:
        raise InputError("--quick and --powered exclude each other")
    values = dict(QUICK) if args.quick else dict(POWERED) if args.powered else {}
    for option, field in COUNTS.items():
        value = getattr(args, option)
        if value is not None:
            if value < 1:
                raise InputError(f"--{option.replace('_', '-')} must be >= 1, got {value}")
            values[field] = value
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise InputError(f"checkpoint not found: {args.checkpoint}")
    fraction = str(args.synthetic_fraction).strip().lower()
    if fraction == "pooled":
        values["synthetic_fraction"] = None
    else:
        try:
            values["synthetic_fraction"] = float(fraction)
        except ValueError:
            raise InputError(f"--synthetic-fraction must be a number in (0, 1) or 'pooled', got {fraction!r}") from None
    for option in ("patch", "phantom_size", "phantom_spacing", "multiples"):
        if getattr(args, option) is not None:
            values[option] = tuple(getattr(args, option))
    if args.validation is not None:
        if args.validation < 0:
            raise InputError(f"--validation must be >= 0, got {args.validation}")
        values["n_validation"] = args.validation
    if args.overlap is not None:
        values["overlap"] = args.overlap
    for option in (
        "mode",
        "types",
        "segnet",
        "cache",
        "synthetic_intensity",
        "synthetic_source",
        "monai_dice",
        "stop_on",
        "density",
    ):
        if getattr(args, option) is not None:
            values[option] = getattr(args, option)
    if args.lr is not None:
        if not args.lr > 0:
            raise InputError(f"--lr must be > 0, got {args.lr}")
        values["lr"] = args.lr
    return DownstreamConfig(
        **values,
        seed=args.seed,
        checkpoint=args.checkpoint,
        sampler=args.sampler,
        device=args.device,
        out=str(args.out),
    )


def run(args: argparse.Namespace) -> int:
    from ..downstream import run_downstream
    from ..downstream.report import format_table
    from ..errors import InputError

    config = config_from_args(args)
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise InputError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.prepare_only:
        from ..downstream.experiment import prepare_cases

        made = prepare_cases(config, log=_log)
        new = [c for c in made["synthetic_cases"] if not c["cached"]]
        print(f"{len(made['synthetic_cases'])} synthetic cases in {made['cache']} ({len(new)} made now)")
        return 0
    budget = None
    if args.time_budget is not None:
        if not args.time_budget > 0:
            raise InputError(f"--time-budget must be > 0 minutes, got {args.time_budget}")
        budget = 60.0 * args.time_budget
    result = run_downstream(config, log=_log, time_budget_s=budget)
    model = result["model"]
    print(format_table(result))
    print(
        f"model: {model.get('path', model['source'])} ({model.get('preset') or 'custom'}); "
        f"mode {config.mode}, types {config.types}, segnet {config.segnet}; "
        f"sampler {config.sampler}, {config.sampler_steps} steps, AAS; device {result['device']}; "
        f"total {result['timing_s']['total']:.0f} s"
    )
    for name, path in result["outputs"].items():
        print(f"{name}: {path}")
    if result["left"]:
        print(f"time budget reached: {len(result['left'])} runs left; rerun the same command to go on")
    return 0
