"""I/O: geometry round trips for every format, DICOM series, and clear errors for bad files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import rotated_direction

from LungDDPMLib.data.io import Geometry, file_suffix, read_ct, read_image, strip_suffix, write_image
from LungDDPMLib.data.validation import check_ct_intensities, check_memory
from LungDDPMLib.errors import InputError


def _ct(size=(40, 36, 24), spacing=(0.71, 0.83, 2.5), direction=None, seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(-1024, 1500, size=size[::-1]).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((-101.25, 37.5, -512.125))
    img.SetDirection(direction or rotated_direction(25.0))
    return img


# Geometry tolerance: text formats are exact to ~1e-12, NIfTI stores float32.
FORMATS = [(".nrrd", 1e-12), (".nii.gz", 2e-5), (".nii", 2e-5), (".mha", 1e-12), (".seg.nrrd", 1e-12)]


@pytest.mark.parametrize("suffix, tol", FORMATS)
def test_round_trip_keeps_voxels_and_geometry(tmp_path, suffix, tol):
    img = _ct()
    path = write_image(img, tmp_path / f"vol{suffix}")
    back = read_image(path)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(img))
    a, b = Geometry.of(img), Geometry.of(back)
    assert a.size == b.size
    assert np.allclose(a.spacing, b.spacing, rtol=tol, atol=0)
    assert np.allclose(a.origin, b.origin, rtol=tol, atol=tol)
    assert np.allclose(a.direction, b.direction, atol=tol)
    assert a.matches(b)


def test_mhd_header_and_raw(tmp_path):
    img = _ct()
    sitk.WriteImage(img, str(tmp_path / "vol.mhd"))
    back = read_image(tmp_path / "vol.mhd")
    assert Geometry.of(back).matches(Geometry.of(img), tol=1e-9)


def test_dicom_series_folder(tmp_path, write_dicom_series):
    img = _ct(size=(32, 28, 12), spacing=(0.7, 0.7, 2.0))
    folder = write_dicom_series(img, tmp_path / "series")
    for source in (folder, folder / "slice0003.dcm"):
        back = read_image(source)
        assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(img))
        assert Geometry.of(back).matches(Geometry.of(img), tol=1e-5), (Geometry.of(back), Geometry.of(img))


def test_empty_folder_is_not_a_dicom_series(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path / "empty")


def test_geometry_record_round_trip():
    geo = Geometry.of(_ct())
    assert Geometry.from_dict(geo.to_dict()) == geo
    lo, hi = geo.physical_bounds()
    assert np.all(lo < hi)
    assert "spacing" in geo.describe()


def test_suffix_helpers():
    assert file_suffix("a/b/Case.NII.GZ") == ".nii.gz"
    assert file_suffix("x.seg.nrrd") == ".seg.nrrd"
    assert strip_suffix("case1_layout.seg.nrrd") == "case1_layout"
    assert strip_suffix("case.nii.gz") == "case"


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nope.nrrd")


def test_corrupt_and_truncated_files(tmp_path):
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(InputError, match="cannot read"):
        read_image(bad)
    good = write_image(_ct(), tmp_path / "cut.nrrd", compress=False)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read"):
        read_image(good)


def test_unsupported_suffix(tmp_path):
    p = tmp_path / "image.png"
    p.write_bytes(b"x")
    with pytest.raises(InputError, match="unsupported"):
        read_image(p)
    with pytest.raises(InputError, match="choose one of"):
        write_image(_ct(), tmp_path / "out.png")


def test_2d_and_4d_images_are_refused(tmp_path):
    flat = sitk.GetImageFromArray(np.zeros((30, 30), np.int16))
    write_image(flat, tmp_path / "flat.nrrd")
    with pytest.raises(InputError, match="2D"):
        read_image(tmp_path / "flat.nrrd")
    four = sitk.JoinSeries([_ct(), _ct(seed=1)])
    write_image(four, tmp_path / "four.nrrd")
    with pytest.raises(InputError, match="4D"):
        read_image(tmp_path / "four.nrrd")


def test_non_ct_intensities_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    mr = sitk.GetImageFromArray(rng.integers(0, 4000, (20, 30, 30)).astype(np.int16))
    write_image(mr, tmp_path / "mr.nrrd")
    with pytest.raises(InputError, match="subtract 1024"):
        read_ct(tmp_path / "mr.nrrd")
    unit = sitk.GetImageFromArray(rng.random((20, 30, 30)).astype(np.float32))
    with pytest.raises(InputError, match="normalised"):
        check_ct_intensities(unit)
    nan = rng.normal(-500, 300, (10, 10, 10)).astype(np.float32)
    nan[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        check_ct_intensities(nan)
    check_ct_intensities(_ct())  # a CT passes


def test_memory_check_says_what_is_needed():
    with pytest.raises(InputError, match=r"needs about 4\.0 GiB.*only 1\.0 GiB"):
        check_memory(4 * 2**30, "this volume", available=2**30)
    check_memory(2**20, "a small volume", available=2**30)


def test_huge_volume_refused_before_reading(tmp_path, monkeypatch):
    import LungDDPMLib.data.validation as V

    path = write_image(_ct(), tmp_path / "ct.nrrd")
    monkeypatch.setattr(V, "available_memory_bytes", lambda: 1000)
    with pytest.raises(InputError, match="GiB"):
        read_image(path)


def test_huge_dicom_series_refused_before_reading(tmp_path, monkeypatch, write_dicom_series):
    import LungDDPMLib.data.validation as V

    folder = write_dicom_series(_ct(size=(32, 28, 12), spacing=(0.7, 0.7, 2.0)), tmp_path / "series")
    monkeypatch.setattr(V, "available_memory_bytes", lambda: 1000)
    with pytest.raises(InputError, match=r"DICOM series.*GiB"):
        read_image(folder)


def test_nhdr_detached_header_round_trip(tmp_path):
    img = _ct(size=(20, 18, 10), spacing=(0.6, 0.9, 2.5))
    img.SetDirection(rotated_direction())
    path = tmp_path / "vol.nhdr"
    sitk.WriteImage(img, str(path))
    back = read_image(path)
    assert Geometry.of(back).matches(Geometry.of(img), tol=1e-9)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(img))


def test_write_is_atomic_and_leaves_no_temporary(tmp_path, monkeypatch):
    img = _ct(size=(8, 8, 4))
    path = write_image(img, tmp_path / "out.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]
    before = path.read_bytes()

    def failing_write(image, name, *args):
        Path(name).write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_image(img, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


def _lying_headers(folder: Path) -> Dict[str, Path]:
    """Files whose headers claim 1200^3 float32 voxels (6.9 GB) over a 1 KB payload, in each container."""
    nrrd = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 1200 1200 1200\nencoding: raw\nendian: little\n\n"
    small = folder / "small.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32)), str(small))
    nii = bytearray(small.read_bytes()[:352])
    struct.pack_into("<3h", nii, 42, 1200, 1200, 1200)  # dim[1..3] of the NIfTI-1 header
    files = {
        "big.nrrd": nrrd + bytes(1024),
        "big-gzip.nrrd": nrrd.replace(b"raw", b"gzip") + gzip.compress(bytes(1024)),
        "big.nii": bytes(nii) + bytes(1024),
        "big.nii.gz": gzip.compress(bytes(nii) + bytes(1024)),
        "big.mha": b"ObjectType = Image\nNDims = 3\nDimSize = 1200 1200 1200\nElementType = MET_FLOAT\n"
        b"ElementDataFile = LOCAL\n" + bytes(1024),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def test_header_claiming_more_voxels_than_the_file_holds_fails_before_allocating(tmp_path, monkeypatch):
    import LungDDPMLib.data.validation as V

    monkeypatch.setattr(V, "available_memory_bytes", lambda: 1 << 50)  # the memory check would let it through

    def never(self):
        raise AssertionError("the voxels were read (allocated) before the size check")

    monkeypatch.setattr(sitk.ImageFileReader, "Execute", never)
    claim = r"header claims \(1200, 1200, 1200\) voxels \(6,912,000,000 bytes\)"
    for name, path in _lying_headers(tmp_path).items():
        with pytest.raises(InputError, match=claim) as info:
            read_image(path)
        assert name in str(info.value)


def test_highly_compressed_and_detached_files_still_read(tmp_path):
    """All-zero volumes reach deflate's ~1000:1 limit, which the bound must allow; a detached .mhd is checked
    against its .raw file."""
    zeros = sitk.GetImageFromArray(np.zeros((128, 128, 128), np.uint8))
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        path = write_image(zeros, tmp_path / f"zeros{suffix}", compress=True)
        assert read_image(path).GetSize() == (128, 128, 128)
    sitk.WriteImage(_ct(size=(16, 16, 8)), str(tmp_path / "ok.mhd"))
    assert read_image(tmp_path / "ok.mhd").GetSize() == (16, 16, 8)
    raw = tmp_path / "ok.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(InputError, match=r"data in ok\.raw is only 100 bytes"):
        read_image(tmp_path / "ok.mhd")
