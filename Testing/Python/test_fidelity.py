"""Layout-fidelity measures on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from LungDDPMLib.evaluation import boundary_shell, layout_fidelity, seam_score


def case() -> tuple:
    rng = np.random.default_rng(0)
    layout = np.zeros((24, 24, 24), dtype=np.uint8)
    layout[4:20, 4:20, 4:20] = 1
    layout[10:14, 10:14, 10:14] = 2
    real = np.where(layout == 0, 40.0, -850.0) + rng.normal(0, 15, layout.shape)
    real[layout == 2] = 30 + rng.normal(0, 15, (layout == 2).sum())
    return real, layout


def test_identical_volumes_score_one_and_keep_anatomy_exactly() -> None:
    real, layout = case()
    report = layout_fidelity(real, real.copy(), layout, (1.0, 1.0, 1.0))
    assert report["seam_score"] == pytest.approx(1.0)
    assert report["kept_anatomy_max_abs_diff_hu"] == 0.0
    assert report["lung"]["real"] == report["lung"]["synthetic"]
    assert report["nodule_minus_lung_hu"] == pytest.approx(880, abs=5) and report["lung_in_range"] is True


@pytest.mark.parametrize("shift,expect_above_one", [(-300.0, True), (300.0, False)])
def test_an_intensity_mismatch_at_the_boundary_moves_the_score(shift, expect_above_one) -> None:
    real, layout = case()
    shifted = real.copy()
    shifted[layout > 0] += shift  # the real edge is 40 HU -> -850 HU: darker lung adds a step, brighter washes it out
    score = seam_score(real, shifted, layout > 0, (1.0, 1.0, 1.0))
    assert (score > 1.1) if expect_above_one else (score < 0.9)
    report = layout_fidelity(real, shifted, layout, (1.0, 1.0, 1.0))
    assert report["lung"]["synthetic"]["mean_hu"] == pytest.approx(report["lung"]["real"]["mean_hu"] + shift, abs=0.2)
    assert report["lung_in_range"] is False


def test_empty_nodule_is_not_applicable_and_shell_is_two_voxels_thick() -> None:
    real, layout = case()
    layout[layout == 2] = 1
    report = layout_fidelity(real, real, layout, (1.0, 1.0, 1.0))
    assert report["nodule"] == {"real": None, "synthetic": None} and report["nodule_minus_lung_hu"] is None
    shell = boundary_shell(layout > 0)
    assert shell[3, 12, 12] and shell[4, 12, 12] and not shell[5, 12, 12] and not shell[2, 12, 12]
    with pytest.raises(ValueError, match="shapes differ"):
        layout_fidelity(real, real[:-1], layout, (1, 1, 1))


def test_nodule_classes_known_answers():
    """A ground-glass nodule drawn at -600 HU is ground glass; one drawn solid is not; extents and W1 add up."""
    from LungDDPMLib.evaluation.nodule_classes import nodule_fidelity, summarize_classes

    shape = (30, 30, 30)
    grid = np.indices(shape)
    ball = lambda c, r: sum((g - x) ** 2 for g, x in zip(grid, c)) <= r**2  # noqa: E731
    layout = np.ones(shape, np.uint8)
    layout[ball((8, 8, 8), 4)] = 5  # ground glass
    layout[ball((21, 21, 21), 4)] = 3  # solid
    real = np.full(shape, -850.0)
    real[layout == 5] = -620.0
    real[layout == 3] = 30.0
    good, bad = real.copy(), real.copy()
    bad[layout == 5] = 30.0  # the ground-glass nodule drawn solid
    rows = nodule_fidelity(real, good, layout, (1.0, 1.0, 1.0))
    assert [r["class"] for r in rows] == ["ground-glass", "solid"]
    assert all(r["synthetic_in_class_range"] for r in rows)
    summary = summarize_classes(rows)
    assert summary["ground-glass"]["w1_hu"] == 0.0 and summary["solid"]["synthetic_mean_hu"] == 30.0
    volume = float((layout == 3).sum())
    assert summary["solid"]["synthetic_dense_diameter_mm"] == pytest.approx((6 * volume / np.pi) ** (1 / 3), abs=0.01)
    assert summary["ground-glass"]["synthetic_dense_diameter_mm"] == 0.0  # no solid part in ground glass
    wrong = summarize_classes(nodule_fidelity(real, bad, layout, (1.0, 1.0, 1.0)))
    assert wrong["ground-glass"]["synthetic_in_class_range"] == 0.0 and wrong["ground-glass"]["w1_hu"] == 650.0
    assert "_values" not in rows[0]  # summarize_classes leaves JSON-ready rows
