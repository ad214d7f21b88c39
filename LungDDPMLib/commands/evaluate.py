"""``lungddpm evaluate``: how faithful are synthetic CTs? Paired, set and diversity metrics with a report folder."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict

from ..job import CHOICES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics of synthetic CTs against real ones (JSON, CSV and PNG figures)",
        description=(
            "Compare synthetic CTs with real ones. Files and folders are accepted; synthetic files are matched to "
            "real CTs and layouts by case name (case1_ct.nrrd, case1_layout.nrrd, case1_synthetic_0.nrrd), or all "
            "to a single real CT, or in sorted order when the counts agree. Synthetic CTs of different kinds of run "
            "(mode, model, sampler, steps, read from each output's provenance <out>.lungddpm.json) are summarised "
            "apart, never pooled. Writes metrics.json, metrics.csv, histograms.csv and figures/*.png into --out."
        ),
    )
    p.add_argument("--real", nargs="+", required=True, metavar="PATH", help="real CT files or folders (HU)")
    p.add_argument("--synthetic", nargs="+", required=True, metavar="PATH", help="synthetic CT files or folders")
    p.add_argument("--layout", nargs="+", default=[], metavar="PATH", help="layouts (label maps 0/1/2-5 or .seg.nrrd)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument(
        "--geometry",
        choices=("refuse", "resample"),
        default="refuse",
        help="synthetic CT on another grid than its real CT: refuse (default) or resample it onto the real grid",
    )
    p.add_argument(
        "--extractor",
        choices=("radiomic", "med3d"),
        default="radiomic",
        help="features for FID/MMD: the built-in radiomic set (no weights; not comparable with the paper) or a "
        "Med3D ResNet-50 with --weights",
    )
    p.add_argument("--weights", help="local Med3D ResNet-50 weights (MedicalNet resnet_50.pth layout)")
    p.add_argument(
        "--set-metrics",
        choices=("auto", "on", "off"),
        default="auto",
        help="FID/MMD: auto = when each set has enough volumes, on = fail if not, off = skip",
    )
    p.add_argument(
        "--set-unit",
        choices=("volume", "patch"),
        default="volume",
        help="one feature vector per volume (default), or per 40 mm patch of the lung (for few volumes)",
    )
    p.add_argument(
        "--auto-lung",
        choices=CHOICES["auto_lung"],
        default="never",
        help="read the layouts as synthesize --auto-lung did: if-missing completes a layout without lung (only "
        "nodules) with the lung found in the CT, always takes the lung from the CT",
    )
    p.add_argument("--figures", type=int, default=8, help="pairs that get a montage and histogram figure")
    p.add_argument("--device", default="cpu", help="device for the Med3D extractor")
    p.set_defaults(func=run)


def _summary_lines(report: Dict[str, Any]) -> list:
    lines = [f"pairs: {report['pairing']['pairs']} ({report['pairing']['how']})"]
    if report["pairing"]["note"]:
        lines.append(f"note: {report['pairing']['note']}")
    groups = report.get("groups") or [report]
    for group in groups:
        if len(groups) > 1:  # each kind of run on its own: a mean over a mix would describe none of them
            lines.append(f"group {group['group']}: {group['label']} ({group['synthetic']} synthetic)")
        lines.extend(_group_lines(group))
    return lines


def _group_lines(report: Dict[str, Any]) -> list:
    lines = []
    summary = report.get("summary")
    if summary:
        lines.append(f"{'region':<10} {'MAE HU':>8} {'PSNR dB':>8} {'SSIM':>6} {'W1 HU':>7}")
        for region, m in summary.items():

            def fmt(v: Any, spec: str) -> str:
                return "n/a" if v is None else format(v, spec)

            lines.append(
                f"{region:<10} {fmt(m['mae_hu'], '8.1f')} {fmt(m['psnr_db'], '8.2f')} "
                f"{fmt(m['ssim'], '6.3f')} {fmt(m['w1_hu'], '7.1f')}"
            )
    sets = report["set_metrics"]
    if sets.get("status") == "ok":
        lines.append(
            f"FID {sets['fid']:.4g}  MMD^2 {sets['mmd2']:.4g}  ({sets['extractor']} features, per {sets['unit']}: "
            f"{sets['n_real']} real, {sets['n_synthetic']} synthetic)"
        )
        if sets.get("note"):
            lines.append(f"note: {sets['note']}")
    else:
        lines.append(f"FID/MMD: {sets['status']}" + (f" - {sets['reason']}" if "reason" in sets else ""))
    return lines


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import run_evaluation

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = run_evaluation(
        args.out,
        log=log,
        real=args.real,
        synthetic=args.synthetic,
        layouts=args.layout,
        geometry=args.geometry,
        extractor=args.extractor,
        weights=args.weights,
        set_mode=args.set_metrics,
        set_unit=args.set_unit,
        device=args.device,
        auto_lung=args.auto_lung,
        figures_for=args.figures,
    )
    for line in _summary_lines(report):
        print(line)
    print(json.dumps(report["paths"]))
    return 0
