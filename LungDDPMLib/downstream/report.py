"""Summaries, files and the printed table of the downstream experiment.

Two views of the same numbers are kept, because with few test cases and seeds they can disagree:

* per training seed: mean +- SD over the test cases (what one run would report);
* across seeds: mean +- SD of the per-seed means (how much the answer moves with the seed), plus everything pooled.

Every arm is compared with the real-only arm (``real``), paired by seed: the mean and SD over seeds of the per-seed
difference, and whether the mean difference is larger than the seed-to-seed spread of either arm (the SD of its
per-seed means) - with three seeds, a difference inside that spread is not a finding. Files are written to a
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

from ..config import NODULE_TYPES
from .metrics import mean_sd

METRICS = (
    "dice",
    "sensitivity",
    "false_positives",
    *(f"sensitivity_{k}" for k in NODULE_TYPES),
    *(f"dice_{k}" for k in NODULE_TYPES),
)
#: The columns of the printed table (all of :data:`METRICS` are in the JSON and CSV).
TABLE = ("dice", "sensitivity", "false_positives", *(f"sensitivity_{k}" for k in NODULE_TYPES))
CSV_FIELDS = ("arm", "seed", "case_seed", *METRICS, "nodules", "detected", "pred_voxels", "true_voxels")
BASELINE = "real"


def _values(run: Dict[str, Any], metric: str) -> List[Optional[float]]:
    return [c.get(metric) for c in run["cases"]]


def summarize(runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Per arm: pooled, per-seed and across-seed statistics; and each arm's paired difference from ``real``."""
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
    if BASELINE in arms and len(arms) > 1:
        differences: Dict[str, Any] = {}
        base = arms[BASELINE]["per_seed"]
        for arm, stats in arms.items():
            if arm == BASELINE:
                continue
            entry: Dict[str, Any] = {"of": f"{arm} - {BASELINE}"}
            for m in METRICS:
                diffs = [
                    stats["per_seed"][s][m]["mean"] - base[s][m]["mean"]
                    for s in stats["per_seed"]
                    if s in base and stats["per_seed"][s][m]["mean"] is not None and base[s][m]["mean"] is not None
                ]
                d = mean_sd(diffs)
                spread = [x for x in (arms[BASELINE]["seed_means"][m]["sd"], stats["seed_means"][m]["sd"]) if x]
                d["seed_spread"] = max(spread) if spread else None
                d["larger_than_seed_spread"] = (
                    None if d["mean"] is None or d["seed_spread"] is None else abs(d["mean"]) > d["seed_spread"]
                )
                entry[m] = d
            differences[arm] = entry
        summary["differences"] = differences
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
    """The human summary: per arm and seed (over test cases), then across seeds, then the differences."""
    summary = result["summary"]
    names = {"false_positives": "FP/case", **{f"sensitivity_{k}": f"sens {k}" for k in NODULE_TYPES}}
    width = max([12] + [len(a) + 2 for a in summary["arms"]] + [len(a) + 9 for a in summary.get("differences", {})])
    header = f"{'arm':<{width}}{'seed':>5}  " + "".join(f"{names.get(m, m):<19}" for m in TABLE) + f"{'train s':>8}"
    lines = [header, "-" * len(header)]
    for run in result["runs"]:
        stats = summary["arms"][run["arm"]]["per_seed"][str(run["seed"])]
        cells = "".join(f"{_fmt(stats[m]):<19}" for m in TABLE)
        lines.append(f"{run['arm']:<{width}}{run['seed']:>5}  {cells}{run['train_s']:>8.0f}")
    lines.append("-" * len(header))
    for arm, stats in summary["arms"].items():
        cells = "".join(f"{_fmt(stats['seed_means'][m]):<19}" for m in TABLE)
        lines.append(f"{arm:<{width}}{'mean':>5}  {cells}")
    for arm, diff in summary.get("differences", {}).items():
        cells = "".join(f"{_fmt(diff[m]) + ('*' if diff[m]['larger_than_seed_spread'] else ''):<19}" for m in TABLE)
        lines.append(f"{arm + ' - real':<{width}}{'diff':>5}  {cells}")
    if summary.get("differences"):
        lines.append("(diff: mean +- SD over seeds of the per-seed difference; * larger than the seed-to-seed spread)")
    return "\n".join(lines)


def combine(results: Sequence[Dict[str, Any]], labels: Sequence[str]) -> Dict[str, Any]:
    """Several runs of the experiment on the same real, test and training seeds, as one result: arms of the later
    ones are renamed ``<label> <arm>`` (their real-only arm is dropped when the first has one: same seeds, same
    training, same numbers), and the summary compares every arm with the first run's ``real`` arm."""
    runs: List[Dict[str, Any]] = []
    for i, (result, label) in enumerate(zip(results, labels)):
        for run in result["runs"]:
            if i and run["arm"] == BASELINE and any(r["arm"] == BASELINE for r in runs):
                continue
            runs.append({**run, "arm": run["arm"] if i == 0 else f"{label} {run['arm']}"})
    return {"runs": runs, "summary": summarize(runs)}
