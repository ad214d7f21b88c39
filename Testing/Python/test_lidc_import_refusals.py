"""``lungddpm import-lidc`` refusals: series that are not one evenly spaced axial CT, a missing pydicom, reader XML
that does not belong to the series or does not parse, a failure while writing, outputs in the way and half a command
line are each one clear error, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")

import lidc_fixtures as F

from LungDDPMLib.cli import main
from LungDDPMLib.dicom.lidc_import import import_lidc
from LungDDPMLib.dicom.series import read_ct_series
from LungDDPMLib.errors import InputError

SX, SY, SZ = F.SPACING


# --- the series ------------------------------------------------------------------------------------------------------


def _bad_series(tmp: Path, kind: str) -> None:
    stored = (F.chest_hu() + 1024).astype(np.uint16)
    n = stored.shape[0]
    folder = tmp / "series"
    if kind == "gap":
        F.write_series(folder, stored[:-1], positions=F.positions([SZ] * 6 + [2 * SZ] + [SZ] * (n - 9)))
    elif kind == "duplicate":
        F.write_series(folder, stored, positions=F.positions([SZ] * 6 + [0.0] + [SZ] * (n - 8)))
    elif kind == "uneven":
        F.write_series(folder, stored, positions=F.positions([SZ] * 6 + [SZ * 1.3] + [SZ] * (n - 8)))
    elif kind == "tilt-tag":
        F.write_series(folder, stored, extra={"GantryDetectorTilt": 15.0})
    elif kind == "tilt-drift":
        tilted = [(F.ORIGIN[0], F.ORIGIN[1] + 0.4 * k, F.ORIGIN[2] + k * SZ) for k in range(n)]
        F.write_series(folder, stored, positions=tilted)
    elif kind == "oblique":
        F.write_series(folder, stored, orientation=(1, 0, 0, 0.1, 0.995, 0))
    elif kind == "two-series":
        F.write_series(folder, stored, series_uid="1.2.3.1")
        F.write_series(folder, stored[:3], series_uid="1.2.3.2", prefix="b")
    elif kind == "mr":
        F.write_series(folder, stored, modality="MR")
    elif kind == "junk":
        F.write_series(folder, stored)
        (folder / "junk.dcm").write_bytes(b"not a dicom file at all" * 10)


BAD_SERIES = {
    "gap": "missing slice(s) between z=-90.400 and z=-87.200 mm",
    "duplicate": "duplicate slice position",
    "uneven": "uneven slice spacing: a 2.080 mm step",
    "tilt-tag": "gantry tilt of 15",
    "tilt-drift": "off the stack's normal through the first slice (gantry tilt",
    "oblique": "non-orthogonal ImageOrientationPatient",
    "two-series": "holds 2 series: 1.2.3.1 (20 file(s), CT, e.g. ",
    "mr": "Modality is MR, not CT",
    "junk": "junk.dcm: not a readable DICOM file",
}


@pytest.mark.parametrize("kind", sorted(BAD_SERIES))
def test_bad_series_are_refused_with_one_line_and_nothing_written(tmp_path, capsys, kind) -> None:
    _bad_series(tmp_path, kind)
    # The XML is fine: it names the first of the two series (the series refusal comes first in every case).
    stub = F.Series(tmp_path / "series", "1.2.3.1", "1.2.3", "p", [], [], [])
    (tmp_path / "x.xml").write_text(F.reader_xml(stub, [], [])[0])
    out = tmp_path / "out"
    code = main(
        ["import-lidc", "--dicom", str(tmp_path / "series"), "--xml", str(tmp_path / "x.xml"), "--out", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert BAD_SERIES[kind] in err and str(tmp_path / "series") in err
    assert kind != "two-series" or "1.2.3.2 (3 file(s)" in err
    assert F.nothing_written(out)


def test_a_missing_pydicom_is_met_with_the_install_line(monkeypatch, tmp_path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pydicom", None)
    F.write_series(tmp_path / "s", np.zeros((2, 3, 3), dtype=np.uint16))
    with pytest.raises(InputError, match=r"pip install 'lungddpm\[dicom\]'"):
        read_ct_series(tmp_path / "s")


# --- refusals of the XML and the pairing -----------------------------------------------------------------------------


def _xml_variants(series: F.Series, text: str, kind: str) -> str:
    if kind == "other-series":
        spheres, points = F.four_readers()
        return F.reader_xml(series, spheres, points, series_uid="1.2.840.99")[0]
    if kind == "malformed":
        return text[: len(text) // 2]
    if kind == "outside":
        return text.replace("<xCoord>", "<xCoord>50", 1)  # e.g. 31 -> 5031
    if kind == "no-slice":
        return text.replace(
            f"<imageSOP_UID>{series.sop_uids[10]}</imageSOP_UID>", "<imageSOP_UID>9.9</imageSOP_UID>", 1
        ).replace(f"<imageZposition>{series.z[10]:.6f}</imageZposition>", "<imageZposition>500.0</imageZposition>", 1)
    raise AssertionError(kind)


BAD_XML = {
    "other-series": "is the reader XML of series 1.2.840.99, but ",
    "malformed": "malformed XML",
    "outside": "lies outside the 96x80 image",
    "no-slice": "a mark on z=500.0 mm (SOP Instance UID 9.9) matches no slice",
}


@pytest.mark.parametrize("kind", sorted(BAD_XML))
def test_bad_reader_xml_is_refused_with_one_line_and_nothing_written(tmp_path, capsys, kind) -> None:
    series, xml, *_ = F.make_case(tmp_path)
    xml.write_text(_xml_variants(series, xml.read_text(), kind))
    out = tmp_path / "out"
    assert main(["import-lidc", "--dicom", str(series.folder), "--xml", str(xml), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and str(xml) in err
    assert BAD_XML[kind] in err
    assert F.nothing_written(out)


def test_a_failure_while_writing_leaves_no_output(tmp_path, monkeypatch) -> None:
    import LungDDPMLib.dicom.lidc_import as mod

    series, xml, *_ = F.make_case(tmp_path)

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mod, "write_segmentation", full_disk)
    with pytest.raises(OSError):
        import_lidc(series.folder, xml, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # the CT and layout written first were staged, then removed


def test_earlier_outputs_are_replaced_only_with_overwrite(tmp_path, capsys) -> None:
    series, xml, *_ = F.make_case(tmp_path)
    out = tmp_path / "out"
    argv = ["import-lidc", "--dicom", str(series.folder), "--xml", str(xml), "--out", str(out)]
    (out).mkdir()
    (out / "LIDC-TEST-0001_nodules.csv").write_text("mine")
    assert main(argv) == 1
    assert "LIDC-TEST-0001_nodules.csv exists; remove it" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["LIDC-TEST-0001_nodules.csv"]
    assert main([*argv, "--overwrite"]) == 0 and len(list(out.iterdir())) == 4
    assert (out / "LIDC-TEST-0001_nodules.csv").read_text().startswith("seriesuid,coordX")


def test_the_single_form_needs_both_paths(tmp_path, capsys) -> None:
    assert main(["import-lidc", "--dicom", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "--dicom and --xml go together" in capsys.readouterr().err
