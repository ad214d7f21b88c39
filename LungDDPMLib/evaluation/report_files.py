"""The files of an evaluation report besides ``metrics.json``: strict JSON values, and the CSV tables that
spreadsheets and R read (one row per pair and region; the summed HU histograms)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Dict

import numpy as np

from .figures import HIST_EDGES
from .paired import METRICS, REGIONS


def csv_value(v: Any) -> Any:
    if v is None:
        return "NA"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return v


def json_safe(obj: Any) -> Any:
    """inf -> the string "inf" (JSON has no infinity); numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else None)
    return obj


def write_tables(report: Dict[str, Any], folder: Path) -> None:
    """``metrics.csv`` and ``histograms.csv`` into ``folder``; their last column is the run group (:mod:`.runs`)."""
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pair", "real", "synthetic", "layout", "region", *METRICS, "group"])
        for row in report["pairs"]:
            for region in REGIONS:
                m = row["regions"][region]
                w.writerow([row["index"], row["real"], row["synthetic"], row["layout"], region]
                           + [csv_value(m[k]) for k in METRICS] + [row.get("group", 0)])  # fmt: skip
    edges = HIST_EDGES
    with open(folder / "histograms.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["region", "hu_from", "hu_to", "real_voxels", "synthetic_voxels", "group"])
        for group, histograms in sorted(report["_histograms"].items()):
            for region, h in histograms.items():
                for k in range(len(edges) - 1):
                    w.writerow([region, edges[k], edges[k + 1], int(h["real"][k]), int(h["synthetic"][k]), group])
