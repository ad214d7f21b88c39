"""Training items for ``lung-ddpm-plus`` against the authors' ``dataset.py``, written out here independently.

The oracle restates ``LIDC_IDRI_dataset.__getitem__`` of Manem-Lab/Lung-DDPM-PLUS as ``train.py`` builds it
(``input_channel=2``, ``num_class_labels=2``, ``full_channel_mask=True``, ``input_size = depth_size`` = the cube):
nibabel reads both files, the CT is min-max scaled per index of its last axis (NIfTI k) over the whole volume
(``MinMaxScaler`` written out: scikit-learn is not installed here), both arrays ``transpose(1, 2, 0)``, the cube
around a random voxel of nodule label 1 (the nodule-only mask their ``SEG_NODULE`` files hold), no resize at the
model's size, ``label2masks``, and their two ``Compose`` transforms. Shared by convention: the voxel index is drawn
with ``numpy.random.default_rng([seed, epoch, index])`` (theirs: unseeded ``np.random.choice``). No flips: their
training has none.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from LungDDPMLib.config import preset
from LungDDPMLib.data.datasets import PairedFolderDataset, model_data_options

CUBE = 16


def their_item(ct_path: Path, seg_nodule: np.ndarray, rng_key, cube: int):
    """dataset.__getitem__ with the nodule-only mask (nodule 1, else 0) in NIfTI order."""
    input_img = np.transpose(seg_nodule.astype(np.float64), (1, 2, 0))  # read_image(pass_scaler=True)
    img = nib.load(str(ct_path)).get_fdata()
    cols = img.reshape(-1, img.shape[-1])
    lo, hi = cols.min(axis=0), cols.max(axis=0)
    rng_ = hi - lo
    rng_[rng_ < 10 * np.finfo(rng_.dtype).eps] = 1.0
    scale = 1.0 / rng_
    target_img = np.transpose((cols * scale + (0.0 - lo * scale)).reshape(img.shape), (1, 2, 0))
    coords = np.argwhere(input_img == 1)
    sel = coords[np.random.default_rng(rng_key).choice(len(coords))]
    starts = [max(0, min(n - cube, v - cube // 2)) for n, v in zip(target_img.shape, sel)]
    box = tuple(slice(s, s + cube) for s in starts)
    target_img, input_img = target_img[box], input_img[box]
    mask = np.zeros((*input_img.shape, 1))
    mask[input_img == 1, 0] = 1
    target = (torch.tensor(target_img).float() * 2 - 1).unsqueeze(0).transpose(3, 1)
    inp = (torch.tensor(mask).float() * 2 - 1).permute(3, 0, 1, 2).transpose(3, 1)
    return target, inp


@pytest.mark.parametrize(
    "shape,nodule,moves",
    [
        ((30, 26, 34), ((12, 10, 14), (17, 14, 19)), True),  # inside a non-cubic volume
        ((27, 33, 22), ((0, 25, 17), (4, 30, 22)), False),  # at the i = 0, j and k = max faces: the cube is pinned
    ],
)
def test_lung_ddpm_plus_training_items_are_the_authors_dataset_items(tmp_path: Path, shape, nodule, moves) -> None:
    rng = np.random.default_rng(1)
    i, _j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    ct = (-900 + 300 * i / shape[0] + 90 * k / shape[2] + rng.normal(0, 20, shape)).astype(np.float32)
    ct[:, :, 2] = -500.0  # a constant axial slice maps to 0, as MinMaxScaler maps a constant column
    lay = np.zeros(shape, np.int16)
    lay[1:-1, 1:-1, 1:-1] = 1
    box = tuple(slice(a, b) for a, b in zip(*nodule))
    lay[box] = 2
    affine = np.diag([0.7, 0.8, 1.25, 1.0])
    for name, data in (("ct", ct), ("layout", lay)):
        (tmp_path / name).mkdir()
        nib.save(nib.Nifti1Image(data, affine), str(tmp_path / name / "case.nii.gz"))
    cfg = preset("lung-ddpm-plus", grid=(CUBE,) * 3)
    options = {**model_data_options(cfg), "seed": 5, "flip_prob": 0.0}
    assert options["roi_crop"] == "published"
    data = PairedFolderDataset(tmp_path / "ct", tmp_path / "layout", **options)
    for epoch in range(3):
        item = data[(0, epoch)]
        target, inp = their_item(tmp_path / "ct" / "case.nii.gz", (lay == 2).astype(np.int16), [5, epoch, 0], CUBE)
        assert tuple(item["ct"].shape) == tuple(target.shape) == (1, CUBE, CUBE, CUBE)
        torch.testing.assert_close(item["ct"], target, rtol=0, atol=2e-7)
        torch.testing.assert_close(item["condition"], inp, rtol=0, atol=0)
    # Other epochs draw other voxels: inside the volume the cube moves with them; at the faces it stays clipped.
    starts = {tuple((data[(0, e)]["condition"] > 0).nonzero()[0].tolist()) for e in range(8)}
    assert (len(starts) > 1) == moves


def test_our_presets_keep_our_roi_items() -> None:
    assert model_data_options(preset("roi-small"))["roi_crop"] == "ours"
    assert model_data_options(preset("lung-ddpm"))["roi_crop"] == "ours"
