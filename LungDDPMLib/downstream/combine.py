"""Combine the finished runs of the powered design into one summary with crossed-bootstrap intervals.

Reads every ``runs/*.json`` under the given folders (the chunks of ``benchmarks/downstream_runs.sh``), groups them by
(segmenter, real cases), and per arm reports Dice, per-nodule sensitivity (all, per class, per size bin), per-nodule
Dice per class and false positives per case, each with its 95 % interval from :mod:`.bootstrap` over training seeds
and test cases, and the paired difference from the real-only arm over the seeds both arms finished. It says which
runs of the expected design are missing; it never fails for a missing run, so a summary can be made at any point.

Example:
    >>> summary = combine_runs([], expected=design_grid(("own",), (4,), ("real",), (0,)))
    >>> summary["missing"]
    ['own-real4-real-seed0']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..config import NODULE_TYPES
from ..errors import InputError
from .bootstrap import bootstrap_difference, bootstrap_ratio, excludes_zero, grid_from_cells
from .design import SIZE_BINS
from .report import BASELINE
from .runs import RUNS

#: The powered design: 2 segmenters x 2 real counts x 4 arms x 5 seeds.
DESIGN = {"segnets": ("own", "monai"), "n_real": (4, 8), "arms": ("real", "real+1x", "real+2x", "real+4x")}
DESIGN_SEEDS = tuple(range(5))
#: Metrics of the summary, in table order.
METRICS = (
    "dice",
    "sensitivity",
    "false_positives",
    *(f"sensitivity_{k}" for k in NODULE_TYPES),
    *(f"sensitivity_{b}mm" for b in SIZE_BINS),
    *(f"nodule_dice_{k}" for k in NODULE_TYPES),
)
Cell = Tuple[int, int, float, float]
#: Key under which :func:`load_runs` notes the file a record came from, so errors can name it.
SOURCE = "_source"


def design_grid(
    segnets: Sequence[str], n_reals: Sequence[int], arms: Sequence[str], seeds: Sequence[int]
) -> List[Tuple[str, int, str, int]]:
    """Every (segnet, n_real, arm, seed) of a design."""
    return [(g, n, a, s) for g in segnets for n in n_reals for a in arms for s in seeds]


def run_name(segnet: str, n_real: int, arm: str, seed: int) -> str:
    return f"{segnet}-real{n_real}-{arm}-seed{seed}"


def load_runs(folders: Iterable[Path]) -> List[Dict[str, Any]]:
    """Every complete run record under ``folder/runs/``, or in ``folder`` itself where it has no ``runs/`` (the copies
    kept in docs/results); half-written files are skipped: they are not done."""
    runs = []
    for folder in folders:
        where = Path(folder) / RUNS if (Path(folder) / RUNS).is_dir() else Path(folder)
        for path in sorted(where.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("complete") is True:
                record[SOURCE] = str(path)
                runs.append(record)
    return runs


def _nodules(case: Dict[str, Any]) -> List[Dict[str, Any]]:
    return case.get("nodule_list") or []


def cells(run: Dict[str, Any], metric: str) -> List[Cell]:
    """The ``(seed, case seed, num, den)`` cells of one run for one metric (see :mod:`.bootstrap`)."""
    out: List[Cell] = []
    for case in run["cases"]:
        key = (int(run["seed"]), int(case["case_seed"]))
        if metric in ("dice", "false_positives"):
            if case.get(metric) is not None:
                out.append((*key, float(case[metric]), 1.0))
        elif metric == "sensitivity":
            out.append((*key, float(case["detected"]), float(case["nodules"])))
        else:
            if metric.startswith("nodule_dice_"):
                mine = [n for n in _nodules(case) if n["class"] == metric[len("nodule_dice_") :]]
                out.append((*key, float(sum(n["dice"] or 0.0 for n in mine)), float(len(mine))))
                continue
            name = metric[len("sensitivity_") :]
            if name.endswith("mm"):
                mine = [n for n in _nodules(case) if n["size_bin"] == name[:-2]]
            else:
                mine = [n for n in _nodules(case) if n["class"] == name]
            out.append((*key, float(sum(n["detected"] for n in mine)), float(len(mine))))
    return out


def _grid(runs: Sequence[Dict[str, Any]], metric: str, seeds: Sequence[int], cases: Sequence[int]):
    return grid_from_cells([c for r in runs for c in cells(r, metric)], seeds, cases)


def _check_cases(runs: Sequence[Dict[str, Any]]) -> List[int]:
    case_sets = {tuple(c["case_seed"] for c in r["cases"]) for r in runs}
    if len(case_sets) > 1:
        raise InputError(f"runs of one group were scored on different test phantoms: {sorted(case_sets)}")
    return list(next(iter(case_sets)))


def summarize_group(runs: Sequence[Dict[str, Any]], n_boot: int, seed: int) -> Dict[str, Any]:
    """Per arm and metric the estimate and interval; per arm the paired difference from ``real``."""
    prints: Dict[Any, List[str]] = {}
    for r in runs:
        prints.setdefault(r.get("fingerprint"), []).append(
            r.get(SOURCE, run_name(r["segnet"], r["n_real"], r["arm"], r["seed"]))
        )
    if len(prints) > 1:
        which = "; ".join(
            f"{key}: {len(files)} runs, e.g. {files[0]}" for key, files in sorted(prints.items(), key=str)
        )
        raise InputError(
            f"runs of one (segnet, n_real) group were made with different settings ({which}); "
            "combine only the folders of one design (move pilots and ablations elsewhere)"
        )
    cases = _check_cases(runs)
    by_arm: Dict[str, List[Dict[str, Any]]] = {}
    for r in sorted(runs, key=lambda r: (float(r["multiple"]), int(r["seed"]))):
        by_arm.setdefault(r["arm"], []).append(r)
    arms: Dict[str, Any] = {}
    for arm, mine in by_arm.items():
        seeds = sorted({int(r["seed"]) for r in mine})
        entry: Dict[str, Any] = {"seeds": seeds, "test_cases": len(cases)}
        for metric in METRICS:
            entry[metric] = bootstrap_ratio(*_grid(mine, metric, seeds, cases), n_boot=n_boot, seed=seed)
        entry["nodules"] = int(_grid(mine[:1], "sensitivity", seeds[:1], cases)[1].sum())
        entry["best_step"] = [int(r.get("best_step", 0)) for r in mine]
        entry["steps_run"] = [int(r.get("steps_run", 0)) for r in mine]
        entry["train_s"] = [float(r.get("train_s", 0.0)) for r in mine]
        entry["eval_s"] = [float(r.get("eval_s", 0.0)) for r in mine]
        entry["evidence"] = _evidence(mine)
        arms[arm] = entry
    differences: Dict[str, Any] = {}
    if BASELINE in by_arm:
        for arm, mine in by_arm.items():
            if arm == BASELINE:
                continue
            seeds = sorted({int(r["seed"]) for r in mine} & {int(r["seed"]) for r in by_arm[BASELINE]})
            if not seeds:
                continue
            base = [r for r in by_arm[BASELINE] if int(r["seed"]) in seeds]
            mine = [r for r in mine if int(r["seed"]) in seeds]
            entry = {"of": f"{arm} - {BASELINE}", "seeds": seeds}
            for metric in METRICS:
                d = bootstrap_difference(
                    _grid(mine, metric, seeds, cases), _grid(base, metric, seeds, cases), n_boot=n_boot, seed=seed
                )
                entry[metric] = {**d, "excludes_zero": excludes_zero(d)}
            differences[arm] = entry
    return {"arms": arms, "differences": differences, "test_case_seeds": cases}


def compare_arms(
    a: Sequence[Dict[str, Any]], b: Sequence[Dict[str, Any]], n_boot: int = 2000, seed: int = 0
) -> Dict[str, Any]:
    """Paired difference ``a - b`` of two sets of runs of one segmenter and real-case count, whatever folders or
    settings they come from (an ablation arm against the design's arm of the same multiple, or its real-only arm):
    over the training seeds both have, on the test phantoms both were scored on, each replicate resampling the same
    seeds and cases for both. Every metric of :data:`METRICS`, with each side's own estimate.

    Raises:
        InputError: the sets differ in segmenter, real cases or test phantoms, hold a seed twice, or share no seed.
    """
    keys = {(r["segnet"], int(r["n_real"])) for r in [*a, *b]}
    if len(keys) != 1:
        raise InputError(f"compare runs of one segmenter and real-case count, got {sorted(keys)}")
    for side in (a, b):
        seeds_of = [int(r["seed"]) for r in side]
        if len(set(seeds_of)) != len(seeds_of):
            raise InputError(f"a set of runs to compare holds a training seed twice: {sorted(seeds_of)}")
        kinds = {(r["arm"], r.get("fingerprint")) for r in side}
        if len(kinds) > 1:
            which = sorted(kinds, key=str)
            raise InputError(f"a set of runs to compare must be one arm made with one setting, got {which}")
    cases = _check_cases([*a, *b])
    seeds = sorted({int(r["seed"]) for r in a} & {int(r["seed"]) for r in b})
    if not seeds:
        raise InputError("the two sets of runs share no training seed, so they cannot be paired")
    a = [r for r in a if int(r["seed"]) in seeds]
    b = [r for r in b if int(r["seed"]) in seeds]
    out: Dict[str, Any] = {"seeds": seeds, "test_cases": len(cases)}
    for metric in METRICS:
        ga, gb = _grid(a, metric, seeds, cases), _grid(b, metric, seeds, cases)
        d = bootstrap_difference(ga, gb, n_boot=n_boot, seed=seed)
        out[metric] = {
            "a": bootstrap_ratio(*ga, n_boot=n_boot, seed=seed),
            "b": bootstrap_ratio(*gb, n_boot=n_boot, seed=seed),
            "difference": {**d, "excludes_zero": excludes_zero(d)},
        }
    return out


def _evidence(runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Summed output histograms over the arm's seeds, and the training-nodule intensities of its first run."""
    hist: Dict[str, List[int]] = {}
    for r in runs:
        for name, counts in (r.get("probability_histogram") or {}).items():
            old = hist.get(name, [0] * len(counts))
            hist[name] = [a + b for a, b in zip(old, counts)]
    above = {name: (float(np.sum(c[len(c) // 2 :]) / max(np.sum(c), 1)) if c else None) for name, c in hist.items()}
    near = {  # just under the threshold: a network that sees the nodules but never calls them
        name: (float(np.sum(c[len(c) // 4 : len(c) // 2]) / max(np.sum(c), 1)) if c else None)
        for name, c in hist.items()
    }
    return {
        "probability_histogram": hist,
        "share_above_0.5": above,
        "share_0.25_to_0.5": near,
        "training_intensity": runs[0].get("training_intensity") if runs else None,
        "final_validation": [(r.get("validation_curve") or [[None, None, None]])[-1] for r in runs],
    }


def combine_runs(
    runs: Sequence[Dict[str, Any]],
    expected: Optional[Sequence[Tuple[str, int, str, int]]] = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> Dict[str, Any]:
    """The summary of whatever runs are done, per (segnet, n_real) group, and the list of missing runs."""
    expected = expected if expected is not None else design_grid(*DESIGN.values(), DESIGN_SEEDS)
    done: Dict[str, Dict[str, Any]] = {}
    for r in runs:
        name = run_name(r["segnet"], int(r["n_real"]), r["arm"], int(r["seed"]))
        if name in done:  # counting one run twice would narrow every interval
            raise InputError(f"run {name} found twice: {done[name].get(SOURCE, '?')} and {r.get(SOURCE, '?')}")
        done[name] = r
    groups: Dict[str, Any] = {}
    for key in sorted({(r["segnet"], int(r["n_real"])) for r in done.values()}):
        mine = [r for r in done.values() if (r["segnet"], int(r["n_real"])) == key]
        groups[f"{key[0]}/real{key[1]}"] = {"segnet": key[0], "n_real": key[1], **summarize_group(mine, n_boot, seed)}
    return {
        "groups": groups,
        "done": sorted(done),
        "missing": [run_name(*e) for e in expected if run_name(*e) not in done],
        "bootstrap": {
            "replicates": n_boot,
            "seed": seed,
            "level": 0.95,
            "method": "crossed (pigeonhole) bootstrap: each replicate resamples training seeds and test cases with "
            "replacement, independently; ratio of sums over the crossed sub-grid; percentile interval; "
            "differences paired (same resampled seeds and cases for both arms)",
        },
    }
