"""The cropped mask operations give exactly SciPy's whole-volume answers: random masks of blobs, anisotropic spacing,
components at the volume's faces and corners, margins that are and are not a whole number of voxels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from LungDDPMLib.config import LABEL_LUNG, LABEL_NODULE, LABEL_OF_TYPE
from LungDDPMLib.data.context import near_nodules
from LungDDPMLib.data.masks import count_components, largest_component, mask_box, within_distance
from LungDDPMLib.data.nodule_types import type_counts


def _blobs(seed: int, shape=(20, 37, 41), n=5) -> np.ndarray:
    """A few random blobs, some cut by the volume's faces, one a single voxel in a corner."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    mask = np.zeros(shape, bool)
    for _ in range(n):
        centre = rng.uniform(-2, np.array(shape) + 2)
        radius = rng.uniform(0.5, 4.0, size=3)
        mask |= (((grid - centre[:, None, None, None]) / radius[:, None, None, None]) ** 2).sum(0) <= 1
    mask[0, 0, 0] = True
    return mask


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    ("spacing", "distance"),
    [
        ((1.0, 1.0, 1.0), 2.0),
        ((2.5, 0.7, 0.9), 3.0),
        ((1.5, 1, 1), 0),
        ((1.5, 0.8, 0.8), 0.5),  # under one voxel in every direction
        ((1.1, 1.1, 1.1), 5.5),  # offsets (5, 0, 0) and (3, 4, 0): equal in exact arithmetic, not in floats
    ],
)
def test_within_distance_is_the_whole_volume_distance_transform(seed, spacing, distance):
    mask = _blobs(seed)
    expected = ndi.distance_transform_edt(~mask, sampling=spacing) <= distance
    assert np.array_equal(within_distance(mask, spacing, distance), expected)


def test_within_distance_of_nothing_is_nothing_and_a_negative_distance_reaches_nothing():
    assert not within_distance(np.zeros((4, 5, 6), bool), (1, 1, 1), 3.0).any()
    assert not within_distance(_blobs(0), (1, 1, 1), -1.0).any()


def test_within_distance_takes_what_the_whole_volume_call_takes():
    """An infinite or NaN margin and an integer mask give the whole-volume comparison's answer, not an error."""
    mask = _blobs(1)
    assert within_distance(mask, (1, 1, 1), float("inf")).all()
    assert not within_distance(mask, (1, 1, 1), float("nan")).any()
    spacing = (2.0, 1.0, 0.5)
    expected = ndi.distance_transform_edt(~mask, sampling=spacing) <= 2.5
    assert np.array_equal(within_distance(mask.astype(np.uint8), spacing, 2.5), expected)
    with pytest.raises(ValueError, match="pad"):
        mask_box(mask, -1)


def test_a_far_voxel_is_not_reached_and_the_reach_is_anisotropic():
    mask = np.zeros((30, 30, 30), bool)
    mask[15, 15, 15] = True
    near = within_distance(mask, (3.0, 1.0, 1.0), 3.0)
    assert near[16, 15, 15] and not near[17, 15, 15]  # one slice of 3 mm along z
    assert near[15, 18, 15] and not near[15, 19, 15]  # three voxels of 1 mm along y
    assert near.sum() == (ndi.distance_transform_edt(~mask, sampling=(3, 1, 1)) <= 3).sum()


@pytest.mark.parametrize("seed", range(4))
def test_component_counts_and_sizes_are_scipys(seed):
    mask = _blobs(seed, n=7)
    labels, n = ndi.label(mask)
    assert count_components(mask) == n
    assert largest_component(mask) == np.bincount(labels.ravel())[1:].max()
    assert count_components(~np.ones(mask.shape, bool)) == 0 and largest_component(np.zeros((3, 3), bool)) == 0


def test_mask_box_holds_every_voxel_and_is_tight():
    mask = _blobs(3)
    box = mask_box(mask)
    assert mask[box].sum() == mask.sum()
    for axis, s in enumerate(box):
        assert mask.take(s.start, axis).any() and mask.take(s.stop - 1, axis).any()
    grown = mask_box(mask, (1, 2, 3))
    assert [g.start for g in grown] == [max(s.start - p, 0) for s, p in zip(box, (1, 2, 3))]
    assert mask_box(np.zeros((2, 2, 2), bool)) is None


def test_near_nodules_and_type_counts_on_a_layout_match_the_whole_volume():
    rng = np.random.default_rng(7)
    labels = np.full((24, 40, 40), LABEL_LUNG, np.uint8)
    blobs = [_blobs(s, labels.shape, n=2) for s in (10, 11, 12, 13)]
    for value, blob in zip((LABEL_NODULE, *LABEL_OF_TYPE.values()), blobs):
        labels[blob] = value
    labels[rng.random(labels.shape) < 0.002] = LABEL_OF_TYPE["solid"]  # specks: many one-voxel components
    spacing = (1.5, 0.8, 0.8)
    nodule = labels >= LABEL_NODULE
    assert np.array_equal(
        near_nodules(labels, spacing, 3.0), ndi.distance_transform_edt(~nodule, sampling=spacing) <= 3
    )
    counts = type_counts(labels)
    assert counts["nodule"] == ndi.label(labels == LABEL_NODULE)[1]
    for kind, value in LABEL_OF_TYPE.items():
        assert counts[kind] == ndi.label(labels == value)[1]
