"""Markdown tables of a combined downstream summary, for docs/evaluation.md (never typed by hand).

Usage: python benchmarks/downstream_table.py summary.json > table.md

The summary comes from benchmarks/downstream_combine.py; this script only formats it
(LungDDPMLib/downstream/tables.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from LungDDPMLib.downstream.tables import markdown


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("summary", type=Path, help="summary JSON of downstream_combine.py")
    args = ap.parse_args(argv)
    sys.stdout.write(markdown(json.loads(args.summary.read_text(encoding="utf-8"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
