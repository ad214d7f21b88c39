"""Layouts: label maps with custom values, Slicer segmentations (3D and layered 4D), resampling to the CT
grid, automatic lung mask, and the warnings and errors for unusable layouts."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import rotated_direction

from LungDDPMLib.config import LABEL_LUNG, LABEL_NODULE, is_nodule
from LungDDPMLib.data.io import Geometry, write_image
from LungDDPMLib.data.layout import (
    auto_lung_mask,
    check_layout,
    layout_from_labelmap,
    layout_from_segmentation,
    load_layout,
    resample_to_reference,
)
from LungDDPMLib.data.nodule_types import retype
from LungDDPMLib.data.pipeline import preprocess
from LungDDPMLib.data.segmentation import read_segmentation, write_segmentation
from LungDDPMLib.data.validation import DataWarning
from LungDDPMLib.errors import InputError


def _user_labels(ph) -> sitk.Image:
    """The phantom's layout re-coded the way users often store it: right lung 3, left lung 4, nodule 7."""
    lay = sitk.GetArrayFromImage(ph.layout)
    out = np.zeros_like(lay)
    nx = lay.shape[2]
    out[(lay == LABEL_LUNG) & (np.arange(nx) < nx // 2)] = 3
    out[(lay == LABEL_LUNG) & (np.arange(nx) >= nx // 2)] = 4
    out[is_nodule(lay)] = 7
    return Geometry.of(ph.layout).image_from_array(out)


def test_labelmap_with_several_lung_values(small_phantom):
    layout = layout_from_labelmap(_user_labels(small_phantom), lung_values=(3, 4), nodule_values=7)
    # A user's value 7 states no class, so the nodules come back untyped (2) where the phantom had typed them.
    untyped = retype(sitk.GetArrayFromImage(small_phantom.layout), None)
    assert np.array_equal(sitk.GetArrayViewFromImage(layout), untyped)
    assert Geometry.of(layout) == Geometry.of(small_phantom.layout)


def test_absent_label_values(small_phantom):
    labels = _user_labels(small_phantom)
    with pytest.raises(InputError, match=r"lung label value\(s\) \[1\] not found.*contains 0, 3, 4, 7"):
        layout_from_labelmap(labels, lung_values=1, nodule_values=7, ignore_values=(3, 4))
    with pytest.warns(DataWarning, match="no nodule"):
        layout = layout_from_labelmap(labels, lung_values=(3, 4), nodule_values=9, ignore_values=7)
    assert not (sitk.GetArrayViewFromImage(layout) == LABEL_NODULE).any()
    with pytest.warns(DataWarning, match=r"\[5\] not found"):
        layout_from_labelmap(labels, lung_values=(3, 4, 5), nodule_values=7)
    with pytest.raises(InputError, match="both as lung and as nodule"):
        layout_from_labelmap(labels, lung_values=(3, 7), nodule_values=7)


def test_seg_nrrd_by_names_3d(tmp_path, small_phantom):
    segments = {1: ("Left Lung", (1, 0, 0)), 3: ("NODULE solid", (0, 1, 0)), 4: ("part-solid", (0, 1, 1))}
    path = write_segmentation(small_phantom.layout, tmp_path / "lay.seg.nrrd", {**segments, 5: ("GGO", (1, 1, 0))})
    layout = layout_from_segmentation(path)  # default names: contains 'lung' / nodule words / a nodule class
    assert np.array_equal(sitk.GetArrayViewFromImage(layout), sitk.GetArrayViewFromImage(small_phantom.layout))
    explicit = layout_from_segmentation(
        path, lung_names="left lung", nodule_names=["nodule solid", "part-solid", "ggo"]
    )
    assert np.array_equal(sitk.GetArrayViewFromImage(explicit), sitk.GetArrayViewFromImage(layout))
    with pytest.raises(InputError, match=r"not found.*Left Lung"):
        layout_from_segmentation(path, lung_names="right lung")


def _layered_seg(tmp_path, ph, true_4d: bool):
    """A Slicer-style layered segmentation: lung in layer 0, (overlapping) nodule in layer 1."""
    lay = sitk.GetArrayFromImage(ph.layout)
    lung = (lay > 0).astype(np.uint8)  # lung includes the nodule: overlapping segments need layers
    nodule = is_nodule(lay).astype(np.uint8) * 5
    geo = Geometry.of(ph.layout)
    if true_4d:
        img = sitk.JoinSeries([geo.image_from_array(lung), geo.image_from_array(nodule)])
    else:
        img = sitk.GetImageFromArray(np.stack([lung, nodule], axis=-1), isVector=True)
        img.SetSpacing(geo.spacing)
        img.SetOrigin(geo.origin)
        img.SetDirection(geo.direction)
    meta = {
        "Segment0_Name": "lung",
        "Segment0_LabelValue": "1",
        "Segment0_Layer": "0",
        "Segment0_ID": "s0",
        "Segment1_Name": "Nodule 1",
        "Segment1_LabelValue": "5",
        "Segment1_Layer": "1",
        "Segment1_ID": "s1",
    }
    for k, v in meta.items():
        img.SetMetaData(k, v)
    return write_image(img, tmp_path / f"layered{int(true_4d)}.seg.nrrd")


@pytest.mark.parametrize("true_4d", [False, True])
def test_seg_nrrd_layered(tmp_path, small_phantom, true_4d):
    path = _layered_seg(tmp_path, small_phantom, true_4d)
    seg = read_segmentation(path)
    assert len(seg.layers) == 2 and seg.names == ["lung", "Nodule 1"]
    assert Geometry.of(seg.reference).matches(Geometry.of(small_phantom.layout))
    untyped = retype(sitk.GetArrayFromImage(small_phantom.layout), None)  # "Nodule 1" states no class
    layout = load_layout(path, small_phantom.ct)
    assert np.array_equal(sitk.GetArrayViewFromImage(layout), untyped)


def test_layout_on_another_grid_is_resampled(tmp_path, small_phantom):
    """A layout cropped, rotated and coarser than the CT lands on the CT grid (nearest neighbour)."""
    ct = small_phantom.ct
    ref = sitk.Image([40, 40, 30], sitk.sitkUInt8)
    ref.SetSpacing((2.7, 2.9, 3.3))
    ref.SetDirection(rotated_direction(8.0))
    centre = np.array(ct.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in ct.GetSize()]))
    half = np.array([20, 20, 15]) * ref.GetSpacing()
    ref.SetOrigin(tuple(centre - np.asarray(ref.GetDirection()).reshape(3, 3) @ half))
    other = sitk.Resample(small_phantom.layout, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    path = write_image(other, tmp_path / "other.nii.gz")
    with pytest.raises(InputError, match=r"overlap only 2\d%.*--resample-layout"):
        load_layout(path, ct)  # a crop that small is accepted only when the user says it is aligned
    with pytest.warns(DataWarning, match="resampled onto the CT grid"):
        layout = load_layout(path, ct, resample=True)
    assert Geometry.of(layout).matches(Geometry.of(ct))
    a = sitk.GetArrayViewFromImage(layout) == LABEL_LUNG
    b = sitk.GetArrayViewFromImage(small_phantom.layout) == LABEL_LUNG
    inside_box = (
        sitk.GetArrayViewFromImage(
            sitk.Resample(
                sitk.Image(other.GetSize(), sitk.sitkUInt8) + 1, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0
            )
        )
        > 0
    )
    dice = 2 * (a & b & inside_box).sum() / ((a & inside_box).sum() + (b & inside_box).sum())
    assert dice > 0.85


def test_layout_that_misses_the_ct(tmp_path, small_phantom):
    far = sitk.Image(small_phantom.layout)
    far.SetOrigin(tuple(o + 5000.0 for o in far.GetOrigin()))
    with pytest.raises(InputError, match="does not overlap"):
        resample_to_reference(far, small_phantom.ct)


def test_auto_lung_mask_matches_the_lungs(small_phantom):
    auto = sitk.GetArrayFromImage(auto_lung_mask(small_phantom.ct)) > 0
    truth = sitk.GetArrayFromImage(small_phantom.layout) > 0
    dice = 2 * (auto & truth).sum() / (auto.sum() + truth.sum())
    assert dice > 0.85, dice


def test_empty_lung_is_an_error_or_auto(small_phantom):
    lay = sitk.GetArrayFromImage(small_phantom.layout)
    nodule_only = Geometry.of(small_phantom.layout).image_from_array(np.where(is_nodule(lay), lay, 0).astype(np.uint8))
    with pytest.raises(InputError, match="no lung"):
        check_layout(nodule_only, small_phantom.ct)
    fixed = sitk.GetArrayFromImage(check_layout(nodule_only, small_phantom.ct, auto_lung="if-missing"))
    assert (fixed == LABEL_LUNG).sum() > 0.8 * (lay == LABEL_LUNG).sum()
    assert np.array_equal(fixed * is_nodule(fixed), lay * is_nodule(lay))  # classes kept
    with pytest.raises(InputError, match="auto_lung"):
        check_layout(nodule_only, small_phantom.ct, auto_lung="sometimes")


@pytest.mark.parametrize("mode", ["if-missing", "always"])
@pytest.mark.parametrize("form", ["labels", "segments"])
def test_a_layout_of_nodules_alone_gets_its_lung_from_the_ct(tmp_path, small_phantom, mode, form):
    """The error about a missing lung recommends --auto-lung if-missing; with it (or always) the file must work."""
    lay = sitk.GetArrayFromImage(small_phantom.layout)
    nodules = Geometry.of(small_phantom.layout).image_from_array(np.where(is_nodule(lay), lay, 0).astype(np.uint8))
    if form == "labels":
        path = write_image(nodules, tmp_path / "nodules.nrrd")
    else:
        path = write_segmentation(nodules, tmp_path / "nodules.seg.nrrd", {3: ("solid nodule", (0, 1, 0))})
    with pytest.raises(InputError, match="--auto-lung if-missing") as refused:
        load_layout(path, small_phantom.ct)
    assert "automatic lung mask" not in str(refused.value)  # the advice names the option that works
    out = sitk.GetArrayFromImage(load_layout(path, small_phantom.ct, auto_lung=mode))
    truth = lay == LABEL_LUNG
    dice = 2 * ((out == LABEL_LUNG) & truth).sum() / ((out == LABEL_LUNG).sum() + truth.sum())
    assert dice > 0.8, dice
    kept = is_nodule(lay) if form == "labels" else lay == 3
    assert np.array_equal(out[kept], lay[kept]) and not is_nodule(out[~kept]).any()  # nodules and classes kept


def test_empty_nodule_layout_is_allowed_with_a_warning(small_phantom):
    lay = sitk.GetArrayFromImage(small_phantom.layout)
    healthy = Geometry.of(small_phantom.layout).image_from_array(np.where(lay > 0, 1, 0).astype(np.uint8))
    with pytest.warns(DataWarning, match="healthy"):
        out = check_layout(healthy, small_phantom.ct)
    assert np.array_equal(sitk.GetArrayViewFromImage(out), sitk.GetArrayViewFromImage(healthy))


def test_nodule_outside_the_lung_warns(small_phantom):
    lay = sitk.GetArrayFromImage(small_phantom.layout)
    lay[2:5, 2:5, 2:5] = LABEL_NODULE  # in the corner, in the air
    with pytest.warns(DataWarning, match="outside the lung"):
        check_layout(Geometry.of(small_phantom.layout).image_from_array(lay), small_phantom.ct)


def test_bad_layout_values_and_files(tmp_path, small_phantom):
    lay = sitk.GetArrayFromImage(small_phantom.layout)
    lay[0, 0, 0] = 9
    with pytest.raises(InputError, match=r"values \[9\]"):
        check_layout(Geometry.of(small_phantom.layout).image_from_array(lay))
    plain = write_image(small_phantom.layout, tmp_path / "plain.seg.nrrd")
    with pytest.raises(InputError, match="no segment table"):
        load_layout(plain, small_phantom.ct)
    with pytest.raises(InputError, match="not a Slicer segmentation"):
        read_segmentation(plain)


@pytest.mark.parametrize("bad", [257, 258, -1, 1.5])
def test_out_of_range_labels_are_not_wrapped_into_valid_ones(bad) -> None:
    """A cast to uint8 before checking would turn 257 into lung and 258 into nodule."""
    dtype = np.float32 if isinstance(bad, float) else np.int16
    arr = np.zeros((4, 6, 6), dtype=dtype)
    arr[1:3, 1:5, 1:5] = 1
    arr[2, 2, 2] = bad
    img = sitk.GetImageFromArray(arr)
    with pytest.raises(InputError, match=f"values \\[{bad:g}\\]"):
        check_layout(img)
    with pytest.raises(InputError, match="values"):
        preprocess(sitk.Cast(img * 0 - 800, sitk.sitkInt16), img, "hu-window", "full", (4, 6, 6))
