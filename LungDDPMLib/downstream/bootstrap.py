"""Two-level (crossed cluster) bootstrap over training seeds and test cases, numpy only.

Every score of the downstream experiment is a ratio of sums over a grid of training seeds ``s`` and test cases
``c``: ``sum num[s, c] / sum den[s, c]``. Dice and false positives per case have ``den = 1`` on each scored cell;
per-nodule sensitivity (of a class, of a size bin) has ``num`` = nodules detected in case ``c`` by seed ``s``'s
network and ``den`` = nodules of that kind in the case, so a case with three nodules weighs three times and a case
with none of that kind not at all. Cells that were not scored are ``den = 0`` (they drop out).

Two sources of chance are in such a number: which networks training happened to give (seeds) and which test
nodules were drawn (cases; nodules of one case share its anatomy, so the case is the cluster, not the nodule). One
bootstrap replicate draws ``S`` seeds with replacement *and*, independently, ``C`` cases with replacement, and
evaluates the statistic on the crossed sub-grid - the "pigeonhole" bootstrap for crossed designs (Owen 2007,
*Ann. Appl. Stat.* 1:2). It is mildly conservative: with no seed or case effect at all its variance is up to about
three times the true one; with real seed and case effects it is close. The 95 % interval is the 2.5 and 97.5
percentiles of ``B`` replicates (replicates whose denominator is 0 are dropped and counted).

A paired difference (arm minus real-only) uses the *same* resampled seeds and cases for both arms in every
replicate: seed ``s`` of both arms starts from the same weights and patch sequence and case ``c`` is the same
phantom, so what the two share cancels and the interval is far tighter than the two arms' intervals side by side.

Example:
    >>> num = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]); den = np.ones_like(num)
    >>> ci = bootstrap_ratio(num, den, n_boot=200, seed=0)
    >>> round(ci["estimate"], 3), ci["low"] <= ci["estimate"] <= ci["high"]
    (0.667, True)
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

LEVEL = 0.95


def _grid(num: np.ndarray, den: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    n, d = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if n.ndim != 2 or n.shape != d.shape:
        raise ValueError(f"num and den must be (seeds, cases) arrays of one shape, got {n.shape} and {d.shape}")
    if (d < 0).any() or not np.isfinite(d).all():
        raise ValueError("den must be finite and >= 0")
    return np.where(d > 0, np.nan_to_num(n), 0.0), d


def draws(shape: Tuple[int, int], n_boot: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """The resampling indices: ``(B, S)`` seeds and ``(B, C)`` cases, each drawn with replacement."""
    rng = np.random.default_rng(seed)
    s, c = shape
    return rng.integers(0, s, size=(n_boot, s)), rng.integers(0, c, size=(n_boot, c))


def replicate_sums(grid: np.ndarray, seeds: np.ndarray, cases: np.ndarray) -> np.ndarray:
    """Sum of ``grid`` over each replicate's crossed sub-grid (duplicates counted as often as drawn), ``(B,)``.

    Counting per replicate how often each seed and case was drawn turns the sum into ``w_s^T grid w_c``: no
    ``B x S x C`` array is built.
    """
    b = seeds.shape[0]
    ws = np.zeros((b, grid.shape[0]))
    wc = np.zeros((b, grid.shape[1]))
    np.add.at(ws, (np.arange(b)[:, None], seeds), 1.0)
    np.add.at(wc, (np.arange(b)[:, None], cases), 1.0)
    return np.einsum("bs,sc,bc->b", ws, grid, wc)


def _interval(values: np.ndarray, estimate: Optional[float], level: float) -> Dict[str, Optional[float]]:
    ok = values[np.isfinite(values)]
    if estimate is None or ok.size == 0:
        return {"estimate": estimate, "low": None, "high": None, "replicates": int(ok.size)}
    lo, hi = np.percentile(ok, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return {"estimate": estimate, "low": float(lo), "high": float(hi), "replicates": int(ok.size)}


def _ratio(n: float, d: float) -> Optional[float]:
    return float(n / d) if d > 0 else None


def bootstrap_ratio(
    num: np.ndarray, den: np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = LEVEL
) -> Dict[str, Optional[float]]:
    """``sum num / sum den`` over a ``(seeds, cases)`` grid with its crossed-bootstrap percentile interval."""
    n, d = _grid(num, den)
    si, ci = draws(n.shape, n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = replicate_sums(n, si, ci) / replicate_sums(d, si, ci)
    return _interval(values, _ratio(n.sum(), d.sum()), level)


def bootstrap_difference(
    a: Tuple[np.ndarray, np.ndarray],
    b: Tuple[np.ndarray, np.ndarray],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = LEVEL,
) -> Dict[str, Optional[float]]:
    """Paired difference ``ratio(a) - ratio(b)`` of two arms on the same ``(seeds, cases)`` grid: each replicate
    resamples the same seeds and cases for both."""
    (na, da), (nb, db) = _grid(*a), _grid(*b)
    if na.shape != nb.shape:
        raise ValueError(f"paired arms need the same (seeds, cases) grid, got {na.shape} and {nb.shape}")
    si, ci = draws(na.shape, n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = replicate_sums(na, si, ci) / replicate_sums(da, si, ci)
        values -= replicate_sums(nb, si, ci) / replicate_sums(db, si, ci)
    ra, rb = _ratio(na.sum(), da.sum()), _ratio(nb.sum(), db.sum())
    return _interval(values, None if ra is None or rb is None else ra - rb, level)


def excludes_zero(interval: Dict[str, Optional[float]]) -> Optional[bool]:
    """Whether a difference's interval lies wholly above or below 0 (``None``: no interval)."""
    lo, hi = interval.get("low"), interval.get("high")
    if lo is None or hi is None:
        return None
    return bool(lo > 0 or hi < 0)


def grid_from_cells(
    cells: Sequence[Tuple[int, int, float, float]], seeds: Sequence[int], cases: Sequence[int]
) -> Tuple[np.ndarray, np.ndarray]:
    """``(num, den)`` arrays from ``(seed, case, num, den)`` cells (missing cells: den 0)."""
    si = {s: i for i, s in enumerate(seeds)}
    ci = {c: i for i, c in enumerate(cases)}
    num = np.zeros((len(seeds), len(cases)))
    den = np.zeros_like(num)
    for s, c, n, d in cells:
        num[si[s], ci[c]] += n
        den[si[s], ci[c]] += d
    return num, den
