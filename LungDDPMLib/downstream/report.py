"""Summaries, files and the printed table of the downstream experiment.

Two views of the same numbers are kept, because with few test cases and seeds they can disagree:

* per training seed: mean +- SD over the test cases (what one run would report);
* across seeds: mean +- SD of the per-seed means (how much the answer moves with the seed), plus everything pooled.

The difference is arm ``real+synthetic`` minus arm ``real``, paired by seed and test case. Files are written to a
temporary name and renamed, CSV first and JSON last, so a ``downstream.json`` is only ever a complete result.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .metrics import mean_sd

METRICS = ("dice", "sensitivity", "false_positives")
CSV_FIELDS = (
    "arm",
    "seed",
    "case_seed",
    "dice",
    "sensitivity",
    "nodules",
    "detected",
    "false_positives",
    "pred_voxels",
    "true_voxels",
)


def _values(run: Dict[str, Any], metric: str) -> List[Optional[float]]:
    return [c[metric] for c in run["cases"]]


def _paired(a: Dict[str, Any], b: Dict[str, Any], metric: str) -> List[float]:
    """``b - a`` per test case where both are defined."""
    return [y - x for x, y in zip(_values(a, metric), _values(b, metric)) if x is not None and y is not None]


def summarize(runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Per arm: pooled, per-seed and across-seed statistics; and the paired difference between the arms."""
    arms: Dict[str, Any] = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        per_seed = {str(r["seed"]): {m: mean_sd(_values(r, m)) for m in METRICS} for r in mine}
        arms[arm] = {
            **{m: mean_sd(v for r in mine for v in _values(r, m)) for m in METRICS},
            "per_seed": per_seed,
            "seed_means": {m: mean_sd(s[m]["mean"] for s in per_seed.values()) for m in METRICS},
        }
    summary: Dict[str, Any] = {"arms": arms}
    names = list(arms)
    if len(names) == 2:
        base, other = names
        pairs = [(a, b) for a in runs if a["arm"] == base for b in runs if b["arm"] == other and b["seed"] == a["seed"]]
        difference: Dict[str, Any] = {"of": f"{other} - {base}"}
        for m in METRICS:
            per_seed = {str(a["seed"]): mean_sd(_paired(a, b, m)) for a, b in pairs}
            difference[m] = {
                "paired_cases": mean_sd(d for a, b in pairs for d in _paired(a, b, m)),
                "per_seed": per_seed,
                "seed_means": mean_sd(s["mean"] for s in per_seed.values()),
            }
        summary["difference"] = difference
    return summary


def csv_text(runs: Sequence[Dict[str, Any]]) -> str:
    """One row per arm x training seed x test case; undefined values are empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for run in runs:
        for case in run["cases"]:
            row = {"arm": run["arm"], "seed": run["seed"], **case}
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_FIELDS})
    return buffer.getvalue()


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file next to ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_results(out: Path, result: Dict[str, Any]) -> Dict[str, Path]:
    """``downstream.csv`` then ``downstream.json`` in ``out``."""
    paths = {"csv": out / "downstream.csv", "json": out / "downstream.json"}
    write_atomic(paths["csv"], csv_text(result["runs"]))
    write_atomic(paths["json"], json.dumps(result, indent=2))
    return paths


def _fmt(stat: Dict[str, Optional[float]], digits: int = 3) -> str:
    if stat["mean"] is None:
        return "n/a"
    sd = "" if stat["sd"] is None else f" +- {stat['sd']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}{sd}"


def format_table(result: Dict[str, Any]) -> str:
    """The human summary: per arm and seed (over test cases), then across seeds, then the difference."""
    summary = result["summary"]
    header = f"{'arm':<16}{'seed':>6}  {'Dice':<17}{'sensitivity':<17}{'FP comp./case':<17}{'train s':>8}"
    lines = [header, "-" * len(header)]
    for run in result["runs"]:
        stats = summary["arms"][run["arm"]]["per_seed"][str(run["seed"])]
        cells = "".join(f"{_fmt(stats[m]):<17}" for m in METRICS)
        lines.append(f"{run['arm']:<16}{run['seed']:>6}  {cells}{run['train_s']:>8.0f}")
    lines.append("-" * len(header))
    for arm, stats in summary["arms"].items():
        cells = "".join(f"{_fmt(stats['seed_means'][m]):<17}" for m in METRICS)
        lines.append(f"{arm:<16}{'mean':>6}  {cells}")
    diff = summary.get("difference")
    if diff:
        cells = "".join(f"{_fmt(diff[m]['seed_means']):<17}" for m in METRICS)
        lines.append(f"{'difference':<16}{'mean':>6}  {cells}  ({diff['of']}; SD across seeds)")
        cells = "".join(f"{_fmt(diff[m]['paired_cases']):<17}" for m in METRICS)
        lines.append(f"{'difference':<16}{'cases':>6}  {cells}  (paired over seeds x test cases)")
    return "\n".join(lines)
