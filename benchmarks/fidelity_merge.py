"""Merge roi_model_fidelity.py runs over disjoint case ranges into one result, as if run at once.

Usage: python benchmarks/fidelity_merge.py chunk0.json chunk4.json chunk8.json --out merged.json

The chunks must share models, seeds and steps (checked); per-nodule records and per-case records are concatenated
and the per-class summary, targets and seam statistics recomputed from them. The pooled ``classes`` summary of one
run needs its voxels and is not merged (each chunk keeps its own).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from LungDDPMLib.evaluation.nodule_looks import check_targets, summarize_looks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chunks", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    runs = [json.loads(Path(p).read_text()) for p in args.chunks]
    first = runs[0]
    for run in runs[1:]:
        for key in ("model", "density", "seeds", "steps"):
            if run["args"].get(key) != first["args"].get(key):
                raise SystemExit(f"the chunks differ in {key}: they are not one experiment")
    seeds = [c["seed"] for r in runs for c in r["cases"]]
    if len(seeds) != len(set(seeds)):
        raise SystemExit("the chunks share cases")
    cases = sorted((c for r in runs for c in r["cases"]), key=lambda c: c["seed"])
    summary, nodules = {}, {}
    for name, s in first["summary"].items():
        rows = [row for r in runs for row in r["nodules"][name]]
        nodules[name] = rows
        per_seed = [p for c in cases for p in c[name]["per_seed"]]
        looks = summarize_looks(rows)
        summary[name] = {
            **{k: s[k] for k in ("checkpoint", "sha256", "density") if k in s},
            "looks": looks,
            "targets": check_targets(looks),
            "seam_score_median": round(float(np.median([p["seam_score"] for p in per_seed])), 3),
            "seam_score_max": round(float(max(p["seam_score"] for p in per_seed)), 3),
            "kept_max_abs_diff_hu": max(p["kept_max_abs_diff_hu"] for p in per_seed),
            "seconds_per_case": round(float(np.mean([c[name]["seconds"] for c in cases])), 1),
        }
    merged = {
        "command": "benchmarks/fidelity_merge.py " + " ".join(args.chunks),
        "chunks": [{"command": r["command"], "args": r["args"]} for r in runs],
        "args": {**first["args"], "first_case": min(seeds), "cases": len(seeds), "out": args.out, "montages": None},
        "cases": cases,
        "summary": summary,
        "nodules": nodules,
    }
    Path(args.out).write_text(json.dumps(merged, indent=1))
    print(json.dumps({n: {"looks": s["looks"], "targets": s["targets"]} for n, s in summary.items()}, indent=1))


if __name__ == "__main__":
    main()
