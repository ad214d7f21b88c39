"""Layout fidelity of a model on held-out phantoms, against a trivial baseline (lung filled with its real mean HU).

Usage: python benchmarks/demo_model_fidelity.py --checkpoint LungDDPMLib/models/lungddpm-demo.pt [--cases 5]
       [--sampler dpm++ --steps 20] [--out fidelity.json]
Phantom seeds 0..N-1 are held out (the demo model trained on seeds from 1000). Prints one JSON line per case and a
summary; each case uses the demo's phantom settings (256x256x160 at 0.8x0.8x1.5 mm, two nodules).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import SimpleITK as sitk

from LungDDPMLib.checkpoint import load_checkpoint
from LungDDPMLib.evaluation import layout_fidelity
from LungDDPMLib.phantom import make_phantom
from LungDDPMLib.sampling import SamplerConfig
from LungDDPMLib.synthesis import synthesize_case


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--cases", type=int, default=5)
    ap.add_argument("--sampler", default="dpm++")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    rows = []
    for seed in range(args.cases):
        ph = make_phantom((256, 256, 160), (0.8, 0.8, 1.5), seed=seed, nodules=2)
        start = time.perf_counter()
        result = synthesize_case(
            ph.ct, ph.layout, ckpt.model, sampler=SamplerConfig(args.sampler, steps=args.steps), seeds=[seed]
        )
        seconds = time.perf_counter() - start
        real, lay = sitk.GetArrayFromImage(ph.ct), sitk.GetArrayFromImage(ph.layout)
        synth = sitk.GetArrayFromImage(result.images[0])
        spacing = ph.ct.GetSpacing()[::-1]
        baseline = real.astype(np.float32)
        baseline[lay > 0] = real[lay == 1].mean()  # "lung filled with its mean HU"
        row = {
            "seed": seed,
            "model": layout_fidelity(real, synth, lay, spacing),
            "baseline_mean_fill": layout_fidelity(real, baseline, lay, spacing),
            "seconds": round(seconds, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    def mean(key: str, which: str = "model") -> float:
        vals = [r[which][key] for r in rows if r[which][key] is not None]
        return round(float(np.mean(vals)), 3)

    summary = {
        "checkpoint": args.checkpoint,
        "sha256": ckpt.sha256,
        "cases": args.cases,
        "sampler": args.sampler,
        "steps": args.steps,
        "synthetic_lung_mean_hu": round(float(np.mean([r["model"]["lung"]["synthetic"]["mean_hu"] for r in rows])), 1),
        "real_lung_mean_hu": round(float(np.mean([r["model"]["lung"]["real"]["mean_hu"] for r in rows])), 1),
        "synthetic_nodule_mean_hu": round(
            float(np.mean([r["model"]["nodule"]["synthetic"]["mean_hu"] for r in rows])), 1
        ),
        "real_nodule_mean_hu": round(float(np.mean([r["model"]["nodule"]["real"]["mean_hu"] for r in rows])), 1),
        "nodule_minus_lung_hu": mean("nodule_minus_lung_hu"),
        "lung_in_range_fraction": float(np.mean([bool(r["model"]["lung_in_range"]) for r in rows])),
        "seam_score": mean("seam_score"),
        "baseline_seam_score": mean("seam_score", "baseline_mean_fill"),
        "kept_anatomy_max_abs_diff_hu": max(r["model"]["kept_anatomy_max_abs_diff_hu"] for r in rows),
        "seconds_per_case": round(float(np.mean([r["seconds"] for r in rows])), 1),
    }
    print(json.dumps({"summary": summary}), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"summary": summary, "cases": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
