"""Put several ``lungddpm downstream`` results (same seeds, other settings) into one table against real-only.

Usage: python benchmarks/downstream_compare.py main/downstream.json types-off=off/downstream.json \
       full=full/downstream.json

The first file must have the real-only arm; the others' arms are labelled with the name before ``=`` and compared
with it (each file's own real-only arm, if any, is identical by construction and left out). Writes the combined
summary as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from LungDDPMLib.downstream.report import combine, format_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="downstream.json files; later ones as LABEL=PATH")
    ap.add_argument("--out", help="write the combined result here")
    args = ap.parse_args()
    labels, results = [], []
    for item in args.results:
        label, _, path = item.rpartition("=")
        labels.append(label or Path(path).parent.name)
        results.append(json.loads(Path(path).read_text()))
    for later in results[1:]:
        for key in ("n_real", "n_test", "real_seed", "test_seed", "steps", "batch_size", "patch", "seed", "repeats"):
            if later["config"][key] != results[0]["config"][key]:
                raise SystemExit(f"the results differ in {key}: they cannot share the real-only arm")
    combined = combine(results, labels)
    print(format_table(combined))
    if args.out:
        Path(args.out).write_text(json.dumps(combined["summary"], indent=2))


if __name__ == "__main__":
    main()
