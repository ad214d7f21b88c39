"""Feature extractors for set metrics (FID, MMD): one CT volume in, one fixed-length vector out.

Set metrics compare *distributions* of volumes, so every volume is first mapped to a vector by an extractor.
Two are built in:

* :class:`RadiomicExtractor` (``"radiomic"``): hand-written radiomic and texture statistics that need no
  weights. Always available and bit-deterministic, but its FID/MMD values are NOT comparable with the
  Lung-DDPM paper, which (most likely) computed FID on Med3D network features.
* :class:`~LungDDPMLib.evaluation.resnet3d.Med3DExtractor` (``"med3d"``): MedicalNet's 3D ResNet-50 with weights
  the user supplies; comparable with the paper only when the same weights and preprocessing are used.

Every extractor follows :class:`FeatureExtractor`, so the report code never cares which one it holds.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from .extractor import FeatureExtractor, validate_volume
from .fidelity import _gradient_magnitude

WINDOW_HU = (-1000.0, 1000.0)
HIST_BIN_HU = 25.0  # 80 fixed bins over the window
GLCM_LEVELS = 32  # grey levels of the co-occurrence matrix, 62.5 HU each over the window
LOG_SIGMAS_MM = (1.0, 2.0, 4.0)
EXTRACTORS = ("radiomic", "med3d")

FEATURE_NAMES: Tuple[str, ...] = (
    *("mean_hu", "sd_hu", "p05_hu", "p25_hu", "p50_hu", "p75_hu", "p95_hu", "skewness", "kurtosis"),
    *("frac_below_-950", "frac_above_-500", "hist_entropy_bits"),
    *("local_sd_mean_hu", "local_sd_sd_hu"),
    *("glcm_contrast", "glcm_homogeneity", "glcm_energy", "glcm_correlation", "glcm_entropy_bits"),
    *("grad_mean_hu_per_mm", "grad_sd_hu_per_mm"),
    *(f"log{s:g}mm_{stat}" for s in LOG_SIGMAS_MM for stat in ("mean", "sd", "mean_abs")),
)


def _moments(v: np.ndarray) -> List[float]:
    mean = float(v.mean())
    c = v - mean
    c2 = c * c
    var = float(c2.mean())
    sd = var**0.5
    skew = float((c2 * c).mean()) / sd**3 if sd > 0 else 0.0
    kurt = float((c2 * c2).mean()) / var**2 - 3.0 if sd > 0 else 0.0
    return [mean, sd, *(float(p) for p in np.percentile(v, [5, 25, 50, 75, 95])), skew, kurt]


def _histogram_entropy(v: np.ndarray) -> float:
    n_bins = int((WINDOW_HU[1] - WINDOW_HU[0]) / HIST_BIN_HU)
    idx = np.clip(np.floor((v - WINDOW_HU[0]) / HIST_BIN_HU), 0, n_bins - 1).astype(np.int64)
    p = np.bincount(idx, minlength=n_bins) / v.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _glcm(vol: np.ndarray, region: np.ndarray) -> List[float]:
    """Symmetric co-occurrence of 1-voxel neighbours along z, y and x, both voxels in the region, pooled."""
    scale = GLCM_LEVELS / (WINDOW_HU[1] - WINDOW_HU[0])
    q = np.clip(np.floor((vol - WINDOW_HU[0]) * scale), 0, GLCM_LEVELS - 1).astype(np.int32)
    counts = np.zeros(GLCM_LEVELS * GLCM_LEVELS, dtype=np.int64)
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        both = region[tuple(lo)] & region[tuple(hi)]
        counts += np.bincount(q[tuple(lo)][both] * GLCM_LEVELS + q[tuple(hi)][both], minlength=counts.size)
    if counts.sum() == 0:  # no two region voxels touch: pair every voxel with itself
        counts = np.bincount(q[region] * (GLCM_LEVELS + 1), minlength=counts.size)
    m = counts.reshape(GLCM_LEVELS, GLCM_LEVELS).astype(np.float64)
    p = (m + m.T) / (2 * m.sum())
    i, j = np.indices(p.shape)
    mu = float((i * p).sum())
    var = float(((i - mu) ** 2 * p).sum())
    nz = p[p > 0]
    return [
        float(((i - j) ** 2 * p).sum()),
        float((p / (1.0 + (i - j) ** 2)).sum()),
        float((p * p).sum()),
        float(((i - mu) * (j - mu) * p).sum()) / var if var > 0 else 1.0,
        float(-(nz * np.log2(nz)).sum()),
    ]


def _laplacian_mm(vol: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """3-point second differences in HU/mm^2 summed over the axes; edges repeat the border voxel."""
    padded = np.pad(vol, 1, mode="edge")
    centre = padded[1:-1, 1:-1, 1:-1]
    out = np.zeros_like(vol)
    for axis, h in enumerate(spacing):
        lo, hi = [slice(1, -1)] * 3, [slice(1, -1)] * 3
        lo[axis], hi[axis] = slice(None, -2), slice(2, None)
        term = padded[tuple(lo)] + padded[tuple(hi)]
        term -= centre
        term -= centre
        term *= np.float32(1.0 / h**2)
        out += term
    return out


def _mean_sd(v: np.ndarray) -> List[float]:
    v = v.astype(np.float64)
    return [float(v.mean()), float(v.std())]


class RadiomicExtractor:
    """Fixed radiomic/texture features (``radiomic-v1``); no weights, bit-deterministic, not the paper's FID.

    Filters run on the whole volume (so the region's border sees its real neighbours); statistics are gathered
    inside ``mask`` when one is given, else over the whole volume. HU in the features below are raw, unclipped
    values unless a window is named. Features, in order (``feature_names``):

    ===============================  ===================================================================
    ``mean_hu`` ... ``p95_hu``        mean, SD (population), 5/25/50/75/95th percentiles of HU
    ``skewness``, ``kurtosis``        standardised 3rd moment and excess kurtosis (0 for a constant region)
    ``frac_below_-950``               fraction of voxels below -950 HU (emphysema-like, very dark lung)
    ``frac_above_-500``               fraction above -500 HU (vessels, nodules, consolidation)
    ``hist_entropy_bits``             Shannon entropy of the histogram on 80 fixed 25 HU bins over
                                      [-1000, 1000] HU (values outside go to the end bins)
    ``local_sd_*``                    mean and SD of the 3x3x3 local standard deviation (fine texture)
    ``glcm_*``                        grey-level co-occurrence on 32 levels over [-1000, 1000] HU, 1-voxel
                                      neighbours along z, y and x pooled, symmetric: contrast,
                                      homogeneity, energy (ASM), correlation (1 if constant), entropy
    ``grad_*_hu_per_mm``              mean and SD of the gradient magnitude (central differences, in mm)
    ``log{1,2,4}mm_*``                scale-normalised Laplacian of Gaussian, ``sigma^2 * lap(G_sigma * I)``
                                      in HU, sigma in mm converted per axis with the spacing; the
                                      Laplacian is the 3-point difference in mm (cheaper than
                                      ``gaussian_laplace``, equal up to discretisation): mean, SD, mean |.|
    ===============================  ===================================================================

    Features have different units, so standardise them before FID/MMD (``set_metrics(standardize=True)``).

    Example:
        >>> vol = np.full((8, 8, 8), -800.0); vol[2:6, 2:6, 2:6] = 40.0
        >>> f = RadiomicExtractor()(vol, (1.0, 1.0, 1.0))
        >>> f.shape == (RadiomicExtractor.dim,)
        True
    """

    name = "radiomic-v1"
    comparable_with_paper = False
    feature_names: Tuple[str, ...] = FEATURE_NAMES
    dim = len(FEATURE_NAMES)

    def __call__(
        self, volume_hu: np.ndarray, spacing_zyx: Sequence[float], mask: Optional[np.ndarray] = None
    ) -> np.ndarray:
        vol, spacing, region = validate_volume(volume_hu, spacing_zyx, mask)
        if region is None:
            region = np.ones(vol.shape, dtype=bool)
        values = np.asarray(volume_hu, dtype=np.float64)[region]
        feats = _moments(values)
        feats += [float(np.mean(values < -950.0)), float(np.mean(values > -500.0)), _histogram_entropy(values)]

        centred = vol - np.float32(feats[0])  # centring keeps E[x^2] - E[x]^2 accurate in float32
        local_var = ndi.uniform_filter(centred * centred, 3) - ndi.uniform_filter(centred, 3) ** 2
        feats += _mean_sd(np.sqrt(np.maximum(local_var, 0.0))[region])
        feats += _glcm(vol, region)
        feats += _mean_sd(_gradient_magnitude(vol, spacing)[region])

        for sigma_mm in LOG_SIGMAS_MM:
            smooth = ndi.gaussian_filter(vol, [sigma_mm / s for s in spacing])
            response = (_laplacian_mm(smooth, spacing)[region] * sigma_mm**2).astype(np.float64)
            feats += [*_mean_sd(response), float(np.abs(response).mean())]
        out = np.asarray(feats, dtype=np.float64)
        assert out.shape == (self.dim,), out.shape
        return out


def extract_features(
    items: Iterable[Tuple[np.ndarray, Sequence[float], Optional[np.ndarray]]], extractor: FeatureExtractor
) -> np.ndarray:
    """Stack ``extractor(volume, spacing, mask)`` over ``items`` into an ``(N, dim)`` float64 matrix.

    Example:
        >>> vol = np.full((8, 8, 8), -800.0)
        >>> extract_features([(vol, (1, 1, 1), None)] * 2, RadiomicExtractor()).shape
        (2, 30)
    """
    rows = [np.asarray(extractor(vol, spacing, mask), dtype=np.float64) for vol, spacing, mask in items]
    for k, row in enumerate(rows):
        if row.shape != (extractor.dim,):
            raise InputError(
                f"extractor {extractor.name} returned shape {row.shape} for item {k}, not ({extractor.dim},)"
            )
    return np.stack(rows) if rows else np.empty((0, extractor.dim), dtype=np.float64)


def make_extractor(name: str, weights: Optional[str] = None, device: str = "cpu") -> FeatureExtractor:
    """Build an extractor by name: ``radiomic`` (no weights) or ``med3d`` (needs a local MedicalNet file).

    Example:
        >>> make_extractor("radiomic").name
        'radiomic-v1'
    """
    key = name.strip().lower()
    if key in ("radiomic", RadiomicExtractor.name):
        return RadiomicExtractor()
    if key in ("med3d", "med3d-resnet50"):
        if not weights:
            raise InputError(
                "the med3d extractor needs MedicalNet ResNet-50 weights: pass the path of a local resnet_50.pth "
                "(nothing is downloaded), or use the 'radiomic' extractor, which needs none"
            )
        from .resnet3d import Med3DExtractor  # here, not at the top: it imports torch

        return Med3DExtractor.from_file(weights, device=device)
    raise InputError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
