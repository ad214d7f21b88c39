"""Paired metrics on constructed cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from LungDDPMLib.evaluation import paired_metrics, ssim_map


def case(seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    layout = np.zeros((32, 32, 32), dtype=np.int64)  # kept anatomy reaches past the 5-voxel SSIM border
    layout[8:24, 8:24, 8:24] = 1
    layout[14:18, 14:18, 14:18] = 2
    real = np.where(layout == 0, 40.0, -850.0) + rng.normal(0, 20, layout.shape)
    real[layout == 2] = 30 + rng.normal(0, 20, (layout == 2).sum())
    return real, layout


def test_identical_volumes() -> None:
    real, layout = case()
    m = paired_metrics(real, real.copy(), layout)
    for region in ("lung", "nodule", "generated", "kept", "whole"):
        r = m[region]
        assert r["mse_hu"] == 0 and r["mae_hu"] == 0 and r["w1_hu"] == 0 and math.isinf(r["psnr_db"])
        assert r["ssim"] == pytest.approx(1.0)
    assert m["lung"]["voxels"] == int((layout == 1).sum())


def test_known_shift_in_one_region() -> None:
    real, layout = case()
    synth = real.copy()
    synth[layout == 2] += 100.0  # nodule 100 HU brighter, nothing else changed
    m = paired_metrics(real, synth, layout)
    nod = m["nodule"]
    assert nod["mae_hu"] == pytest.approx(100.0) and nod["mse_hu"] == pytest.approx(1e4)
    assert nod["w1_hu"] == pytest.approx(100.0)  # a pure shift moves the distribution by exactly the shift
    assert nod["mse_norm"] == pytest.approx(0.01) and nod["mae_norm"] == pytest.approx(0.1)
    assert nod["psnr_db"] == pytest.approx(10 * np.log10(2000.0**2 / 1e4))
    assert nod["synthetic_mean_hu"] - nod["real_mean_hu"] == pytest.approx(100.0)
    assert m["lung"]["mse_hu"] == 0 and m["kept"]["mae_hu"] == 0
    n_nod, n_all = (layout == 2).sum(), layout.size
    assert m["whole"]["mse_hu"] == pytest.approx(1e4 * n_nod / n_all)
    assert nod["ssim"] < 1.0 and m["kept"]["ssim"] < 1.0 + 1e-12


def test_ssim_matches_scikit_image_on_the_whole_volume() -> None:
    real, layout = case(1)
    synth = real + np.random.default_rng(2).normal(0, 50, real.shape)
    ours = paired_metrics(real, synth, layout)["whole"]["ssim"]
    reference = structural_similarity(
        np.clip(real, -1000, 1000), np.clip(synth, -1000, 1000), data_range=2000.0,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    )  # fmt: skip
    assert ours == pytest.approx(reference, rel=1e-6)  # the map is float32
    assert ssim_map(real, synth).shape == real.shape


def test_ssim_map_in_slabs_equals_the_whole_volume_map() -> None:
    """Slabs with a half-window halo give the same voxels as one call on the whole volume (memory, not maths)."""
    rng = np.random.default_rng(3)
    real = rng.normal(-500, 300, (37, 24, 21))
    synth = real + rng.normal(0, 80, real.shape)
    _, whole = structural_similarity(
        np.clip(real, -1000, 1000), np.clip(synth, -1000, 1000), data_range=2000.0,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True,
    )  # fmt: skip
    for slab in (4, 9, 16, 64):
        assert np.abs(ssim_map(real, synth, slab=slab) - whole).max() < 1e-6


def test_empty_regions_are_not_applicable_and_bad_shapes_are_refused() -> None:
    real, layout = case()
    layout[layout == 2] = 1
    m = paired_metrics(real, real, layout)
    assert m["nodule"]["voxels"] == 0 and m["nodule"]["mse_hu"] is None and m["nodule"]["ssim"] is None
    with pytest.raises(ValueError, match="shapes differ"):
        paired_metrics(real, real[:-1], layout)
    with pytest.raises(ValueError, match="too small"):
        paired_metrics(real[:8], real[:8], layout[:8])
    thin = np.zeros_like(layout)
    thin[:2] = 1  # a region inside the border band has no SSIM, but its other metrics exist
    m = paired_metrics(real, real, thin)
    assert m["lung"]["ssim"] is None and m["lung"]["mae_hu"] == 0
