"""Per-class nodule fidelity of the ROI model on held-out phantoms, beside the whole-lung demo model.

Usage: python benchmarks/roi_model_fidelity.py [--cases 6] [--roi LungDDPMLib/models/lungddpm-roi.pt]
       [--full LungDDPMLib/models/lungddpm-demo.pt] [--out roi-fidelity.json]

Each held-out phantom (seeds 0..N-1; the models trained on seeds from 1000) has one solid, one part-solid and one
ground-glass nodule (sizes, shapes, sides drawn from the phantom's distribution; redrawn until each fits the ROI
patch). Three syntheses per phantom, DPM-Solver++ 20 steps with AAS, sampling seed = phantom seed:

* ``roi``: the ROI model, told each nodule's class;
* ``roi-untyped``: the same model with the classes withheld (it draws nodules of unstated class as solid);
* ``full``: the bundled whole-lung demo model (64^3 over the lung box; it knows no classes).

Per class (pooled over phantoms): mean/SD HU inside the nodules, synthetic and real, the Wasserstein-1 distance
between the pooled HU values, the share of nodules whose mean lies in the class's HU range, the equivalent diameters
of the drawn extent (> -750 HU) against the layout's and of the dense part (> -300 HU) against the real one's; per
case the seam score and the largest change outside the layout (must be 0).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import SimpleITK as sitk

from LungDDPMLib.checkpoint import load_checkpoint
from LungDDPMLib.data.nodule_types import retype_image
from LungDDPMLib.downstream.experiment import DownstreamConfig, make_test_phantom
from LungDDPMLib.evaluation import layout_fidelity
from LungDDPMLib.evaluation.nodule_classes import nodule_fidelity, summarize_classes
from LungDDPMLib.registry import DEMO_FILE, ROI_FILE
from LungDDPMLib.sampling import SamplerConfig
from LungDDPMLib.synthesis import synthesize_case


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--roi", default=str(ROI_FILE))
    ap.add_argument("--full", default=str(DEMO_FILE), help="whole-lung model to compare with ('' to skip)")
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    roi = load_checkpoint(args.roi)
    models = {"roi": roi.model, "roi-untyped": roi.model}
    if args.full:
        models["full"] = load_checkpoint(args.full).model
    geometry = DownstreamConfig(phantom_size=(256, 256, 160), phantom_spacing=(0.8, 0.8, 1.5))
    rows = {name: [] for name in models}
    cases = []
    for seed in range(args.cases):
        ph = make_test_phantom(geometry, seed, tuple(roi.config.grid))
        real, lay = sitk.GetArrayFromImage(ph.ct), sitk.GetArrayFromImage(ph.layout)
        spacing = ph.ct.GetSpacing()[::-1]
        case = {
            "seed": seed,
            "nodules": [{k: n[k] for k in ("kind", "shape", "diameter_mm")} for n in ph.info["nodules"]],
        }
        for name, model in models.items():
            layout = ph.layout
            if name == "roi-untyped":
                layout = retype_image(ph.layout, None)
            start = time.perf_counter()
            result = synthesize_case(
                ph.ct, layout, model, sampler=SamplerConfig("dpm++", steps=args.steps), seeds=[seed]
            )
            seconds = time.perf_counter() - start
            synth = sitk.GetArrayFromImage(result.images[0])
            fid = layout_fidelity(real, synth, lay, spacing)
            case[name] = {
                "seconds": round(seconds, 1),
                "seam_score": fid["seam_score"],
                "kept_anatomy_max_abs_diff_hu": fid["kept_anatomy_max_abs_diff_hu"],
            }
            nodules = nodule_fidelity(real, synth, lay, spacing)
            rows[name].extend(nodules)
            case[name]["nodules"] = [{k: v for k, v in n.items() if k != "_values"} for n in nodules]
        cases.append(case)
        print(json.dumps({"seed": seed, **{n: case[n]["seconds"] for n in models}}), flush=True)
    summary = {}
    for name in models:
        per_case = [c[name] for c in cases]
        summary[name] = {
            "classes": summarize_classes(rows[name]),
            "seam_score": round(float(np.mean([c["seam_score"] for c in per_case])), 3),
            "kept_anatomy_max_abs_diff_hu": max(c["kept_anatomy_max_abs_diff_hu"] for c in per_case),
            "seconds_per_case": round(float(np.mean([c["seconds"] for c in per_case])), 1),
        }
    report = {"cases": cases, "summary": summary, "roi_checkpoint": args.roi, "full_checkpoint": args.full}
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
