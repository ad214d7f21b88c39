"""The crossed (seeds x test cases) bootstrap of the downstream experiment against analytic answers."""

from __future__ import annotations

import itertools
import math
from typing import Dict

import numpy as np
import pytest

from LungDDPMLib.downstream.bootstrap import (
    bootstrap_difference,
    bootstrap_ratio,
    draws,
    excludes_zero,
    replicate_sums,
)


def test_bootstrap_covers_a_binomial_proportion_at_the_nominal_rate() -> None:
    """One seed, 80 cases with one nodule each, detected with p = 0.7: over 300 simulated test sets the 95 %
    interval must contain 0.7 about 95 % of the time (binomial SE 0.051: a wrong interval is far off)."""
    rng = np.random.default_rng(1)
    p, n, sims = 0.7, 80, 300
    covered = widths = 0.0
    for i in range(sims):
        num = (rng.random((1, n)) < p).astype(float)
        ci = bootstrap_ratio(num, np.ones_like(num), n_boot=400, seed=i)
        covered += ci["low"] <= p <= ci["high"]
        widths += ci["high"] - ci["low"]
    assert 0.91 <= covered / sims <= 0.985
    assert widths / sims == pytest.approx(2 * 1.96 * math.sqrt(p * (1 - p) / n), rel=0.15)


def test_crossed_bootstrap_matches_the_exact_enumeration() -> None:
    """Two seeds x two cases: the 16 equally likely (seed draw, case draw) pairs give the exact bootstrap
    distribution; the implementation's replicate frequencies must match it."""
    num = np.array([[1.0, 3.0], [10.0, 30.0]])
    den = np.array([[1.0, 2.0], [1.0, 1.0]])
    exact: Dict[float, float] = {}
    for s in itertools.product(range(2), repeat=2):
        for c in itertools.product(range(2), repeat=2):
            value = sum(num[i, j] for i in s for j in c) / sum(den[i, j] for i in s for j in c)
            exact[round(value, 9)] = exact.get(round(value, 9), 0.0) + 1 / 16
    si, ci = draws((2, 2), 40000, seed=3)
    values = np.round(replicate_sums(num, si, ci) / replicate_sums(den, si, ci), 9)
    got = {v: float(np.mean(values == v)) for v in exact}
    assert set(np.unique(values)) == set(exact)
    for v, share in exact.items():
        assert got[v] == pytest.approx(share, abs=0.01), (v, got[v], share)
    ci_ = bootstrap_ratio(num, den, n_boot=40000, seed=3)
    assert ci_["estimate"] == pytest.approx(44 / 5)
    ordered = sorted(exact.items())
    cum = np.cumsum([w for _, w in ordered])
    lo = ordered[int(np.searchsorted(cum, 0.025))][0]
    hi = ordered[int(np.searchsorted(cum, 0.975))][0]
    assert ci_["low"] == pytest.approx(lo) and ci_["high"] == pytest.approx(hi)


def test_paired_difference_cancels_what_the_arms_share() -> None:
    """Seed and case effects shared by two arms: the paired interval is far narrower than either arm's, centred on
    the true shift, and excludes 0 where the separate intervals overlap."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.1, (5, 1)) + rng.normal(0, 0.15, (1, 20))
    a = 0.5 + shared + rng.normal(0, 0.01, (5, 20))
    b = a + 0.03 + rng.normal(0, 0.01, (5, 20))
    one = np.ones_like(a)
    ca, cb = bootstrap_ratio(a, one, n_boot=1000), bootstrap_ratio(b, one, n_boot=1000)
    d = bootstrap_difference((b, one), (a, one), n_boot=1000)
    assert d["estimate"] == pytest.approx(cb["estimate"] - ca["estimate"])
    assert d["low"] < 0.03 < d["high"] and excludes_zero(d)
    assert ca["high"] > cb["low"]  # unpaired, the two intervals overlap
    assert (d["high"] - d["low"]) < 0.2 * (ca["high"] - ca["low"])


def test_bootstrap_drops_empty_cells_and_rejects_bad_grids() -> None:
    num, den = np.array([[1.0, 5.0]]), np.array([[1.0, 0.0]])  # the second case has no nodule of this kind
    assert bootstrap_ratio(num, den, n_boot=50)["estimate"] == 1.0
    assert bootstrap_ratio(np.zeros((2, 2)), np.zeros((2, 2)), n_boot=10)["low"] is None
    with pytest.raises(ValueError, match="one shape"):
        bootstrap_ratio(np.zeros((2, 2)), np.zeros((2, 3)))
