"""The bundled ROI teacher with plain DDIM at a few step counts: the control a distilled student must beat.

Usage: OMP_NUM_THREADS=1 python benchmarks/teacher_ddim_steps.py [--steps 4 8 16] [--sampler ddim|dpm++] [--cases 4]
    [--first-case 0] [--seeds 0] [--density auto] [--levels 249,180,110,40 ...] [--checkpoint PT] [--out J.json]

Runs the per-class fidelity report of ``benchmarks/roi_model_fidelity.py`` (held-out cases 0..N-1) with the teacher
sampled by DDIM (trailing spacing, as distillation uses) at each step count. It tells which teacher step count is
already good enough to distil from, and whether a student at N steps improves on the teacher at N steps.
``--sampler dpm++`` asks the same of DPM-Solver++ (2M, quadratic spacing): the training-free few-step control.
``--levels`` replaces the step counts by explicit timestep lists (a tuned few-step schedule); choose among them on
validation cases (``--first-case 200``: neither the held-out cases 0..99 nor the training seeds from 1000), then score
the chosen one once on the held-out cases.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roi_model_fidelity import fidelity_report

from LungDDPMLib.registry import ROI_FILE
from LungDDPMLib.sampling import SamplerConfig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROI_FILE))
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--sampler", default="ddim", choices=["ddim", "dpm++"], help="training-free few-step control")
    ap.add_argument("--levels", nargs="+", default=None, metavar="T1,T2,..", help="explicit timestep lists")
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--first-case", type=int, default=0, help="first case seed (validation: 200)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--density", default="auto", help="synthesize's --density for every step count")
    ap.add_argument("--montages", default=None, help="folder for the montage PNGs")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    tag = args.sampler.replace("+", "p")
    if args.levels:
        levels = [tuple(int(t) for t in text.split(",")) for text in args.levels]
        samplers = {f"{tag}-" + "-".join(map(str, lv)): SamplerConfig(args.sampler, timesteps=lv) for lv in levels}
    else:  # each sampler's default spacing: trailing for DDIM (as distillation uses), quadratic for DPM-Solver++
        samplers = {f"{tag}{n}": SamplerConfig(args.sampler, steps=n) for n in args.steps}
    models = dict.fromkeys(samplers, args.checkpoint)
    cases = range(args.first_case, args.first_case + args.cases)
    report = fidelity_report(models, samplers, cases, args.seeds, args.montages, dict.fromkeys(models, args.density))
    keep = ("sampler", "looks", "targets", "seam_score_max", "kept_max_abs_diff_hu", "seconds_per_case")
    summary = {name: {k: s[k] for k in keep} for name, s in report["summary"].items()}
    for name, s in summary.items():
        for kind, looks in s["looks"].items():
            met = all(s["targets"][kind].values())
            print(f"{name:8s} {kind:13s} mean diff {looks['abs_mean_diff_hu']:6.1f}  SD ratio {looks['sd_ratio']:.2f}  "
                  f"W1 {looks['w1_hu']:5.1f}  holes {looks['holes']:.3f}  {'met' if met else 'MISSED'}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
