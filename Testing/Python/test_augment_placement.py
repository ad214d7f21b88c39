"""Placing new nodules for `lungddpm augment`, without a model: the mix asked for, inside the lung or against the
pleura, clear of every other nodule, the right size in mm on oblique anisotropic grids, and one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from LungDDPMLib.augment.options import AugmentSettings
from LungDDPMLib.augment.placement import CaseSpace, draw_specs, place_variant
from LungDDPMLib.augment.shapes import NewNodule, nodule_mask
from LungDDPMLib.config import is_nodule
from LungDDPMLib.data.context import ROI_MARGIN_MM
from LungDDPMLib.data.geometry import Geometry
from LungDDPMLib.errors import InputError
from LungDDPMLib.phantom import NoduleSpec, make_phantom


def oblique(degrees: float = 25.0) -> tuple:
    a, b = np.deg2rad(degrees), np.deg2rad(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple((rz @ rx).ravel())


@pytest.fixture(scope="module")
def phantom():
    return make_phantom((64, 64, 40), (2.0, 2.0, 3.0), seed=4, nodules=[NoduleSpec(9, "solid", side="left")])


def test_draws_follow_the_class_size_and_juxta_mix() -> None:
    settings = AugmentSettings.create(
        variants=1, types="solid=0.5,part-solid=0.3,ground-glass=0.2", diameter="6:18", juxta_share=0.3, nodules="2:4"
    )
    rng = np.random.default_rng(0)
    specs, counts = [], []
    for _ in range(400):
        drawn = draw_specs(settings, rng)
        counts.append(len(drawn))
        specs += drawn
    kinds = np.array([s["kind"] for s in specs])
    for kind, share in settings.types.items():
        assert abs(np.mean(kinds == kind) - share) < 0.04, kind
    d = np.array([s["diameter_mm"] for s in specs])
    assert d.min() >= 6.0 and d.max() <= 18.0
    assert abs(np.median(d) - np.sqrt(6 * 18)) < 1.0  # log-uniform: the median is the geometric mean
    assert abs(np.mean([s["juxta_pleural"] for s in specs]) - 0.3) < 0.04
    assert set(counts) == {2, 3, 4}


def test_placements_are_in_the_lung_clear_of_nodules_and_juxta_ones_touch_the_pleura(phantom) -> None:
    labels = sitk.GetArrayFromImage(phantom.layout)
    geo = Geometry.of(phantom.layout)
    spacing = np.asarray(geo.spacing[::-1])
    existing = is_nodule(labels)
    to_existing = ndi.distance_transform_edt(~existing, sampling=spacing)
    space = CaseSpace(labels, geo, (8, 16, 16))
    settings = AugmentSettings.create(variants=1, types="solid=0.6,ground-glass=0.4", diameter="5:10", nodules="1:2")
    rng = np.random.default_rng(1)
    kinds = []
    for _ in range(40):
        placed, _ = place_variant(space, settings, rng, "test")
        union = np.zeros(labels.shape, dtype=bool)
        for p in placed:
            mask = np.zeros(labels.shape, dtype=bool)
            mask[p.box] = p.mask
            assert mask.any() and (labels[mask] == 1).all()  # lung voxels only: no existing nodule, no outside
            assert to_existing[mask].min() > ROI_MARGIN_MM + settings.gap_mm  # the regenerated margin stays clear
            if union.any():
                assert ndi.distance_transform_edt(~union, sampling=spacing)[mask].min() > settings.gap_mm
            touches = (ndi.binary_dilation(mask) & (labels == 0)).any()
            assert touches == p.nodule.juxta_pleural
            extent = [int(a.max() - a.min() + 1) for a in np.nonzero(mask)]
            assert all(e <= q for e, q in zip(extent, (8, 16, 16)))  # fits the model's patch
            union |= mask
            kinds.append(p.nodule.kind)
    assert 0.35 < np.mean(np.array(kinds) == "solid") < 0.85 and "part-solid" not in kinds


def test_a_nodule_keeps_its_size_in_mm_on_an_oblique_anisotropic_grid() -> None:
    image = sitk.Image([60, 50, 30], sitk.sitkUInt8)
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetDirection(oblique())
    image.SetOrigin((-10.0, 20.0, -5.0))
    geo = Geometry.of(image)
    centre = geo.index_to_physical(np.array([30.2, 24.7, 14.4]))
    box, mask = nodule_mask(geo, NewNodule("solid", 12.0, "round", False, tuple(centre), 3))
    volume = mask.sum() * np.prod(geo.spacing)
    assert abs(volume / (4 / 3 * np.pi * 6.0**3) - 1) < 0.1
    k, j, i = np.nonzero(mask)
    idx = np.stack([i + box[2].start, j + box[1].start, k + box[0].start], axis=1).astype(float)
    points = geo.index_to_physical(idx)
    assert np.linalg.norm(points.mean(axis=0) - centre) < 0.5
    assert np.linalg.norm(points - centre, axis=1).max() <= 6.0 + 1e-6  # every voxel centre within the radius


def test_no_room_is_one_clear_line() -> None:
    z, y, x = np.mgrid[:20, :30, :30]
    labels = ((((z - 10) * 2.0) ** 2 + ((y - 15) * 1.5) ** 2 + ((x - 15) * 1.5) ** 2) <= 9.0**2).astype(np.uint8)
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((1.5, 1.5, 2.0))
    space = CaseSpace(labels, Geometry.of(image), None)
    settings = AugmentSettings.create(variants=1, diameter="8:8", nodules="2", juxta_share=0.0)
    with pytest.raises(InputError, match=r"case x, variant 1: no room for a 8 mm .* nodule fully inside the lung"):
        place_variant(space, settings, np.random.default_rng(0), "case x, variant 1")
    empty = np.zeros_like(labels)
    with pytest.raises(InputError, match="no lung voxels"):
        CaseSpace(empty, Geometry.of(image), None)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"variants": 0}, "--variants must be a whole number >= 1"),
        ({"variants": 1, "types": "solid=0.5,blob=0.5"}, "nodule mix entry 'blob=0.5'"),
        ({"variants": 1, "types": "solid=x"}, "nodule mix entry 'solid=x'"),
        ({"variants": 1, "diameter": "25:5"}, "LO <= HI"),
        ({"variants": 1, "diameter": "2:40"}, "--diameter-mm 2:40 must lie within 3:30"),
        ({"variants": 1, "juxta_share": 1.5}, "--juxta-share"),
        ({"variants": 1, "out_format": "nnunet", "dataset_name": "X"}, "--dataset-id"),
        ({"variants": 1, "out_format": "nnunet", "dataset_id": 3, "dataset_name": "a b"}, "--name"),
    ],
)
def test_bad_settings_are_refused(kwargs, message) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("+", r"\+")):
        AugmentSettings.create(**kwargs)
