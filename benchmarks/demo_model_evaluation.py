"""The demo model on held-out phantoms against simple baselines, through ``lungddpm evaluate``'s own functions.

Arms (every arm on the same held-out phantoms, phantom seeds 0..N-1; the demo model trained on seeds from 1000):

* ``mean-fill``: the real CT with lung and nodules replaced by the real lung's mean HU (no texture at all);
* ``dpm++20``: the model with DPM-Solver++(2M), 20 steps, AAS (the default);
* ``ddpm250``: the model with the published ancestral DDPM over all 250 levels, AAS (the reference path);
* any ``dpm++K`` / ``ddimK`` given with ``--arms``.

Each arm writes its synthetic CTs (``--samples`` per phantom, seeds 0..S-1, so diversity is measured) and a report
folder made by :func:`LungDDPMLib.evaluation.report.run_evaluation`; the script prints one summary table.

Usage: python benchmarks/demo_model_evaluation.py --out /tmp/demo-eval [--cases 4] [--samples 2]
       [--arms mean-fill dpm++20 ddpm250] [--size 256 256 160] [--checkpoint LungDDPMLib/models/lungddpm-demo.pt]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import SimpleITK as sitk

from LungDDPMLib.checkpoint import load_checkpoint
from LungDDPMLib.data.io import write_image
from LungDDPMLib.evaluation.report import run_evaluation
from LungDDPMLib.phantom import make_phantom, save_phantom
from LungDDPMLib.registry import DEMO_FILE
from LungDDPMLib.sampling import SamplerConfig
from LungDDPMLib.synthesis import synthesize_case


def _mean_fill(ct: sitk.Image, layout: sitk.Image) -> sitk.Image:
    real, lay = sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(layout)
    out = real.copy()
    out[lay > 0] = np.int16(round(float(real[lay == 1].mean())))
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(ct)
    return img


def _sampler(arm: str) -> SamplerConfig:
    m = re.fullmatch(r"(dpm\+\+|ddim|ddpm)(\d+)", arm)
    if not m:
        raise SystemExit(f"unknown arm {arm!r}: use mean-fill, dpm++K, ddimK or ddpm250")
    name, steps = m.group(1), int(m.group(2))
    return SamplerConfig(name, steps=None if name == "ddpm" else steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint", default=str(DEMO_FILE))
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--arms", nargs="+", default=["mean-fill", "dpm++20", "ddpm250"])
    ap.add_argument("--size", type=int, nargs=3, default=(256, 256, 160))
    ap.add_argument("--spacing", type=float, nargs=3, default=(0.8, 0.8, 1.5))
    ap.add_argument("--reuse", action="store_true", help="keep synthetic files from an earlier run (re-evaluate)")
    args = ap.parse_args()
    out = Path(args.out)
    ckpt = load_checkpoint(args.checkpoint)
    real_dir = out / "real"
    phantoms = []
    for seed in range(args.cases):
        ph = make_phantom(tuple(args.size), tuple(args.spacing), seed=seed, nodules=2)
        save_phantom(real_dir, ph, name=f"case{seed}", seg_nrrd=False)
        phantoms.append(ph)
    summary: Dict[str, Any] = {}
    for arm in args.arms:
        arm_dir = out / arm.replace("+", "p")
        seconds: List[float] = []
        for seed, ph in enumerate(phantoms):
            if arm == "mean-fill":
                write_image(_mean_fill(ph.ct, ph.layout), arm_dir / "synthetic" / f"case{seed}_synthetic.nrrd")
                continue
            done = [arm_dir / "synthetic" / f"case{seed}_synthetic_{k}.nrrd" for k in range(args.samples)]
            if args.reuse and all(p.is_file() for p in done):
                continue
            start = time.perf_counter()
            result = synthesize_case(ph.ct, ph.layout, ckpt.model, sampler=_sampler(arm), seeds=range(args.samples))
            seconds.append((time.perf_counter() - start) / args.samples)
            for k, image in enumerate(result.images):
                write_image(image, arm_dir / "synthetic" / f"case{seed}_synthetic_{k}.nrrd")
            print(f"{arm} case{seed}: {seconds[-1]:.1f} s per sample", flush=True)
        report = run_evaluation(
            str(arm_dir / "report"), real=[str(real_dir)], synthetic=[str(arm_dir / "synthetic")],
            layouts=[str(real_dir)], figures_for=2, set_unit="patch",
        )  # fmt: skip
        s, sets = report["summary"], report["set_metrics"]
        divs = [d for d in report["diversity"].values() if d is not None]
        summary[arm] = {
            "lung_mae_hu": s["lung"]["mae_hu"],
            "lung_mse_norm": s["lung"]["mse_norm"],
            "generated_ssim": s["generated"]["ssim"],
            "generated_psnr_db": s["generated"]["psnr_db"],
            "lung_w1_hu": s["lung"]["w1_hu"],
            "nodule_w1_hu": s["nodule"]["w1_hu"],
            "fid": sets.get("fid"),
            "mmd2": sets.get("mmd2"),
            "diversity_mae_hu": float(np.mean([d["mean_pairwise_mae_hu"] for d in divs])) if divs else None,
            "seconds_per_sample": float(np.mean(seconds)) if seconds else 0.0,
        }
        print(json.dumps({arm: summary[arm]}), flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    cols = list(next(iter(summary.values())))
    print("| arm | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for arm, row in summary.items():
        cells = ["n/a" if row[c] is None else f"{row[c]:.4g}" for c in cols]
        print(f"| {arm} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
