"""``lungddpm augment``: K synthetic variants per real case with new nodules, as files or an nnU-Net dataset."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict

from .exit_codes import EXIT_CANCELLED, EXIT_OK
from .job_args import add_sampler_arguments, cancel_on_signals
from .terminal import ProgressLine


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "augment",
        help="make training data: synthetic variants of real cases with new nodules (NIfTI or an nnU-Net dataset)",
        description="Pairs the CTs and layouts of two folders by name and writes K variants of each case, each with "
        "new nodules drawn by the ROI model at plausible places (inside the lung or against the pleura, clear of "
        "every other nodule); the rest of each CT is the real one, bit for bit. Every variant records its source "
        "case, seeds, nodules, sampler and model; running the same command again skips finished variants.",
    )
    src = p.add_argument_group("inputs and output")
    src.add_argument("--ct-dir", required=True, help="folder of real CTs")
    src.add_argument("--layout-dir", help="folder of layouts (1 lung, 3/4/5 nodules; default: beside the CTs)")
    src.add_argument("--out", required=True, help="output folder")
    src.add_argument("--variants", type=int, required=True, metavar="K", help="synthetic variants per real case")
    src.add_argument(
        "--format",
        dest="out_format",
        choices=("nifti", "nnunet", "dicom"),
        default="nifti",
        help="nifti (default): <case>_v<k>_ct.nii.gz, _layout.nii.gz and .json; nnunet: DatasetNNN_NAME/ with the "
        "real cases too, dataset.json, splits_final.json and a MONAI datalist",
    )
    src.add_argument("--dataset-id", type=int, help="nnunet: the dataset number NNN")
    src.add_argument("--name", dest="dataset_name", help="nnunet: the dataset name")
    src.add_argument(
        "--labels",
        choices=("binary", "classes"),
        default="binary",
        help="nnunet labels: binary (nodule 1) or classes (one label per class named in --types); lung is background",
    )
    nod = p.add_argument_group("new nodules")
    nod.add_argument("--types", help="class shares, e.g. solid=0.6,part-solid=0.2,ground-glass=0.2 (the default)")
    nod.add_argument("--diameter-mm", default="5:25", help="diameter range LO:HI in mm, drawn log-uniformly")
    nod.add_argument("--juxta-share", type=float, default=0.25, help="share of nodules against the pleura")
    nod.add_argument("--nodules-per-variant", default="1", help="N or a range LO:HI (default 1)")
    nod.add_argument("--gap-mm", type=float, default=5.0, help="clearance from every other nodule (default 5)")
    m = p.add_argument_group("model and sampling")
    m.add_argument(
        "--checkpoint",
        default="",
        help="an ROI-mode model file, or a bundled model's name (default: the bundled "
        "ROI model's fast student; lungddpm-roi: the teacher)",
    )
    m.add_argument("--seed", type=int, default=0, help="run seed; each variant's seed is derived from it")
    add_sampler_arguments(m)
    p.add_argument("--quiet", action="store_true", help="no progress lines (warnings and errors stay)")
    p.set_defaults(func=run)


class _Progress:
    """Events as a person reads them: the progress line of :mod:`.terminal`, results as JSON lines on stdout."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.line = ProgressLine(quiet)

    def __call__(self, event: Dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "progress":
            where = f"[{event['item']}/{event['items']}] {event['name']}"
            self.line.show(where, event["step"], event["total"], event["eta_s"])
        elif kind == "result":
            self.line.end()
            print(json.dumps({"name": event["name"], "paths": event["paths"]}), flush=True)
        elif kind == "skipped" and not self.quiet:
            print(f"{event['name']}: skipped (already done by this run)", file=sys.stderr, flush=True)
        elif kind == "log" and not self.quiet:
            print(event["message"], file=sys.stderr, flush=True)
        elif kind == "done" and not self.quiet:
            print(
                f"done: {event['made']} written, {event['skipped']} skipped in {event['elapsed_s']:.1f} s; "
                f"manifest {event['manifest']}",
                file=sys.stderr,
                flush=True,
            )


def run(args: argparse.Namespace) -> int:
    from ..augment import Augmenter, AugmentSettings, cases_from_folders
    from ..checkpoint import load_checkpoint
    from ..device import resolve_device
    from ..errors import SamplingCancelled
    from ..nodule_density import resolve_density
    from ..registry import model_file
    from ..sampling import AASConfig, RuntimeOptions
    from ..sampling.distilled import sampler_for

    settings = AugmentSettings.create(
        variants=args.variants,
        types=args.types,
        diameter=args.diameter_mm,
        juxta_share=args.juxta_share,
        nodules=args.nodules_per_variant,
        gap_mm=args.gap_mm,
        seed=args.seed,
        out_format=args.out_format,
        labels=args.labels,
        dataset_id=args.dataset_id,
        dataset_name=args.dataset_name,
        sampler={
            "name": args.sampler,
            "steps": args.steps,
            "eta": args.eta,
            "aas": not args.no_aas,
            "blend_from": args.blend_from,
            "precision": args.precision,
            "density": args.density,
        },
    )
    aas = AASConfig(enabled=not args.no_aas, blend_from=args.blend_from)
    runtime = RuntimeOptions(precision=args.precision, channels_last=args.channels_last, compile=args.compile)
    cases = cases_from_folders(Path(args.ct_dir), Path(args.layout_dir) if args.layout_dir else None)
    device = resolve_device(args.device)
    ckpt = load_checkpoint(str(model_file(args.checkpoint, "roi")), map_location=device)
    sampler, warning = sampler_for(ckpt.distillation, args.sampler, args.steps, args.eta)  # a student: its own
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    runtime = runtime.resolved(device)
    should_stop, restore = cancel_on_signals()
    try:
        augmenter = Augmenter(
            cases, Path(args.out), settings, ckpt, sampler=sampler, aas=aas, runtime=runtime, should_stop=should_stop,
            density=resolve_density(args.density, ckpt.config),
        )  # fmt: skip
        report = _Progress(args.quiet)
        report({"type": "log", "message": f"model {ckpt.path} ({ckpt.config.preset or 'custom'}) on {device}"})
        augmenter.run(report)
        return EXIT_OK
    except SamplingCancelled:
        print("cancelled: finished variants are kept; run the same command again to go on", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        restore()
