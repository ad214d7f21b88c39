"""DICOM out, bad input: images the writer cannot store faithfully, outputs in the way, unwritable places, a failure
half way, a source off the grid and a bad layout are each one clear error, and nothing is left behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom", reason="pydicom (the dicom extra) is not installed")
hd = pytest.importorskip("highdicom", reason="highdicom (the dicom extra) is not installed")

from dicom_fixtures import (  # noqa: E402
    oblique_ct,
    synthesize,
    workspace,
)
from pydicom.dataset import Dataset  # noqa: E402

from LungDDPMLib.data.io import clean_orphans  # noqa: E402
from LungDDPMLib.dicom.seg import write_layout_seg  # noqa: E402
from LungDDPMLib.dicom.source import read_source_headers  # noqa: E402
from LungDDPMLib.dicom.synthetic_ct import write_synthetic_ct_series  # noqa: E402
from LungDDPMLib.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return workspace(tmp_path_factory.mktemp("dicom_out"))


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "image,message",
    [
        (sitk.Image([8, 8], sitk.sitkInt16), "3D"),
        (sitk.Image([4, 4, 3], sitk.sitkVectorFloat32, 2), "single-component"),
        (sitk.GetImageFromArray(np.full((2, 3, 3), 40000.0, np.float32)), "do not fit 16-bit"),
        (sitk.GetImageFromArray(np.full((2, 3, 3), -40000, np.int32)), "do not fit 16-bit"),
        (sitk.GetImageFromArray(np.full((2, 3, 3), np.nan, np.float32)), "NaN"),
    ],
)
def test_bad_images_are_refused_and_nothing_is_written(tmp_path: Path, image: sitk.Image, message: str) -> None:
    with pytest.raises(InputError, match=message):
        write_synthetic_ct_series(image, tmp_path / "b_dicom", description="bad")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "e_dicom").mkdir()
    (tmp_path / "e_dicom" / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="already exists"):
        write_synthetic_ct_series(oblique_ct(), tmp_path / "e_dicom", description="x")
    assert [p.name for p in (tmp_path / "e_dicom").iterdir()] == ["mine.txt"]
    (tmp_path / "s.dcm").write_text("keep")
    with pytest.raises(InputError, match="already exists"):
        write_layout_seg(oblique_ct(), [], tmp_path / "s.dcm")


def test_an_unwritable_place_is_one_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("in the way")
    with pytest.raises(InputError, match="cannot write the DICOM series"):
        write_synthetic_ct_series(oblique_ct(), tmp_path / "a_file" / "s_dicom", description="x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_failure_half_way_leaves_no_series(tmp_path: Path, monkeypatch) -> None:
    real, written = Dataset.save_as, []

    def failing(self, *args, **kwargs):
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        written.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_as", failing)
    with pytest.raises(InputError, match="nothing was left"):
        write_synthetic_ct_series(oblique_ct(), tmp_path / "h_dicom", description="x")
    assert list(tmp_path.iterdir()) == []


def test_a_source_off_the_image_grid_is_refused(ws: Path, tmp_path: Path) -> None:
    from LungDDPMLib.data.io import read_ct

    ct = read_ct(ws / "src")
    ct.SetOrigin([v + 1.0 for v in ct.GetOrigin()])
    with pytest.raises(InputError, match="not on the source series' grid"):
        write_synthetic_ct_series(ct, tmp_path / "o_dicom", source=read_source_headers(ws / "src"), description="x")
    assert list(tmp_path.iterdir()) == []


def test_a_bad_layout_is_refused_for_the_seg(tmp_path: Path) -> None:
    ct = oblique_ct()
    files = write_synthetic_ct_series(ct, tmp_path / "l_dicom", description="x")
    lay = sitk.GetImageFromArray(np.full((7, 9, 11), 7, np.uint8))
    lay.CopyInformation(ct)
    with pytest.raises(InputError, match=r"label values \[7\]"):
        write_layout_seg(lay, files, tmp_path / "l_seg.dcm")
    shifted = sitk.GetImageFromArray(np.ones((7, 9, 11), np.uint8))
    shifted.CopyInformation(ct)
    shifted.SetOrigin([v + 5.0 for v in ct.GetOrigin()])
    with pytest.raises(InputError, match="not on the synthetic series' grid"):
        write_layout_seg(shifted, files, tmp_path / "l_seg.dcm")
    assert not (tmp_path / "l_seg.dcm").exists()


def test_orphan_series_folders_of_dead_runs_are_cleaned(tmp_path: Path) -> None:
    dead = tmp_path / ".case_dicom.999999999.partial"
    dead.mkdir()
    (dead / "slice_0001.dcm").write_bytes(b"x")
    mine = tmp_path / f".other_dicom.{os.getpid()}.partial"
    mine.mkdir()
    assert clean_orphans(tmp_path) == [dead]
    assert not dead.exists() and mine.exists()


def test_without_the_dicom_extra_the_run_stops_before_sampling_with_the_install_line(
    ws: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom -> ImportError
    assert synthesize(ws, "--out", str(tmp_path / "case"), "--format", "dicom") == 1
    err = capsys.readouterr().err
    assert "pip install 'lungddpm[dicom]'" in err
    assert list(tmp_path.iterdir()) == []
