"""Faults from the outside world: a full disk (a real, small tmpfs where this machine lets root mount one) and a
writer that fails the way ITK's NIfTI writer does on a full disk - it only prints an error and leaves a short file
that reads back without complaint. Under every output name there must be the whole image or nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator, List

import numpy as np
import pytest
import SimpleITK as sitk

from LungDDPMLib.checkpoint import save_checkpoint
from LungDDPMLib.config import preset
from LungDDPMLib.data.io import write_image
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.errors import DiskFullError
from LungDDPMLib.phantom import make_phantom, save_phantom
from LungDDPMLib.worker import Case, Job, run_job


def noisy_ct(size: int = 96) -> sitk.Image:
    """Random HU values: they do not compress, so the written file's size is known in advance."""
    arr = np.random.default_rng(0).integers(-1000, 1000, (size, size, size)).astype(np.int16)
    return sitk.GetImageFromArray(arr)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real full disk (skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:120]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def leftovers(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_a_full_disk_leaves_no_file_under_the_output_name(small_disk: Path, suffix: str) -> None:
    with pytest.raises(DiskFullError, match="disk is full"):
        write_image(noisy_ct(), small_disk / f"ct{suffix}")  # about 1.7 MB of incompressible voxels
    assert leftovers(small_disk) == []


def test_a_writer_that_only_prints_an_error_is_caught(tmp_path: Path, monkeypatch) -> None:
    """ITK's NIfTI writer on a full disk: no exception, a file that reads back with zeros where data is missing."""
    real = sitk.WriteImage

    def short_write(image: sitk.Image, name: str, *args) -> None:
        arr = sitk.GetArrayFromImage(image)
        arr[arr.shape[0] // 2 :] = 0  # the part that did not reach the disk
        damaged = sitk.GetImageFromArray(arr)
        damaged.CopyInformation(image)
        real(damaged, name, *args)

    monkeypatch.setattr(sitk, "WriteImage", short_write)
    target = tmp_path / "out.nii.gz"
    with pytest.raises(OSError, match="did not read back"):
        write_image(noisy_ct(32), target)
    assert leftovers(tmp_path) == []


def test_a_batch_on_a_full_disk_says_so_before_sampling(small_disk: Path, tmp_path: Path) -> None:
    ph = make_phantom((96, 96, 64), (3.0, 3.0, 4.0), seed=0, nodules=1)
    save_phantom(tmp_path / "cases", ph, name="c", seg_nrrd=False)
    model = DiffusionModel(preset("tiny", grid=(16, 16, 16), crop="lung"))
    save_checkpoint(tmp_path / "model.pt", model, ema=model)
    case = Case("c", str(tmp_path / "cases/c_ct.nrrd"), str(tmp_path / "cases/c_layout.nrrd"), str(small_disk / "s"))
    events: list = []
    run_job(Job(cases=[case], checkpoint=str(tmp_path / "model.pt"), steps=2, device="cpu"), events.append)
    errors = [e for e in events if e["type"] == "error"]
    assert errors and errors[0]["kind"] == "disk-full" and "MiB free" in errors[0]["message"]
    assert not [e for e in events if e["type"] == "progress"]  # refused before any sampling
    assert leftovers(small_disk) == []


def test_a_float_volume_with_nan_writes_and_verifies(tmp_path: Path) -> None:
    """Verification compares NaN with NaN as equal: a probability map or a damaged synthetic can still be saved."""
    arr = np.zeros((4, 5, 6), dtype=np.float32)
    arr[1, 2, 3] = np.nan
    out = write_image(sitk.GetImageFromArray(arr), tmp_path / "nan.nrrd")
    assert np.isnan(sitk.GetArrayViewFromImage(sitk.ReadImage(str(out)))[1, 2, 3])
