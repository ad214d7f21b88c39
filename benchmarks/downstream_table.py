"""Markdown tables of a combined downstream summary, for docs/evaluation.md (never typed by hand).

Usage: python benchmarks/downstream_table.py summary.json > table.md
       python benchmarks/downstream_table.py summary.json --into docs/evaluation.md

The summary comes from benchmarks/downstream_combine.py; this script only formats it
(LungDDPMLib/downstream/tables.py). With ``--into``, the text between the lines ``<!-- BEGIN downstream-table -->``
and ``<!-- END downstream-table -->`` of that file is replaced by the tables (the file is written to a temporary
name and renamed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from LungDDPMLib.downstream.tables import markdown

BEGIN, END = "<!-- BEGIN downstream-table -->", "<!-- END downstream-table -->"


def into(path: Path, text: str) -> None:
    """Replace the marked block of ``path`` with ``text``."""
    doc = path.read_text(encoding="utf-8")
    if doc.count(BEGIN) != 1 or doc.count(END) != 1 or doc.index(BEGIN) > doc.index(END):
        raise SystemExit(f"{path} needs exactly one {BEGIN} ... {END} block")
    head, rest = doc.split(BEGIN)
    _, tail = rest.split(END)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{head}{BEGIN}\n{text}{END}{tail}", encoding="utf-8")
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("summary", type=Path, help="summary JSON of downstream_combine.py")
    ap.add_argument("--into", type=Path, help="replace the marked block of this markdown file instead of printing")
    args = ap.parse_args(argv)
    text = markdown(json.loads(args.summary.read_text(encoding="utf-8")))
    if args.into:
        into(args.into, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
