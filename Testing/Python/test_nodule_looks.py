"""The reader's measures on hand-made nodules with known answers: each must pass the right drawing and fail the bad one
(a hole for a haze, a cut vessel, an inverted part-solid core)."""

from __future__ import annotations

import numpy as np
import pytest

from LungDDPMLib.config import LABEL_LUNG, LABEL_OF_TYPE
from LungDDPMLib.evaluation.nodule_looks import TARGETS, check_targets, nodule_looks, summarize_looks

SHAPE = (48, 64, 64)
SPACING = (1.0, 1.0, 1.0)
RADIUS = 8.0


def _scene(kind: str, seed: int = 0):
    """Lung (-850 HU + noise) everywhere, one nodule of ``kind`` at the centre, a vessel along x through it."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE, dtype=np.float64)
    c = [n / 2 for n in SHAPE]
    r = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
    nodule = r <= RADIUS
    vessel = np.sqrt((z - c[0]) ** 2 + (y - c[1] - 3) ** 2) <= 1.6
    layout = np.full(SHAPE, LABEL_LUNG, np.uint8)
    layout[nodule] = LABEL_OF_TYPE[kind]
    real = -850.0 + 20.0 * rng.standard_normal(SHAPE)
    real[vessel] = 40.0
    return real, layout, nodule, vessel, r


def _draw(kind: str, real, nodule, vessel, r, rng, how: str = "right"):
    out = real.copy()
    noise = 30.0 * rng.standard_normal(real.shape)
    if kind == "ground-glass":
        haze = -600.0 + noise
        if how == "hole":  # dark inside, bright ragged rim: what the first ROI model drew
            haze = np.where(r <= 0.7 * RADIUS, -930.0 + noise, -350.0 + noise)
        out[nodule] = haze[nodule]
        if how != "cut":
            out[nodule & vessel] = np.maximum(out, 40.0 + noise)[nodule & vessel]
    elif kind == "part-solid":
        core, rim = (0.0, -600.0) if how == "right" else (-900.0, -300.0)
        out[nodule] = np.where(r <= 0.5 * RADIUS, core, rim)[nodule] + noise[nodule]
    else:
        out[nodule] = (20.0 + noise)[nodule]
    return out


def _looks(kind: str, how: str):
    rows = []
    for seed in range(3):
        real, layout, nodule, vessel, r = _scene(kind, seed)
        real = _draw(kind, real, nodule, vessel, r, np.random.default_rng(100 + seed))  # the "real" nodule
        synth = _draw(kind, real, nodule, vessel, r, np.random.default_rng(200 + seed), how)
        rows += nodule_looks(real, synth, layout, SPACING, vessel=vessel)
    return rows


def test_a_haze_passes_and_a_hole_fails():
    good = summarize_looks(_looks("ground-glass", "right"))["ground-glass"]
    bad = summarize_looks(_looks("ground-glass", "hole"))["ground-glass"]
    assert good["holes"] <= TARGETS["holes"] and good["real_holes"] == 0.0
    assert bad["holes"] > 0.3  # the dark interior is about 0.7^3 of the nodule, all of it below the lung
    assert check_targets({"ground-glass": good})["ground-glass"]["holes"] is True
    assert check_targets({"ground-glass": bad})["ground-glass"]["holes"] is False
    # The class mean alone cannot tell them apart well: both lie within 100 HU of the real one.
    assert abs(bad["synthetic_mean_hu"] - bad["real_mean_hu"]) < 150.0


def test_a_kept_vessel_passes_and_a_cut_one_fails():
    good = summarize_looks(_looks("ground-glass", "right"))["ground-glass"]
    cut = summarize_looks(_looks("ground-glass", "cut"))["ground-glass"]
    assert good["vessel_records"] == 3 and good["real_vessel_hu"] > TARGETS["vessel_hu"]
    assert good["synthetic_vessel_hu"] > 0.0
    assert cut["synthetic_vessel_hu"] == pytest.approx(-600.0, abs=20.0)
    assert check_targets({"ground-glass": good})["ground-glass"]["vessel_hu"] is True
    assert check_targets({"ground-glass": cut})["ground-glass"]["vessel_hu"] is False


def test_a_solid_core_passes_and_an_inverted_one_fails():
    good = summarize_looks(_looks("part-solid", "right"))["part-solid"]
    inverted = summarize_looks(_looks("part-solid", "inverted"))["part-solid"]
    assert good["real_core_minus_rim_hu"] > 400.0
    assert good["synthetic_core_minus_rim_hu"] == pytest.approx(good["real_core_minus_rim_hu"], abs=30.0)
    assert inverted["synthetic_core_minus_rim_hu"] < -400.0
    assert check_targets({"part-solid": good})["part-solid"]["core_minus_rim_hu"] is True
    assert check_targets({"part-solid": inverted})["part-solid"]["core_minus_rim_hu"] is False
    # The radial profile shows the same: dense at the centre, hazy at the edge.
    row = _looks("part-solid", "right")[0]
    assert row["synthetic_profile_hu"][0] > row["synthetic_profile_hu"][3] + 400.0


def test_spread_and_distance_measures():
    rows = _looks("solid", "right")
    s = summarize_looks(rows)["solid"]
    # Same texture law (30 HU) on both sides: SD ratio near 1, W1 at the noise level, no hole, mean within 10 HU.
    assert 0.8 <= s["sd_ratio"] <= 1.25 and s["w1_hu"] < 15.0 and s["holes"] == 0.0
    assert all(check_targets({"solid": s})["solid"].values())
    flat = [dict(r, synthetic_mean_hu=500.0) for r in rows]
    assert check_targets(summarize_looks(flat))["solid"]["max_mean_hu"] is False


def test_the_lung_shell_lies_outside_the_regenerated_margin():
    real, layout, *_ = _scene("ground-glass")
    row = nodule_looks(real, real, layout, SPACING, margin_mm=3.0)[0]
    assert row["lung_around_hu"] == pytest.approx(-850.0, abs=5.0)  # the lung, not the nodule or the vessel
    with pytest.raises(ValueError):
        nodule_looks(real, real[:-1], layout, SPACING)
