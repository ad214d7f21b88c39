"""Training datasets: folder pairing, item format, nodule-centred crops, flips, caching, phantom dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from LungDDPMLib.config import is_nodule
from LungDDPMLib.data.datasets import PairedFolderDataset, PhantomDataset, pair_files
from LungDDPMLib.data.validation import DataWarning
from LungDDPMLib.errors import InputError
from LungDDPMLib.phantom import make_phantom, save_phantom


@pytest.fixture(scope="module")
def folder(tmp_path_factory, small_phantom):
    root = tmp_path_factory.mktemp("pairs")
    save_phantom(root / "one", small_phantom, name="case1")  # case1_ct.nrrd + case1_layout(.seg).nrrd
    other = make_phantom((64, 64, 48), (3.0, 3.0, 4.0), seed=2, nodules=1)
    save_phantom(root / "one", other, name="case2", fmt="nii.gz")
    return root / "one"


def test_pairing_by_name(folder, tmp_path):
    pairs = pair_files(folder)
    assert [p[0] for p in pairs] == ["case1", "case2"]
    assert pairs[0][2].name == "case1_layout.nrrd"  # label map preferred over the .seg.nrrd
    # Two folders with identical names.
    (tmp_path / "ct").mkdir()
    (tmp_path / "lay").mkdir()
    for name in ("a.nrrd", "b.nrrd"):
        (tmp_path / "ct" / name).write_bytes((folder / "case1_ct.nrrd").read_bytes())
    (tmp_path / "lay" / "a.nrrd").write_bytes((folder / "case1_layout.nrrd").read_bytes())
    with pytest.warns(DataWarning, match="without a partner"):
        pairs = pair_files(tmp_path / "ct", tmp_path / "lay")
    assert [p[0] for p in pairs] == ["a"]
    with pytest.raises(InputError, match="no CT/layout pairs"):
        pair_files(tmp_path / "lay")
    with pytest.raises(InputError, match="folder not found"):
        pair_files(tmp_path / "missing")


def test_items_and_disk_cache(folder, tmp_path):
    ds = PairedFolderDataset(
        folder, grid=(32, 32, 32), crop_size=(16, 16, 16), cache_dir=tmp_path / "cache", nodule_crop_prob=1.0, seed=3
    )
    assert len(ds) == 2
    item = ds[0]
    assert item["ct"].shape == (1, 16, 16, 16) and item["ct"].dtype == torch.float32
    assert item["layout"].shape == (16, 16, 16) and item["layout"].dtype == torch.int64
    assert item["ct"].min() >= -1 and item["ct"].max() <= 1
    assert is_nodule(item["layout"]).any(), "nodule-centred crop without the nodule"
    assert item["name"] == "case1"
    assert len(list((tmp_path / "cache").glob("case1-*.npz"))) == 1
    again = PairedFolderDataset(
        folder, grid=(32, 32, 32), crop_size=(16, 16, 16), cache_dir=tmp_path / "cache", nodule_crop_prob=1.0, seed=3
    )
    again._prepare = None  # must come from the cache, not from the files
    assert torch.equal(again[0]["ct"], item["ct"])


def test_augmentation_is_seeded_per_epoch(small_phantom, tmp_path):
    ds = PhantomDataset(
        2,
        phantom_size=(64, 64, 48),
        phantom_spacing=(3.0, 3.0, 4.0),
        nodules=1,
        grid=(16, 32, 32),
        crop_size=(16, 16, 16),
        flip_axes=(1, 2),
        seed=5,
    )
    a1, a2 = ds[1], ds[1]
    assert torch.equal(a1["ct"], a2["ct"])
    draws = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        draws.add(ds[1]["ct"].numpy().tobytes())
    assert len(draws) > 1
    base_ct, _ = ds.arrays(1)
    assert base_ct.shape == (16, 32, 32) and ds.name(1) == "phantom00001"


def test_flip_mirrors_ct_and_layout_together():
    ds = PhantomDataset(
        1, phantom_size=(64, 64, 48), phantom_spacing=(3.0, 3.0, 4.0), grid=(16, 32, 32), flip_axes=(2,), flip_prob=1.0
    )
    ct, layout = ds.arrays(0)
    item = ds[0]
    assert np.array_equal(item["ct"][0].numpy(), ct[:, :, ::-1])
    assert np.array_equal(item["layout"].numpy(), layout[:, :, ::-1])


def test_bad_dataset_options(folder):
    with pytest.raises(InputError, match="crop_size"):
        PairedFolderDataset(folder, grid=(16, 16, 16), crop_size=(32, 16, 16))
    with pytest.raises(InputError, match="flip_axes"):
        PhantomDataset(1, flip_axes=(3,))
    with pytest.raises(InputError, match="length"):
        PhantomDataset(0)


def test_trainer_sampler_changes_crops_and_flips_every_epoch() -> None:
    """Augmentation is drawn per (epoch, index); the trainer's sampler must pass the epoch along."""
    from LungDDPMLib.training.datasets import StreamSampler

    ds = PhantomDataset(
        2, phantom_size=(48, 48, 32), phantom_spacing=(4.0, 4.0, 6.0), grid=(16, 16, 16), crop_size=(8, 8, 8), seed=1
    )
    sampler = StreamSampler(len(ds), seed=0, with_epoch=bool(getattr(ds, "accepts_epoch", False)))
    stream = iter(sampler)
    crops: dict = {0: set(), 1: set()}
    for _ in range(12):  # six epochs of two items
        key = next(stream)
        assert isinstance(key, tuple)
        item = ds[key]
        crops[key[0]].add(item["ct"].numpy().tobytes())
    assert len(crops[0]) > 1 and len(crops[1]) > 1
    assert torch.equal(ds[(0, 3)]["ct"], ds[(0, 3)]["ct"])  # still deterministic per (index, epoch)
