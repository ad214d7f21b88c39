"""Paired comparisons of downstream arms across folders: an ablation's arm against the design's.

Usage:
    python benchmarks/downstream_ablation.py NAME=FOLDER:ARM NAME=FOLDER:ARM [...] --segnet monai --real 8 \
        [--against NAME] [--out ablation.json]

Each ``NAME=FOLDER:ARM`` takes the runs of ``FOLDER/runs/`` with that arm (e.g. ``real+4x``) for the segmenter and
real-case count given. Every set is compared, paired over the training seeds both hold and the test phantoms both
were scored on (:func:`LungDDPMLib.downstream.combine.compare_arms`), with the set named by ``--against`` (default
the first), and the Markdown table is printed: estimate [95 % interval] per set, and the paired differences.

Example (the phantom-drawn ablation of docs/evaluation.md):
    python benchmarks/downstream_ablation.py real=runs/downstream-powered/monai-real8:real \
        model=runs/downstream-powered/monai-real8:real+4x \
        phantom=runs/downstream-powered/ablation-phantom-drawn:real+4x --segnet monai --real 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from LungDDPMLib.downstream.combine import METRICS, compare_arms, load_runs, summarize_group
from LungDDPMLib.downstream.tables import fmt_interval

SHOWN = ("dice", "sensitivity", "false_positives", *(m for m in METRICS if m.startswith(("sensitivity_", "nodule_"))))


def _runs(spec: str, segnet: str, n_real: int):
    name, _, where = spec.partition("=")
    folder, _, arm = where.rpartition(":")
    if not name or not folder or not arm:
        raise SystemExit(f"expected NAME=FOLDER:ARM, got {spec!r}")
    runs = [
        r for r in load_runs([Path(folder)]) if r["arm"] == arm and r["segnet"] == segnet and int(r["n_real"]) == n_real
    ]
    if not runs:
        raise SystemExit(f"no finished {segnet}-real{n_real} runs of arm {arm!r} in {folder} (or its runs/)")
    return name, runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", help="NAME=FOLDER:ARM")
    ap.add_argument("--segnet", required=True, choices=("own", "monai"))
    ap.add_argument("--real", type=int, required=True, help="real training cases of the runs")
    ap.add_argument("--against", help="the set every other is compared with (default: the first)")
    ap.add_argument("--out", type=Path, help="write the comparisons as JSON here")
    args = ap.parse_args(argv)
    sets = dict(_runs(s, args.segnet, args.real) for s in args.sets)
    base = args.against or next(iter(sets))
    if base not in sets:
        raise SystemExit(f"--against {base!r} is not one of {', '.join(sets)}")
    result = {"command": " ".join(sys.argv), "against": base, "comparisons": {}}
    for name, runs in sets.items():
        if name != base:
            result["comparisons"][f"{name} - {base}"] = compare_arms(runs, sets[base])
    if not result["comparisons"]:
        raise SystemExit("give at least two sets")
    comparisons = list(result["comparisons"].values())
    base_arm = sets[base][0]["arm"]  # its estimate over all of its own seeds
    base_alone = summarize_group(sets[base], 2000, 0)["arms"][base_arm]
    head = ["metric", base, *(n for n in sets if n != base), *result["comparisons"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in SHOWN:
        digits = 1 if metric == "false_positives" else 3
        row = [metric, fmt_interval(base_alone[metric], digits)]
        row += [fmt_interval(c[metric]["a"], digits) for c in comparisons]
        row += [fmt_interval(c[metric]["difference"], digits, sign=True) for c in comparisons]
        lines.append("| " + " | ".join(row) + " |")
    seeds = {k: v["seeds"] for k, v in result["comparisons"].items()}
    lines.append("")
    lines.append(
        f"Each set's column over all of its seeds; the differences over the seeds both sets hold: {seeds}; "
        "`*`: the difference's 95 % interval excludes 0."
    )
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
