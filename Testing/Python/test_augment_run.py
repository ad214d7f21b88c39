"""`lungddpm augment` end to end on a user-like folder (mixed names and suffixes, an oblique anisotropic case) with
a tiny real ROI model: new nodules only where they may go, the rest of each CT bit-exact, provenance, resuming, an
nnU-Net v2 dataset its own checker accepts, a MONAI datalist, folds without leakage, and one-line refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage as ndi

from LungDDPMLib.checkpoint import save_checkpoint
from LungDDPMLib.cli import main
from LungDDPMLib.config import CONDITION_CHANNELS, NODULE_TYPES, ModelConfig, UNetConfig, is_nodule
from LungDDPMLib.data.context import ROI_MARGIN_MM
from LungDDPMLib.data.io import write_image
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.phantom import NoduleSpec, make_phantom

FAST = ["--steps", "2", "--precision", "fp32", "--diameter-mm", "5:9", "--nodules-per-variant", "1:2"]


def _oblique(image: sitk.Image) -> None:
    a, b = np.deg2rad(25.0), np.deg2rad(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    image.SetDirection(tuple((rz @ rx).ravel()))
    image.SetOrigin((12.0, -30.0, 40.0))


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Dict[str, Path]:
    """A user's folders: three cases named and typed differently, one oblique and anisotropic, one without nodules;
    and a tiny ROI model that sees the CT context, as the bundled one does."""
    root = tmp_path_factory.mktemp("augment")
    cts, layouts = root / "cts", root / "layouts"
    alpha = make_phantom((48, 48, 32), (2.5, 2.5, 3.0), seed=1, nodules=[NoduleSpec(8, "solid", side="left")])
    beta = make_phantom((48, 48, 32), (2.5, 2.5, 3.0), seed=2, nodules=0)
    gamma = make_phantom((48, 40, 32), (2.4, 2.9, 3.2), seed=3, nodules=[NoduleSpec(7, "ground-glass", side="right")])
    for image in (gamma.ct, gamma.layout):
        _oblique(image)
    write_image(alpha.ct, cts / "alpha_ct.nii.gz")
    write_image(alpha.layout, layouts / "alpha_label.nrrd")
    write_image(beta.ct, cts / "Beta.mha")
    write_image(beta.layout, layouts / "beta.nii.gz")
    write_image(gamma.ct, cts / "gamma.nrrd")
    write_image(gamma.layout, layouts / "gamma_seg.nii.gz")
    unet = UNetConfig(model_channels=8, channel_mult=(1, 2), attention_levels=(), layout_channels=CONDITION_CHANNELS)
    cfg = ModelConfig(
        unet=unet, grid=(8, 16, 16), normalization="hu-window", spatial_mode="roi", nodule_types=NODULE_TYPES
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DiffusionModel(cfg)
    ckpt = save_checkpoint(root / "roi.pt", model, ema=model)
    sources = {"alpha": cts / "alpha_ct.nii.gz", "beta": cts / "Beta.mha", "gamma": cts / "gamma.nrrd"}
    source_layouts = {"alpha": layouts / "alpha_label.nrrd", "beta": layouts / "beta.nii.gz"}
    source_layouts["gamma"] = layouts / "gamma_seg.nii.gz"
    paths = {"root": root, "cts": cts, "layouts": layouts, "ckpt": Path(ckpt)}
    paths.update({f"ct:{k}": v for k, v in sources.items()})
    return {**paths, **{f"layout:{k}": v for k, v in source_layouts.items()}}


def _args(f: Dict[str, Path], out: Path, *extra: str) -> list:
    base = ["augment", "--ct-dir", str(f["cts"]), "--layout-dir", str(f["layouts"]), "--out", str(out)]
    return [*base, "--variants", "2", "--checkpoint", str(f["ckpt"]), *FAST, *extra]


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def nifti_run(user_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("nifti") / "out"
    assert main(_args(user_folder, out)) == 0
    return out


def test_variants_add_nodules_only_where_they_may_go_and_keep_the_rest_bit_exact(user_folder, nifti_run) -> None:
    for case in ("alpha", "beta", "gamma"):
        src_image = sitk.ReadImage(str(user_folder[f"ct:{case}"]))
        src_ct = sitk.GetArrayFromImage(src_image)
        src_labels = _array(user_folder[f"layout:{case}"])
        spacing = np.asarray(src_image.GetSpacing()[::-1])
        for k in (1, 2):
            ct_image = sitk.ReadImage(str(nifti_run / f"{case}_v{k}_ct.nii.gz"))
            ct, labels = sitk.GetArrayFromImage(ct_image), _array(nifti_run / f"{case}_v{k}_layout.nii.gz")
            assert np.allclose(ct_image.GetDirection(), src_image.GetDirection())  # the case's own (oblique) grid
            assert np.allclose(ct_image.GetSpacing(), src_image.GetSpacing())
            new = is_nodule(labels) & ~is_nodule(src_labels)
            assert new.any()
            assert (src_labels[new] == 1).all()  # every new voxel was lung
            existing = is_nodule(src_labels)
            assert np.array_equal(labels[existing], src_labels[existing])  # existing nodules stay, in both
            assert np.array_equal(ct[existing], src_ct[existing])
            assert (labels[~new] == src_labels[~new]).all()
            if existing.any():
                assert ndi.distance_transform_edt(~existing, sampling=spacing)[new].min() > ROI_MARGIN_MM + 5.0
            region = (ndi.distance_transform_edt(~new, sampling=spacing) <= ROI_MARGIN_MM) & (src_labels > 0)
            assert np.array_equal(ct[~region], src_ct[~region])  # outside the new nodules + margin: bit-exact
            assert not np.array_equal(ct[new], src_ct[new])  # the model drew the nodules


def test_every_variant_records_its_source_seeds_nodules_sampler_and_model(user_folder, nifti_run) -> None:
    model_sha = hashlib.sha256(user_folder["ckpt"].read_bytes()).hexdigest()
    seeds = set()
    manifest = json.loads((nifti_run / "augment_manifest.json").read_text())
    assert sorted(c["case"] for c in manifest["cases"]) == [
        f"{c}_v{k}" for c in ("alpha", "beta", "gamma") for k in (1, 2)
    ]
    for case in ("alpha", "beta", "gamma"):
        geo_image = sitk.ReadImage(str(user_folder[f"ct:{case}"]))
        for k in (1, 2):
            record = json.loads((nifti_run / f"{case}_v{k}.json").read_text())
            assert record["source_case"] == case and record["variant"] == k and record["synthetic"] is True
            assert record["model"]["sha256"] == model_sha
            assert record["sampler"] == {"name": "dpm++", "steps": 2, "eta": 0.0, "levels": None}
            assert record["seeds"]["run"] == 0 and record["seeds"]["sampling"] == record["seeds"]["variant"]
            seeds.add(record["seeds"]["variant"])
            assert record["inputs"]["ct"]["path"] == str(user_folder[f"ct:{case}"].resolve())
            labels = _array(nifti_run / f"{case}_v{k}_layout.nii.gz")
            src = _array(user_folder[f"layout:{case}"])
            blobs, n = ndi.label(is_nodule(labels) & ~is_nodule(src))
            assert n == len(record["nodules"]) >= 1
            for nodule in record["nodules"]:
                assert 5.0 <= nodule["diameter_mm"] <= 9.0 and nodule["kind"] in NODULE_TYPES
                index = geo_image.TransformPhysicalPointToIndex(nodule["center_mm"])
                at = blobs[index[::-1]] if blobs[index[::-1]] else None
                if at is not None:  # the centre lies in its blob (a juxta-pleural one may be cut at the wall)
                    assert (labels[blobs == at] == nodule["label"]).all()
                    assert (blobs == at).sum() == nodule["label_voxels"]
    assert len(seeds) == 6


def test_rerun_skips_finished_variants_and_redoes_a_half_written_one(user_folder, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(_args(user_folder, out)) == 0
    capsys.readouterr()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    first = _array(out / "beta_v2_ct.nii.gz")
    assert main(_args(user_folder, out)) == 0
    err = capsys.readouterr().err
    assert err.count("skipped (already done") == 6 and "0 written, 6 skipped" in err
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in out.iterdir() if p.name != "augment_manifest.json")
    # Half written: the claim record and the CT are there, the layout is not.
    record = json.loads((out / "beta_v2.json").read_text())
    record["completion"]["state"] = "writing"
    (out / "beta_v2.json").write_text(json.dumps(record))
    (out / "beta_v2_layout.nii.gz").unlink()
    assert main(_args(user_folder, out)) == 0
    err = capsys.readouterr().err
    assert "1 written, 5 skipped" in err and "beta_v2: skipped" not in err
    assert np.array_equal(_array(out / "beta_v2_ct.nii.gz"), first)  # the same seed draws the same variant
    assert (out / "beta_v2_layout.nii.gz").is_file()
    assert json.loads((out / "beta_v2.json").read_text())["completion"]["state"] == "complete"


def _source_of(dataset: Path) -> Dict[str, str]:
    return {p.stem: json.loads(p.read_text())["source_case"] for p in sorted((dataset / "provenance").glob("*.json"))}


def test_nnunet_dataset_passes_nnunets_check_and_its_folds_do_not_leak(user_folder, tmp_path, monkeypatch) -> None:
    out = tmp_path / "raw"
    assert main(_args(user_folder, out, "--format", "nnunet", "--dataset-id", "7", "--name", "Lung",
                      "--labels", "classes", "--types", "solid=0.5,ground-glass=0.5,part-solid=0")) == 0  # fmt: skip
    dataset = out / "Dataset007_Lung"
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "CT"} and info["file_ending"] == ".nii.gz" and info["numTraining"] == 9
    assert info["labels"] == {"background": 0, "solid": 1, "part-solid": 2, "ground-glass": 3}
    names = sorted(p.name for p in (dataset / "imagesTr").iterdir())
    assert names == sorted(f"{c}{v}_0000.nii.gz" for c in ("alpha", "beta", "gamma") for v in ("", "_v1", "_v2"))
    gamma_label = _array(dataset / "labelsTr" / "gamma.nii.gz")
    assert set(np.unique(gamma_label)) == {0, 3}  # the real ground-glass nodule, lung as background
    real_ct = sitk.ReadImage(str(user_folder["ct:gamma"]))
    written = sitk.ReadImage(str(dataset / "imagesTr" / "gamma_0000.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(real_ct))
    assert np.allclose(written.GetDirection(), real_ct.GetDirection(), atol=1e-5)

    # Folds, checked independently from the provenance: no fold trains on a variant of a case it validates on.
    source = _source_of(dataset)
    assert set(source) == {n[: -len("_0000.nii.gz")] for n in names}
    splits = json.loads((dataset / "splits_final.json").read_text())
    assert len(splits) == 3  # fewer than 5 real cases: one fold per real case
    assert sorted(c for s in splits for c in s["val"]) == ["alpha", "beta", "gamma"]
    for split in splits:
        held_out = {source[c] for c in split["val"]}
        assert all(source[c] not in held_out for c in split["train"])
        assert set(split["train"]) == {c for c in source if source[c] not in held_out}

    from monai.data import load_decathlon_datalist

    datalist = dataset / "monai_datalist.json"
    entries = load_decathlon_datalist(str(datalist), True, "training")
    assert sorted(Path(e["image"]).name for e in entries) == names
    for fold in range(3):
        train = [e for e in entries if e["fold"] != fold]
        val = [e for e in entries if e["fold"] == fold]
        assert {e["source_case"] for e in train}.isdisjoint({e["source_case"] for e in val})
        for e in train + val:
            assert Path(e["image"]).is_file() and Path(e["label"]).is_file()
            assert Path(e["image"]).parent == dataset / "imagesTr"

    nnunetv2 = pytest.importorskip("nnunetv2", reason="nnunetv2 (requirements-ci.txt) is not installed")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    assert nnunetv2.__file__
    verify_dataset_integrity(str(dataset), 1)  # raises on any problem
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "labelsTr" / "gamma_v1.nii.gz")))
    (dataset / "labelsTr" / "gamma_v1.nii.gz").unlink()  # the checker can fail: a missing label is caught
    with pytest.raises(AssertionError):
        verify_dataset_integrity(str(dataset), 1)
    assert label.max() >= 1


def _nothing_written(out: Path) -> bool:
    return not out.exists() or not any(out.rglob("*"))


def test_bad_inputs_are_one_line_and_write_nothing(user_folder, tmp_path, capsys) -> None:
    f = user_folder
    out = tmp_path / "out"

    def refused(args: list, expected: str) -> None:
        assert main(args) == 1
        err = capsys.readouterr().err.strip()
        last = err.splitlines()[-1]
        assert last.startswith("error: ") and err.count("error") == 1 and "Traceback" not in err, err
        assert expected in last, err
        assert _nothing_written(out)

    refused([*_args(f, out)[: -len(FAST)], "--variants", "0"], "--variants must be a whole number >= 1")
    refused(_args(f, out, "--types", "solid=0.6,blob=0.4"), "nodule mix entry 'blob=0.4'")
    refused(
        _args(f, out, "--nodules-per-variant", "20", "--diameter-mm", "13:13", "--gap-mm", "10"), "no room for a 13 mm"
    )
    refused(_args(f, out, "--diameter-mm", "25:25"), "does not fit the model's patch")
    refused(_args(f, out, "--format", "nnunet", "--name", "Lung"), "--dataset-id")

    lonely = tmp_path / "lonely"
    shutil.copytree(f["cts"], lonely / "cts")
    shutil.copytree(f["layouts"], lonely / "layouts")
    shutil.copy(f["ct:alpha"], lonely / "cts" / "delta.nii.gz")
    refused(_args({**f, "cts": lonely / "cts", "layouts": lonely / "layouts"}, out), "delta.nii.gz")

    (lonely / "cts" / "delta.nii.gz").unlink()
    no_lung = _array(f["layout:beta"])
    no_lung[no_lung == 1] = 0
    image = sitk.GetImageFromArray(no_lung)
    image.CopyInformation(sitk.ReadImage(str(f["layout:beta"])))
    write_image(image, lonely / "layouts" / "beta.nii.gz")
    refused(_args({**f, "cts": lonely / "cts", "layouts": lonely / "layouts"}, out), "case 'beta'")


def test_an_output_of_another_run_is_refused_untouched(user_folder, tmp_path, capsys) -> None:
    out = tmp_path / "raw"
    nn = ["--format", "nnunet", "--dataset-id", "9", "--name", "Mine"]
    foreign = out / "Dataset009_Mine"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("my own dataset")
    assert main(_args(user_folder, out, *nn)) == 1
    assert "was not written by lungddpm augment" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    other = tmp_path / "other"
    assert main(_args(user_folder, other, "--variants", "1")) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in other.rglob("*")}
    assert main(_args(user_folder, other, "--variants", "1", "--seed", "3")) == 1
    err = capsys.readouterr().err
    assert "holds the output of another augment run (seed 0 -> 3)" in err
    assert {p: p.stat().st_mtime_ns for p in other.rglob("*")} == before


def test_dicom_variants_are_marked_synthetic_series_with_their_layout_as_seg(user_folder, tmp_path) -> None:
    """--format dicom: each variant a CT series whose HU are the variant's, every slice marked synthetic, and a SEG
    whose masks are its layout; the NIfTI run of the same settings gives the same voxels."""
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("highdicom")
    out = tmp_path / "dicom"
    assert main(_args(user_folder, out, "--format", "dicom")) == 0
    nifti = tmp_path / "nifti"
    assert main(_args(user_folder, nifti)) == 0
    folders = sorted(out.glob("*_dicom"))
    assert [f.name for f in folders] == [f"{c}_v{k}_dicom" for c in ("alpha", "beta", "gamma") for k in (1, 2)]
    for folder in folders:
        case = folder.name[: -len("_dicom")]
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        series = sitk.GetArrayFromImage(reader.Execute())
        assert np.array_equal(series, _array(nifti / f"{case}_ct.nii.gz").astype(series.dtype))
        for path in folder.iterdir():
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            assert ds.SyntheticData == "YES" and ds.SeriesDescription.startswith("SYNTHETIC")
        seg = pydicom.dcmread(str(out / f"{case}_seg.dcm"))
        assert seg.Modality == "SEG"
        assert json.loads((out / f"{case}.json").read_text())["source_case"] == case.rsplit("_v", 1)[0]
