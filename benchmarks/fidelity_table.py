"""The reader's fidelity table (docs/evaluation.md, the ROI model card) from one or more roi_model_fidelity.py JSONs.

Usage: python benchmarks/fidelity_table.py runs/fidelity/roi.json [...]

One row per model and class: medians over nodules and sampling seeds of the measures in
LungDDPMLib/evaluation/nodule_looks.py, each marked with whether its target holds (a target that does not apply to
the class, or cannot be measured, is left blank), then the seam score and the largest change outside the
regenerated region per model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

COLUMNS = (
    ("real / synthetic HU", None),
    ("abs mean diff HU", "abs_mean_diff_hu"),
    ("SD ratio", "sd_ratio"),
    ("W1 HU", "w1_hu"),
    ("holes (real)", "holes"),
    ("vessel HU real / synth (n)", "vessel_hu"),
    ("core - rim HU real / synth", "core_minus_rim_hu"),
    ("max mean HU", "max_mean_hu"),
)


def _mark(targets: Dict[str, Any], key: str) -> str:
    value = targets.get(key)
    return "" if value is None else (" ok" if value else " **no**")


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def rows(report: Dict[str, Any]) -> List[str]:
    out = []
    for name, summary in report["summary"].items():
        for kind, s in summary["looks"].items():
            t = summary["targets"][kind]
            cells = [
                f"{_fmt(s['real_mean_hu'])} / {_fmt(s['synthetic_mean_hu'])}",
                _fmt(s["abs_mean_diff_hu"]) + _mark(t, "abs_mean_diff_hu"),
                _fmt(s["sd_ratio"], 2) + _mark(t, "sd_ratio"),
                _fmt(s["w1_hu"]) + _mark(t, "w1_hu"),
                f"{_fmt(s['holes'], 3)} ({_fmt(s['real_holes'], 3)})" + _mark(t, "holes"),
                (
                    f"{_fmt(s['real_vessel_hu'])} / {_fmt(s['synthetic_vessel_hu'])} ({s['vessel_records']})"
                    + _mark(t, "vessel_hu")
                    if kind == "ground-glass"
                    else ""
                ),
                (
                    f"{_fmt(s['real_core_minus_rim_hu'])} / {_fmt(s['synthetic_core_minus_rim_hu'])}"
                    + _mark(t, "core_minus_rim_hu")
                    if kind == "part-solid"
                    else ""
                ),
                _fmt(s["max_mean_hu"]) + _mark(t, "max_mean_hu"),
            ]
            out.append(f"| {name} | {kind} | {s['records']} | " + " | ".join(cells) + " |")
    return out


def main(paths: List[str]) -> None:
    reports = [json.loads(Path(p).read_text()) for p in paths]
    print("| model | class | records | " + " | ".join(c for c, _ in COLUMNS) + " |")
    print("|" + "---|" * (3 + len(COLUMNS)))
    for report in reports:
        for line in rows(report):
            print(line)
    print()
    for report in reports:
        for name, summary in report["summary"].items():
            print(
                f"- {name}: seam score median {summary['seam_score_median']} (max {summary['seam_score_max']}), "
                f"largest change outside the regenerated region {summary['kept_max_abs_diff_hu']} HU, "
                f"{summary['seconds_per_case']} s per case ({len(report['args']['seeds'])} seeds)"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
