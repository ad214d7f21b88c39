"""Combine the finished runs of the powered downstream design into one summary JSON (and say what is missing).

Usage: python benchmarks/downstream_combine.py runs/downstream-powered [MORE_FOLDERS...] --out summary.json

Reads ``FOLDER/runs/*.json`` (written by ``lungddpm downstream`` as each run finishes), groups them by segmenter and
number of real cases, and computes every arm's metrics and paired differences from real-only with 95 % crossed
bootstrap intervals over training seeds and test cases (LungDDPMLib/downstream/combine.py). Missing runs of the
design (own and monai x 4 and 8 real cases x real, +1x, +2x, +4x x seeds 0-4) are listed, never fatal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from LungDDPMLib.downstream.combine import DESIGN, DESIGN_SEEDS, combine_runs, design_grid, load_runs
from LungDDPMLib.errors import LungDDPMError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="output folders of the chunks (each has runs/)")
    ap.add_argument("--out", type=Path, required=True, help="summary JSON to write")
    ap.add_argument("--replicates", type=int, default=2000, help="bootstrap replicates (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    ap.add_argument("--seeds", type=int, default=len(DESIGN_SEEDS), help="training seeds 0..N-1 expected")
    args = ap.parse_args(argv)
    runs = load_runs(args.folders)
    expected = design_grid(*DESIGN.values(), range(args.seeds))
    try:
        summary = combine_runs(runs, expected, n_boot=args.replicates, seed=args.seed)
    except LungDDPMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    tmp.replace(args.out)
    print(f"{len(summary['done'])} runs combined into {args.out}; {len(summary['missing'])} missing", file=sys.stderr)
    for name in summary["missing"]:
        print(f"  missing: {name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
