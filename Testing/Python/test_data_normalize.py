"""Normalisation: the published per-slice min-max (checked against its definition) and the HU window."""

from __future__ import annotations

import numpy as np
import pytest

from LungDDPMLib.data import normalize as N
from LungDDPMLib.errors import InputError


def _published(volume_xyz: np.ndarray) -> np.ndarray:
    """Lung-DDPM's preprocessing on a nibabel-style (x, y, z) array, written out as the original does it:
    MinMaxScaler on the array reshaped to (-1, last axis), column by column, then x * 2 - 1."""
    flat = volume_xyz.reshape(-1, volume_xyz.shape[-1]).astype(np.float64)
    out = np.empty_like(flat)
    for col in range(flat.shape[1]):
        c = flat[:, col]
        rng = c.max() - c.min()
        out[:, col] = (c - c.min()) / (rng if rng != 0 else 1.0)
    return out.reshape(volume_xyz.shape) * 2 - 1


def test_compat_equals_published_definition():
    rng = np.random.default_rng(0)
    zyx = rng.normal(-400, 500, (7, 9, 11))
    zyx[3] = 42.0  # a constant slice maps to 0 -> -1
    ours, record = N.compat_forward(zyx)
    expected_xyz = _published(np.transpose(zyx, (2, 1, 0)))  # nibabel order: last axis = axial slice
    assert np.allclose(ours, np.transpose(expected_xyz, (2, 1, 0)), atol=1e-6)
    assert np.all(ours[3] == -1.0)
    assert record.slice_min[3] == record.slice_max[3] == 42.0
    for k in range(zyx.shape[0]):
        if k != 3:
            assert ours[k].min() == pytest.approx(-1) and ours[k].max() == pytest.approx(1)


def test_compat_inverts_to_hu_exactly():
    rng = np.random.default_rng(1)
    hu = rng.normal(-400, 500, (6, 10, 12)).astype(np.float32)
    hu[2] = -1000.0
    x, record = N.forward(hu, "lungddpm-compat")
    back = N.inverse(x, N.NormRecord.from_dict(record.to_dict()))
    assert np.allclose(back, hu, atol=1e-3)


def test_minmax_along_other_axis_matches_sklearn_layout():
    rng = np.random.default_rng(2)
    a = rng.random((5, 6, 4))
    scaled, mins, maxs = N.minmax_per_slice(a, axis=2)
    assert np.allclose(scaled * 2 - 1, _published(a))
    assert np.allclose(N.minmax_inverse(scaled, mins, maxs, axis=2), a)
    with pytest.raises(InputError, match="slice ranges"):
        N.minmax_inverse(scaled, mins[:-1], maxs[:-1], axis=2)


def test_hu_window_round_trip_and_clipping():
    hu = np.array([-3000, -1000, -850, 0, 40, 1000, 2500], dtype=np.float32)
    x, record = N.forward(hu, "hu-window")
    assert x.dtype == np.float32 and x.min() == -1 and x.max() == 1
    assert x[3] == pytest.approx(0.0)
    back = N.inverse(x, record)
    assert np.allclose(back[1:6], hu[1:6], atol=1e-3)
    assert back[0] == -1000 and back[-1] == 1000  # clipped at the window edges
    assert record.to_dict()["window"] == [-1000.0, 1000.0]


def test_bad_modes_and_windows():
    with pytest.raises(InputError, match="unknown normalization"):
        N.forward(np.zeros(3), "z-score")
    with pytest.raises(InputError, match="window"):
        N.forward(np.zeros(3), "hu-window", window=(100, -100))
