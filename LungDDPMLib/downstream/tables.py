"""Markdown tables of a combined downstream summary (:mod:`.combine`): what docs/evaluation.md shows, generated.

One section per (segmenter, real cases): the arms with each metric as ``estimate [low, high]`` (95 % crossed
bootstrap over seeds and test cases), the paired differences from real-only (``*`` where the interval excludes 0),
the training cost and stopping steps, and the evidence (output probabilities on the test cases, nodule HU per
training pool). Nothing here computes a statistic; it only formats the JSON, so a table always matches its file.

Example:
    >>> fmt_interval({"estimate": 0.5, "low": 0.25, "high": 0.75})
    '0.500 [0.250, 0.750]'
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..config import NODULE_TYPES
from .design import SIZE_BINS

HEADS = {
    "dice": "Dice",
    "sensitivity": "sens.",
    "false_positives": "FP/case",
    **{f"sensitivity_{k}": f"sens. {k}" for k in NODULE_TYPES},
    **{f"sensitivity_{b}mm": f"sens. {b} mm" for b in SIZE_BINS},
    **{f"nodule_dice_{k}": f"Dice {k}" for k in NODULE_TYPES},
}
MAIN = ("dice", "sensitivity", "false_positives", *(f"sensitivity_{k}" for k in NODULE_TYPES))
MORE = (*(f"sensitivity_{b}mm" for b in SIZE_BINS), *(f"nodule_dice_{k}" for k in NODULE_TYPES))


def _num(value: Optional[float], digits: int, sign: bool) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def fmt_interval(stat: Dict[str, Any], digits: int = 3, sign: bool = False) -> str:
    """``estimate [low, high]``; ``n/a`` without an estimate."""
    if stat.get("estimate") is None:
        return "n/a"
    text = _num(stat["estimate"], digits, sign)
    if stat.get("low") is not None:
        text += f" [{_num(stat['low'], digits, sign)}, {_num(stat['high'], digits, sign)}]"
    return text + ("*" if stat.get("excludes_zero") else "")


def _digits(metric: str) -> int:
    return 1 if metric == "false_positives" else 3


def _table(rows: List[List[str]], head: List[str]) -> List[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def group_tables(name: str, group: Dict[str, Any]) -> List[str]:
    """The markdown lines of one (segnet, n_real) group."""
    arms, diffs = group["arms"], group["differences"]
    first = next(iter(arms.values()))
    lines = [
        f"#### {group['segnet']}, {group['n_real']} real cases",
        "",
        f"{first['test_cases']} test phantoms, {first['nodules']} nodules; seeds per arm: "
        + ", ".join(f"{a} {len(v['seeds'])}" for a, v in arms.items())
        + ".",
        "",
    ]
    for metrics in (MAIN, MORE):
        rows = [[arm] + [fmt_interval(v[m], _digits(m)) for m in metrics] for arm, v in arms.items()]
        rows += [
            [f"{arm} - real"] + [fmt_interval(d[m], _digits(m), sign=True) for m in metrics] for arm, d in diffs.items()
        ]
        lines += [*_table(rows, ["arm"] + [HEADS[m] for m in metrics]), ""]
    cost = []
    for arm, v in arms.items():
        ev = v["evidence"]
        steps = sorted(v["best_step"])
        train = sum(v["train_s"]) / max(len(v["train_s"]), 1)
        above = ev["share_above_0.5"]
        cost.append(
            [
                arm,
                f"{steps[len(steps) // 2]} ({steps[0]}-{steps[-1]})" if steps else "n/a",
                f"{train / 60:.1f}",
                f"{sum(v['eval_s']) / max(len(v['eval_s']), 1) / 60:.1f}",
                _num(above.get("nodule"), 3, False),
                _num(ev.get("share_0.25_to_0.5", {}).get("nodule"), 3, False),
                _num(above.get("background"), 5, False),
            ]
        )
    head = [
        "arm",
        "best step, median (range)",
        "train min",
        "eval min",
        "nodule voxels p > 0.5",
        "nodule voxels 0.25-0.5",
        "other voxels p > 0.5",
    ]
    lines += [*_table(cost, head), ""]
    return lines


def intensity_table(group: Dict[str, Any]) -> List[str]:
    """Nodule HU (mean +- SD, p5-p95) per class in the real and the synthetic training pool of the largest arm."""
    arms = group["arms"]
    arm = list(arms)[-1]
    pools = arms[arm]["evidence"].get("training_intensity") or {}
    rows = []
    for pool, classes in pools.items():
        for kind, s in classes.items():
            if s.get("mean") is None:
                continue
            rows.append(
                [pool, kind, f"{s['mean']:.0f} +- {s['sd']:.0f}", f"{s['p5']:.0f} / {s['p50']:.0f} / {s['p95']:.0f}"]
            )
    if not rows:
        return []
    return [
        f"Training nodules of arm {arm} (HU in the network's window):",
        "",
        *_table(rows, ["pool", "class", "mean +- SD", "p5 / p50 / p95"]),
        "",
    ]


def markdown(summary: Dict[str, Any]) -> str:
    """Every group's tables, the bootstrap method and the missing runs."""
    lines: List[str] = []
    for name, group in summary["groups"].items():
        lines += group_tables(name, group) + intensity_table(group)
    b = summary["bootstrap"]
    lines.append(
        f"Intervals: 95 %, {b['replicates']} replicates (seed {b['seed']}) of the {b['method']}; `*`: the interval "
        "of a difference excludes 0."
    )
    missing = summary["missing"]
    lines.append(
        f"Runs done: {len(summary['done'])}; missing: {len(missing)}"
        + (f" ({', '.join(missing)})." if missing else ".")
    )
    return "\n".join(lines) + "\n"
