"""Set metrics: how close is the distribution of synthetic CTs to the real one, and how varied are samples?

* :func:`frechet_distance` (FID): distance between Gaussians fitted to the two feature sets. The standard in
  image synthesis; needs more samples than feature dimensions to be a stable estimate (:func:`fid_is_reliable`).
* :func:`mmd_unbiased`: unbiased squared maximum mean discrepancy with a Gaussian kernel; no Gaussian assumption,
  usable with few samples, 0 in expectation when the two sets come from one distribution.
* :func:`diversity`: how different several samples of the SAME layout are, in HU (a model that ignores its noise
  gives near-identical samples, which set metrics alone can miss).

Features come from :mod:`LungDDPMLib.evaluation.features`; matrices are ``(N, d)``, one row per volume.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.spatial.distance import cdist

from ..errors import InputError

FID_MIN_SAMPLES = 2
MMD_MIN_SAMPLES = 2
DIVERSITY_MIN_SAMPLES = 2


def _matrix(x: ArrayLike, label: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] == 0:
        raise InputError(f"{label} features must be a 2-D array (samples, features), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{label} features hold {int((~np.isfinite(a)).sum())} NaN or infinite values")
    return a


def _pair(real: ArrayLike, synthetic: ArrayLike, minimum: int, metric: str) -> Tuple[np.ndarray, np.ndarray]:
    r, s = _matrix(real, "real"), _matrix(synthetic, "synthetic")
    if r.shape[1] != s.shape[1]:
        raise InputError(f"feature dimensions differ: real {r.shape[1]}, synthetic {s.shape[1]}")
    if min(len(r), len(s)) < minimum:
        raise InputError(
            f"{metric} needs at least {minimum} samples in each set; got {len(r)} real and {len(s)} synthetic"
        )
    return r, s


def fid_is_reliable(n: int, d: int) -> bool:
    """``True`` when the smaller set has more samples than dimensions, so both covariances can be full rank."""
    return n > d


def frechet_distance(real: ArrayLike, synthetic: ArrayLike) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (FID on whatever features you pass).

    ``||mu_r - mu_s||^2 + tr(S_r) + tr(S_s) - 2 tr((S_r^1/2 S_s S_r^1/2)^1/2)``, unbiased covariances (N - 1),
    in float64 with torch alone: ``S_r^1/2`` from ``eigh`` and the last trace as the sum of square roots of the
    eigenvalues of the symmetric PSD product (tiny negative eigenvalues from rounding are clamped to 0; so is
    the result). Unlike ``scipy.linalg.sqrtm`` this never returns complex values, and it works with
    rank-deficient covariances (N <= d), where it is finite but a noisy, biased estimate: check
    :func:`fid_is_reliable` before quoting it.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a = rng.normal(size=(500, 4))
        >>> frechet_distance(a, a) < 1e-8
        True
    """
    r, s = _pair(real, synthetic, FID_MIN_SAMPLES, "FID")
    x, y = torch.from_numpy(r), torch.from_numpy(s)
    mu_x, mu_y = x.mean(0), y.mean(0)
    cx, cy = x - mu_x, y - mu_y
    cov_x = cx.T @ cx / (len(x) - 1)
    cov_y = cy.T @ cy / (len(y) - 1)
    w, v = torch.linalg.eigh(cov_x)
    root_x = (v * w.clamp_min(0).sqrt()) @ v.T
    inner = root_x @ cov_y @ root_x
    inner = (inner + inner.T) / 2  # symmetric in exact arithmetic; make it so for eigvalsh
    tr_cross = torch.linalg.eigvalsh(inner).clamp_min(0).sqrt().sum()
    fid = (mu_x - mu_y).square().sum() + torch.trace(cov_x) + torch.trace(cov_y) - 2 * tr_cross
    return max(float(fid), 0.0)


def median_pairwise_distance(features: ArrayLike) -> float:
    """Median Euclidean distance over all pairs ``i < j`` of rows (the self-distances 0 are left out)."""
    a = _matrix(features, "pooled")
    if len(a) < 2:
        raise InputError(f"the median heuristic needs at least 2 samples, got {len(a)}")
    d = np.sqrt(cdist(a, a, "sqeuclidean")[np.triu_indices(len(a), k=1)])
    return float(np.median(d))


def mmd_unbiased(real: ArrayLike, synthetic: ArrayLike, bandwidth: Optional[float] = None) -> Tuple[float, float]:
    """Unbiased MMD^2 (U-statistic) with ``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))``; returns ``(mmd2, sigma)``.

    ``sigma`` is ``bandwidth`` or, when ``None``, the median pairwise distance over the pooled set (the median
    heuristic). Within-set kernel sums leave out the diagonal, so the estimate is 0 *in expectation* when both sets
    come from one distribution; a single estimate may then be slightly negative - that is not an error.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> mmd2, sigma = mmd_unbiased(rng.normal(size=(100, 3)), rng.normal(2.0, size=(100, 3)))
        >>> mmd2 > 0.1
        True
    """
    r, s = _pair(real, synthetic, MMD_MIN_SAMPLES, "MMD")
    if bandwidth is None:
        sigma = median_pairwise_distance(np.concatenate([r, s]))
        if sigma <= 0:
            raise InputError("the median pairwise distance is 0 (most features are identical); pass a bandwidth")
    else:
        sigma = float(bandwidth)
        if not (np.isfinite(sigma) and sigma > 0):
            raise InputError(f"bandwidth must be a positive number, got {bandwidth!r}")
    gamma = 1.0 / (2.0 * sigma * sigma)
    k_rr = np.exp(-gamma * cdist(r, r, "sqeuclidean"))
    k_ss = np.exp(-gamma * cdist(s, s, "sqeuclidean"))
    k_rs = np.exp(-gamma * cdist(r, s, "sqeuclidean"))
    m, n = len(r), len(s)
    within_r = (k_rr.sum() - np.trace(k_rr)) / (m * (m - 1))
    within_s = (k_ss.sum() - np.trace(k_ss)) / (n * (n - 1))
    return float(within_r + within_s - 2.0 * k_rs.mean()), sigma


