"""Preprocess -> model grid -> inverse: HU within tolerance inside the layout, bit-exact outside it, the
input's geometry and pixel type kept, for both spatial modes and both normalisations."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import rotated_direction
from scipy import ndimage as ndi

from LungDDPMLib.config import is_nodule
from LungDDPMLib.data.io import Geometry
from LungDDPMLib.data.pipeline import PreprocessRecord, postprocess, preprocess, to_native_hu
from LungDDPMLib.errors import InputError


@pytest.fixture(scope="module")
def oblique(small_phantom):
    """The small phantom with a rotated direction and a shifted origin (a non-trivial input geometry)."""
    ct, layout = sitk.Image(small_phantom.ct), sitk.Image(small_phantom.layout)
    for img in (ct, layout):
        img.SetDirection(rotated_direction(30.0))
        img.SetOrigin((12.5, -40.25, 300.0))
    return ct, layout


def _round_trip(ct, layout, **kwargs):
    items, record = preprocess(ct, layout, **kwargs)
    record = PreprocessRecord.from_json(record.to_json())  # the record survives JSON
    return items, record, postprocess([it.ct for it in items], record, ct, layout)


@pytest.mark.parametrize(
    "normalization, order",
    [
        ("hu-window", "scale-then-resize"),
        ("lungddpm-compat", "scale-then-resize"),
        ("lungddpm-compat", "resize-then-scale"),
    ],
)
def test_identity_grid_round_trip_is_exact(oblique, normalization, order):
    ct, layout = oblique
    grid = ct.GetSize()[::-1]
    items, _, out = _round_trip(ct, layout, normalization=normalization, grid=grid, compat_order=order)
    assert items[0].ct.shape == grid and items[0].ct.dtype == np.float32
    assert items[0].ct.min() >= -1 and items[0].ct.max() <= 1
    assert Geometry.of(out) == Geometry.of(ct) and out.GetPixelID() == ct.GetPixelID()
    a, b = sitk.GetArrayViewFromImage(out), sitk.GetArrayViewFromImage(ct)
    inside = sitk.GetArrayViewFromImage(layout) > 0
    assert np.array_equal(a[~inside], b[~inside])
    assert np.abs(a[inside].astype(int) - b[inside]).max() <= 1  # int16 rounding only


@pytest.mark.parametrize("normalization", ["hu-window", "lungddpm-compat"])
def test_downsampled_round_trip(oblique, normalization):
    ct, layout = oblique
    items, _, out = _round_trip(ct, layout, normalization=normalization, grid=(32, 48, 48))
    assert items[0].ct.shape == (32, 48, 48) and items[0].layout.shape == (32, 48, 48)
    assert set(np.unique(items[0].layout)) <= {0, 1, 2, 3, 4, 5}
    a = sitk.GetArrayViewFromImage(out).astype(float)
    b = sitk.GetArrayViewFromImage(ct).astype(float)
    inside = sitk.GetArrayViewFromImage(layout) > 0
    assert np.array_equal(a[~inside], b[~inside])  # outside: bit-exact
    # Halving the resolution loses noise and fine vessels, not the anatomy: errors of the order of the
    # noise, no bias, and the nodules keep their density.
    err = np.abs(a[inside] - b[inside])
    assert np.median(err) < 60 and err.mean() < 100, (np.median(err), err.mean())
    core = ndi.binary_erosion(inside, iterations=2)  # edges blur into the chest wall at half resolution
    assert abs(a[core].mean() - b[core].mean()) < 25
    nodule = is_nodule(sitk.GetArrayViewFromImage(layout))
    assert a[nodule].mean() > a[core & ~nodule].mean() + 200  # small nodules blur, but stay visible


def test_lung_bounding_box_crop(oblique):
    ct, layout = oblique
    items, record = preprocess(ct, layout, "hu-window", grid=(32, 32, 32), crop="lung", margin_mm=6.0)
    box = record.patches[0].box
    assert all(s < n for s, n in zip(box.size, ct.GetSize()))
    assert (items[0].layout > 0).mean() > (sitk.GetArrayViewFromImage(layout) > 0).mean()
    hu = to_native_hu(items[0].ct, record)
    assert hu.shape == box.size[::-1]


@pytest.mark.parametrize("merge", [True, False])
def test_roi_patches_are_centred_on_nodules(oblique, merge):
    ct, layout = oblique
    items, record, out = _round_trip(
        ct, layout, normalization="hu-window", spatial_mode="roi", grid=(16, 24, 24), roi_merge=merge
    )
    n_nodules = 3
    assert len(items) == (n_nodules if not merge else len(record.patches)) and len(items) <= n_nodules
    for item in items:
        assert item.ct.shape == (16, 24, 24)
        nz = np.argwhere(is_nodule(item.layout))
        assert len(nz)
        centre = (nz.min(axis=0) + nz.max(axis=0)) / 2
        if not merge:
            assert np.all(np.abs(centre - np.array([16, 24, 24]) / 2) <= 1.5)
    a, b = sitk.GetArrayViewFromImage(out), sitk.GetArrayViewFromImage(ct)
    assert np.abs(a.astype(int) - b).max() <= 1  # native resolution: identity up to rounding
    changed_outside = (a != b) & ~(sitk.GetArrayViewFromImage(layout) > 0)
    assert not changed_outside.any()


def test_composite_replaces_only_the_layout_and_feathers_inside(oblique):
    ct, layout = oblique
    items, record = preprocess(ct, layout, "hu-window", grid=ct.GetSize()[::-1])
    fake = [np.full_like(items[0].ct, 0.0)]  # 0 HU everywhere
    hard = sitk.GetArrayFromImage(postprocess(fake, record, ct, layout))
    soft = sitk.GetArrayFromImage(postprocess(fake, record, ct, layout, feather_mm=6.0))
    orig = sitk.GetArrayViewFromImage(ct)
    inside = sitk.GetArrayViewFromImage(layout) > 0
    assert np.all(hard[inside] == 0) and np.array_equal(hard[~inside], orig[~inside])
    assert np.array_equal(soft[~inside], orig[~inside])
    assert (soft[inside] != 0).any() and (soft[inside] == 0).any()  # blended seam, synthetic core


def test_pipeline_errors(oblique, small_phantom):
    ct, layout = oblique
    with pytest.raises(InputError, match="not on the CT grid"):
        preprocess(ct, small_phantom.layout)
    lay = sitk.GetArrayFromImage(layout)
    healthy = Geometry.of(layout).image_from_array(np.where(lay > 0, 1, 0).astype(np.uint8))
    with pytest.raises(InputError, match="at least one nodule"):
        preprocess(ct, healthy, spatial_mode="roi", grid=(16, 16, 16))
    with pytest.raises(InputError, match="spatial_mode"):
        preprocess(ct, layout, spatial_mode="patch")
    with pytest.raises(InputError, match="more than the patch"):
        preprocess(ct, layout, spatial_mode="roi", grid=(2, 2, 2))
    items, record = preprocess(ct, layout, "hu-window", grid=(16, 16, 16))
    with pytest.raises(InputError, match="expects"):
        postprocess([np.zeros((8, 8, 8))], record, ct, layout)
    with pytest.raises(InputError, match="different geometry"):
        postprocess([items[0].ct], record, small_phantom.ct, small_phantom.layout)
    with pytest.raises(InputError, match="version"):
        PreprocessRecord.from_dict({**record.to_dict(), "version": 99})


@pytest.mark.parametrize("roi_merge", [True, False])
def test_record_keeps_every_preprocessing_parameter(oblique, roi_merge) -> None:
    ct, layout = oblique
    _, record = preprocess(ct, layout, "hu-window", "roi", (16, 16, 16), margin_mm=7.5, roi_merge=roi_merge)
    back = PreprocessRecord.from_json(record.to_json())
    assert back.to_dict() == record.to_dict()
    assert back.roi_merge is roi_merge and back.spatial_mode == "roi" and back.grid == (16, 16, 16)
