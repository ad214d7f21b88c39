"""Set metrics against independent references: SciPy's sqrtm for FID, closed forms, NumPy for the median heuristic."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg
from scipy.spatial.distance import pdist

from LungDDPMLib.errors import InputError
from LungDDPMLib.evaluation import (
    diversity,
    fid_is_reliable,
    frechet_distance,
    mmd_unbiased,
    set_metrics,
    standardize,
)
from LungDDPMLib.evaluation.set_metrics import FID_MIN_SAMPLES, MMD_MIN_SAMPLES


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The usual pytorch-fid formula with scipy.linalg.sqrtm."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def gaussian_closed_form(mu1, s1, mu2, s2) -> float:
    root = linalg.sqrtm(s1)
    cross = linalg.sqrtm(root @ s2 @ root).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def random_cov(rng: np.random.Generator, d: int, scale: float) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


@pytest.mark.parametrize("d", [1, 6])
def test_fid_matches_scipy_sqrtm(d: int) -> None:
    rng = np.random.default_rng(d)
    a = rng.multivariate_normal(np.zeros(d), random_cov(rng, d, 1.0), size=300)
    b = rng.multivariate_normal(np.full(d, 0.7), random_cov(rng, d, 2.0), size=250)
    assert frechet_distance(a, b) == pytest.approx(reference_fid(a, b), rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8))
    b = rng.normal(0.3, 1.5, size=(150, 8))
    assert abs(frechet_distance(a, a)) < 1e-8
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)


def test_fid_approaches_the_closed_form_for_large_samples() -> None:
    rng = np.random.default_rng(2)
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    s1, s2 = random_cov(rng, d, 1.0), random_cov(rng, d, 3.0)
    exact = gaussian_closed_form(mu1, s1, mu2, s2)
    est = frechet_distance(rng.multivariate_normal(mu1, s1, 20000), rng.multivariate_normal(mu2, s2, 20000))
    assert est == pytest.approx(exact, rel=0.03)


def test_rank_deficient_fid_is_finite_and_flagged_unreliable() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 20)), rng.normal(1.0, size=(6, 20))
    fid = frechet_distance(a, b)
    assert np.isfinite(fid) and fid >= 0
    assert fid == pytest.approx(reference_fid(a, b), rel=1e-4)  # sqrtm still agrees here, up to its own error
    assert not fid_is_reliable(5, 20) and fid_is_reliable(21, 20)


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    same, _ = mmd_unbiased(a, b)
    assert abs(same) < 0.02
    values = [mmd_unbiased(a, b + shift, bandwidth=2.0)[0] for shift in (0.25, 0.5, 1.0, 2.0)]
    assert values[0] > same and all(x < y for x, y in zip(values, values[1:]))


def gram(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * sigma**2))


def test_unbiased_mmd_averages_to_zero_where_the_biased_one_would_not() -> None:
    estimates, biased = [], []
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        a, b = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
        mmd2, sigma = mmd_unbiased(a, b)
        estimates.append(mmd2)
        biased.append(gram(a, a, sigma).mean() + gram(b, b, sigma).mean() - 2 * gram(a, b, sigma).mean())
    assert min(estimates) < 0 < max(estimates)  # a single estimate may be negative: that is not an error
    assert abs(np.mean(estimates)) < 3 * np.std(estimates) / np.sqrt(len(estimates))
    assert np.mean(biased) > 5 * abs(np.mean(estimates))  # the V-statistic (diagonal kept) is biased upwards


def test_median_heuristic_and_explicit_bandwidth() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(40, 3)), rng.normal(0.5, size=(31, 3))
    _, sigma = mmd_unbiased(a, b)
    assert sigma == pytest.approx(np.median(pdist(np.concatenate([a, b]))), rel=1e-12)
    mmd2_fixed, sigma_fixed = mmd_unbiased(a, b, bandwidth=0.7)
    assert sigma_fixed == 0.7
    kxx, kyy, kxy = gram(a, a, 0.7), gram(b, b, 0.7), gram(a, b, 0.7)
    expected = (kxx.sum() - 40) / (40 * 39) + (kyy.sum() - 31) / (31 * 30) - 2 * kxy.mean()
    assert mmd2_fixed == pytest.approx(expected, rel=1e-10)
    with pytest.raises(InputError, match="bandwidth"):
        mmd_unbiased(a, b, bandwidth=0.0)


def test_bad_feature_sets_are_refused_with_the_minimum() -> None:
    ok = np.zeros((5, 3)) + np.arange(5)[:, None]
    with pytest.raises(InputError, match=f"at least {FID_MIN_SAMPLES}.*got 1 real and 5"):
        frechet_distance(ok[:1], ok)
    with pytest.raises(InputError, match=f"at least {MMD_MIN_SAMPLES}.*got 5 real and 1"):
        mmd_unbiased(ok, ok[:1])
    with pytest.raises(InputError, match="dimensions differ"):
        frechet_distance(ok, ok[:, :2])
    bad = ok.copy()
    bad[2, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        mmd_unbiased(ok, bad)
    with pytest.raises(InputError, match="2-D"):
        frechet_distance(np.zeros(5), ok)


def test_standardize_uses_real_mean_and_pooled_sd_and_set_metrics_reports() -> None:
    rng = np.random.default_rng(6)
    real = rng.normal([0.0, -800.0], [1.0, 100.0], size=(60, 2))
    synth = rng.normal([0.5, -700.0], [1.0, 100.0], size=(50, 2))
    r, s = standardize(real, synth)
    pooled = np.concatenate([real, synth]).std(0, ddof=1)
    assert np.allclose(r.mean(0), 0) and np.allclose(np.concatenate([r, s]).std(0, ddof=1), 1)
    assert np.allclose(s, (synth - real.mean(0)) / pooled)
    out = set_metrics(real, synth)
    assert out["fid"] == pytest.approx(frechet_distance(r, s)) and out["mmd2"] == pytest.approx(mmd_unbiased(r, s)[0])
    assert (out["n_real"], out["n_synthetic"], out["dim"], out["fid_reliable"], out["standardized"]) == (
        60, 50, 2, True, True,
    )  # fmt: skip
    raw = set_metrics(real, synth, standardize=False)
    assert raw["fid"] == pytest.approx(frechet_distance(real, synth)) and raw["fid"] > 100 * out["fid"]


def test_a_nearly_constant_real_feature_cannot_dominate_fid() -> None:
    """A feature with SD 0.001 among real volumes and a 0.02 synthetic offset: with the real SD it would add 400."""
    rng = np.random.default_rng(8)
    real = np.column_stack([rng.normal(0, 1, 40), rng.normal(0.002, 0.001, 40)])
    synth = np.column_stack([rng.normal(0, 1, 40), rng.normal(0.022, 0.001, 40)])
    fid = set_metrics(real, synth)["fid"]
    assert 1.0 < fid < 5.0  # the offset still counts (about 4), but does not swamp the other feature


def test_diversity_known_answers() -> None:
    rng = np.random.default_rng(7)
    base = rng.normal(-800, 50, size=(6, 7, 8))
    mask = np.zeros(base.shape, dtype=bool)
    mask[1:5, 2:6, 3:7] = True
    same = diversity([base, base.copy(), base.copy()], mask)
    assert same["mean_pairwise_mae_hu"] == 0 and same["mean_pairwise_rms_hu"] == 0 and same["mean_voxel_sd_hu"] == 0
    assert same["pairs"] == 3 and same["voxels"] == mask.sum()
    shifted = base.copy()
    shifted[mask] += 10.0
    shifted[~mask] += 500.0  # outside the mask: must not count
    two = diversity([base, shifted], mask)
    assert two["mean_pairwise_mae_hu"] == pytest.approx(10.0) and two["mean_pairwise_rms_hu"] == pytest.approx(10.0)
    assert two["mean_voxel_sd_hu"] == pytest.approx(10.0 / np.sqrt(2))  # SD (N - 1) of {x, x + 10}
    empty = diversity([base, shifted], np.zeros(base.shape, dtype=bool))
    assert empty["mean_pairwise_mae_hu"] is None and empty["mean_voxel_sd_hu"] is None and empty["pairs"] == 1
    with pytest.raises(InputError, match="at least 2"):
        diversity([base], mask)
