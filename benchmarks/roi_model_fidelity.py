"""Per-class nodule fidelity of ROI models on held-out phantoms, as a reader would see it, with montages.

Usage: python benchmarks/roi_model_fidelity.py [--cases 12] [--seeds 0 1 2]
       [--model roi=LungDDPMLib/models/lungddpm-roi.pt ...] [--density roi=auto ...] [--out roi-fidelity.json]
       [--montages DIR]

Cases are :func:`LungDDPMLib.evaluation.heldout.heldout_case` (phantom seeds 0..N-1; models train on seeds from
1000): one nodule of each class per case, 5-25 mm, about a quarter juxta-pleural, and in every second case the
ground-glass nodule centred on a vessel. Each model draws every case with each sampling seed (DPM-Solver++ 20 steps,
AAS, the model's default ROI margin). Per class, median over nodules and seeds: the reader's measures of
:mod:`LungDDPMLib.evaluation.nodule_looks` and which targets hold; pooled W1 and dense-part / extent diameters of
:mod:`LungDDPMLib.evaluation.nodule_classes`; per case the seam score and the largest change outside the regenerated
region (must be 0). With ``--montages``, one PNG per model and class: every nodule, real | each seed, lung window.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LungDDPMLib.checkpoint import load_checkpoint
from LungDDPMLib.config import NODULE_TYPES
from LungDDPMLib.data.axes import native_grid
from LungDDPMLib.data.context import ROI_MARGIN_MM, near_nodules
from LungDDPMLib.evaluation import layout_fidelity
from LungDDPMLib.evaluation.heldout import heldout_case
from LungDDPMLib.evaluation.nodule_classes import nodule_fidelity, summarize_classes
from LungDDPMLib.evaluation.nodule_looks import check_targets, nodule_looks, summarize_looks
from LungDDPMLib.evaluation.nodule_montage import nodule_tiles, write_montage
from LungDDPMLib.nodule_density import parse_density
from LungDDPMLib.registry import ROI_FILE
from LungDDPMLib.sampling import SamplerConfig
from LungDDPMLib.synthesis import synthesize_case


def _draw(model, case, seeds, sampler, density):
    ph = case.phantom
    start = time.perf_counter()
    result = synthesize_case(ph.ct, ph.layout, model, sampler=sampler, seeds=list(seeds), density=density)
    return [sitk.GetArrayFromImage(i) for i in result.images], time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=None, metavar="NAME=PATH", help=f"default roi={ROI_FILE}")
    ap.add_argument(
        "--density",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="density control of model NAME (lungddpm synthesize --density: auto, off or per class); default off",
    )
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--first-case", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default=None)
    ap.add_argument("--montages", default=None, help="folder for the montage PNGs")
    args = ap.parse_args()
    models = dict(m.split("=", 1) for m in (args.model or [f"roi={ROI_FILE}"]))
    samplers = {name: SamplerConfig("dpm++", steps=args.steps) for name in models}
    densities = {}
    for item in args.density:
        name, _, spec = item.partition("=")
        if name not in models:
            raise SystemExit(f"--density names model {name!r}, which no --model gives")
        densities[name] = spec
    report = fidelity_report(models, samplers, range(args.first_case, args.first_case + args.cases), args.seeds,
                             args.montages, densities)  # fmt: skip
    report["args"] = vars(args)
    print(
        json.dumps({n: {"looks": s["looks"], "targets": s["targets"]} for n, s in report["summary"].items()}, indent=1)
    )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


def fidelity_report(models, samplers, case_seeds, sampling_seeds, montages=None, densities=None):
    """Draw every held-out case with each model (``{name: path}``), its sampler (``{name: SamplerConfig}``) and its
    density control (``{name: --density text}``, default off); the report of :func:`main` (``cases``, ``summary``
    per model, ``nodules``). Shared with distilled_sampler.py."""
    seeds = list(sampling_seeds)
    densities = dict(densities or {})
    loaded = {name: load_checkpoint(path) for name, path in models.items()}
    density = {name: parse_density(densities.get(name, "off")) for name in models}
    first = next(iter(loaded.values())).config
    patch = tuple(native_grid(first.grid, first.array_order))  # (z, y, x) voxels of one ROI patch
    looks = {name: [] for name in models}
    classes = {name: [] for name in models}
    tiles = {name: {k: [] for k in NODULE_TYPES} for name in models}
    cases = []
    for seed in case_seeds:
        case = heldout_case(seed, patch)
        real, lay = sitk.GetArrayFromImage(case.phantom.ct), sitk.GetArrayFromImage(case.phantom.layout)
        spacing = case.phantom.ct.GetSpacing()[::-1]
        outside = ~near_nodules(lay, spacing, ROI_MARGIN_MM)
        record = {
            "seed": seed,
            "nodules": [{k: n[k] for k in ("kind", "shape", "diameter_mm", "juxta_pleural")} for n in case.nodules],
        }
        for name, ckpt in loaded.items():
            synths, seconds = _draw(ckpt.model, case, seeds, samplers[name], density[name])
            per_seed = []
            rows_by_seed = []
            for sampling_seed, synth in zip(seeds, synths):
                fid = layout_fidelity(real, synth, lay, spacing)
                kept = float(np.abs(real[outside].astype(np.float64) - synth[outside]).max())
                per_seed.append({"seed": sampling_seed, "seam_score": fid["seam_score"], "kept_max_abs_diff_hu": kept})
                rows = nodule_looks(real, synth, lay, spacing, vessel=case.vessel)
                for row in rows:
                    row.update(case=seed, sampling_seed=sampling_seed)
                looks[name].extend(rows)
                rows_by_seed.append(rows)
                classes[name].extend(nodule_fidelity(real, synth, lay, spacing))
            for k, row in enumerate(rows_by_seed[0]):
                info = next((n for n in case.nodules if n["kind"] == row["class"]), {})
                vessel = f", vessel {row['real_vessel_hu']:.0f} HU" if row.get("real_vessel_hu") is not None else ""
                label = (
                    f"case {seed}, {info.get('diameter_mm', '?')} mm {info.get('shape', '')}"
                    f"{', juxta' if info.get('juxta_pleural') else ''}{vessel}"
                )
                means = [row["real_mean_hu"]] + [r[k]["synthetic_mean_hu"] for r in rows_by_seed]
                tiles[name][row["class"]].append(
                    {"tiles": nodule_tiles(real, synths, row["centre_zyx"], spacing), "label": label, "means": means}
                )
            record[name] = {"seconds": round(seconds, 1), "per_seed": per_seed}
        cases.append(record)
        print(json.dumps({"case": seed, **{n: record[n]["seconds"] for n in models}}), flush=True)
    summary = {}
    for name in models:
        looks_summary = summarize_looks(looks[name])
        per_seed = [s for c in cases for s in c[name]["per_seed"]]
        summary[name] = {
            "checkpoint": models[name],
            "sampler": {"name": samplers[name].name, "steps": samplers[name].steps, "levels": samplers[name].timesteps},
            "density": densities.get(name, "off"),
            "sha256": loaded[name].sha256,
            "looks": looks_summary,
            "targets": check_targets(looks_summary),
            "classes": summarize_classes(classes[name]),
            "seam_score_median": round(float(np.median([s["seam_score"] for s in per_seed])), 3),
            "seam_score_max": round(float(max(s["seam_score"] for s in per_seed)), 3),
            "kept_max_abs_diff_hu": max(s["kept_max_abs_diff_hu"] for s in per_seed),
            "seconds_per_case": round(float(np.mean([c[name]["seconds"] for c in cases])), 1),
        }
        if montages:
            for kind in NODULE_TYPES:
                if tiles[name][kind]:
                    write_montage(
                        tiles[name][kind],
                        Path(montages) / f"{name}-{kind}.png",
                        f"{name}: {kind} nodules, real | seeds {' '.join(map(str, seeds))}",
                    )
    return {"command": "benchmarks/roi_model_fidelity.py", "cases": cases, "summary": summary, "nodules": looks}


if __name__ == "__main__":
    main()