def _scale_pooled(r: np.ndarray, s: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    mean = r.mean(axis=0)
    sd = np.concatenate([r, s]).std(axis=0, ddof=1)
    sd = np.where(sd > 0, sd, 1.0)
    return (r - mean) / sd, (s - mean) / sd


def standardize(real: ArrayLike, synthetic: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Centre both sets on the real mean and divide each feature by its SD over BOTH sets (N - 1).

    Why pooled and not the real set's SD: a feature that hardly varies among real volumes (the fraction of lung
    voxels below -950 HU in a phantom: SD 0.001) would turn a small, harmless synthetic offset into twenty SDs
    and FID into a measure of that one feature. Pooling bounds what a pure shift of one feature can contribute
    (about 4), so every feature counts but none dominates. Constant features are only centred.
    """
    r, s = _pair(real, synthetic, 2, "standardisation")
    return _scale_pooled(r, s)


def set_metrics(
    real_feats: ArrayLike, synth_feats: ArrayLike, standardize: bool = True, bandwidth: Optional[float] = None
) -> Dict[str, Any]:
    """FID and MMD^2 for one pair of feature sets, with what a report needs to judge them.

    Args:
        real_feats, synth_feats: ``(N, d)`` feature matrices from one extractor.
        standardize: z-score first (:func:`standardize`: real mean, pooled SD). Use ``True`` for the
            radiomic extractor, whose features mix units (HU, fractions, bits) and would otherwise be dominated by
            the HU-sized ones; use ``False`` for Med3D features, to keep FID comparable with published values.
        bandwidth: MMD kernel sigma; ``None`` for the median heuristic.
    Returns:
        ``fid``, ``mmd2``, ``mmd_bandwidth``, ``n_real``, ``n_synthetic``, ``dim``, ``fid_reliable`` (more samples
        than dimensions in both sets) and ``standardized``.
    Example:
        >>> rng = np.random.default_rng(0)
        >>> out = set_metrics(rng.normal(size=(50, 3)), rng.normal(size=(40, 3)))
        >>> out["n_real"], out["dim"], out["fid_reliable"]
        (50, 3, True)
    """
    r, s = _pair(real_feats, synth_feats, max(FID_MIN_SAMPLES, MMD_MIN_SAMPLES), "set metrics")
    if standardize:
        r, s = _scale_pooled(r, s)
    mmd2, sigma = mmd_unbiased(r, s, bandwidth)
    return {
        "fid": frechet_distance(r, s),
        "mmd2": mmd2,
        "mmd_bandwidth": sigma,
        "n_real": len(r),
        "n_synthetic": len(s),
        "dim": r.shape[1],
        "fid_reliable": fid_is_reliable(min(len(r), len(s)), r.shape[1]),
        "standardized": bool(standardize),
    }


def diversity(samples: Sequence[np.ndarray], mask: Optional[np.ndarray] = None) -> Dict[str, Optional[float]]:
    """How different several samples of the same layout are, inside ``mask`` (whole volume without one).

    Returns ``mean_pairwise_mae_hu`` and ``mean_pairwise_rms_hu`` (mean over all pairs of the mean absolute /
    root-mean-square voxel difference), ``mean_voxel_sd_hu`` (per-voxel SD across samples, N - 1, averaged over the
    region), ``pairs`` and ``voxels``.
    Near 0 means the samples are practically identical. An empty mask gives ``None`` values ("not applicable").

    Example:
        >>> a = np.zeros((4, 4, 4)); diversity([a, a + 10.0])["mean_pairwise_mae_hu"]
        10.0
    """
    if len(samples) < DIVERSITY_MIN_SAMPLES:
        raise InputError(f"diversity needs at least {DIVERSITY_MIN_SAMPLES} samples of one layout, got {len(samples)}")
    shape = np.shape(samples[0])
    if any(np.shape(x) != shape for x in samples):
        raise InputError(f"samples must share one shape; got {sorted({np.shape(x) for x in samples})}")
    region = np.ones(shape, dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    if region.shape != shape:
        raise InputError(f"mask shape {region.shape} differs from the samples' shape {shape}")
    k = len(samples)
    out: Dict[str, Optional[float]] = {"pairs": k * (k - 1) // 2, "voxels": int(region.sum())}
    if not region.any():
        return {**out, "mean_pairwise_mae_hu": None, "mean_pairwise_rms_hu": None, "mean_voxel_sd_hu": None}
    values = np.stack([np.asarray(x, dtype=np.float64)[region] for x in samples])
    if not np.isfinite(values).all():
        raise InputError("the samples hold NaN or infinite values inside the mask")
    mae = rms = 0.0
    for i in range(k):
        for j in range(i + 1, k):
            diff = values[i] - values[j]
            mae += float(np.abs(diff).mean())
            rms += float(np.sqrt(np.mean(diff * diff)))
    n_pairs = k * (k - 1) // 2
    dev = values - values[0]  # relative to one sample: identical samples give exactly 0, not rounding noise
    sd = float(np.sqrt(((dev - dev.mean(axis=0)) ** 2).sum(axis=0) / (k - 1)).mean())
    return {**out, "mean_pairwise_mae_hu": mae / n_pairs, "mean_pairwise_rms_hu": rms / n_pairs, "mean_voxel_sd_hu": sd}
