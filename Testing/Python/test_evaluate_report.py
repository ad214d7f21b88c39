"""``lungddpm evaluate`` end to end on phantom files with known answers, and its bad-input handling."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LungDDPMLib.cli import main
from LungDDPMLib.data.io import write_image
from LungDDPMLib.errors import InputError
from LungDDPMLib.evaluation.matching import case_key, match
from LungDDPMLib.evaluation.patches import patch_boxes
from LungDDPMLib.phantom import make_phantom, save_phantom

SIZE, SPACING = (48, 48, 32), (4.0, 4.0, 6.0)


def _shifted(ct: sitk.Image, layout: sitk.Image, label: int, shift: int) -> sitk.Image:
    """The CT with ``shift`` HU added inside ``label`` (exact in int16)."""
    a = sitk.GetArrayFromImage(ct).astype(np.int16)
    a[sitk.GetArrayFromImage(layout) == label] += shift
    out = sitk.GetImageFromArray(a)
    out.CopyInformation(ct)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Three real phantoms (one without nodules) with layouts; synthetic = lung +50 HU; case 1 has two samples."""
    root = tmp_path_factory.mktemp("evaluate")
    real, synth = root / "real", root / "synthetic"
    phantoms = {}
    for seed, nodules in ((1, 2), (2, 1), (3, 0)):
        ph = make_phantom(SIZE, SPACING, seed=seed, nodules=nodules)
        save_phantom(real, ph, name=f"case{seed}")
        phantoms[seed] = ph
    write_image(_shifted(phantoms[1].ct, phantoms[1].layout, 1, 50), synth / "case1_synthetic_0.nrrd")
    write_image(_shifted(phantoms[1].ct, phantoms[1].layout, 1, 60), synth / "case1_synthetic_1.nrrd")
    write_image(_shifted(phantoms[2].ct, phantoms[2].layout, 1, 50), synth / "case2_synthetic.nrrd")
    write_image(_shifted(phantoms[3].ct, phantoms[3].layout, 1, 50), synth / "case3_synthetic.nrrd")
    return {"root": root, "real": real, "synthetic": synth, "phantoms": phantoms}


def test_case_keys_and_matching(files) -> None:
    assert case_key("a/case7_ct.nrrd") == "case7"
    assert case_key("case7_layout.seg.nrrd") == "case7"
    assert case_key("case7_synthetic_2.nii.gz") == "case7"
    assert case_key("Case7.nrrd") == "case7"
    real = sorted(files["real"].glob("*_ct.nrrd"))
    synth = sorted(files["synthetic"].glob("*.nrrd"))
    pairing = match(real, synth)
    assert pairing.how == "by case name" and len(pairing.pairs) == 4
    assert {Path(p["real"]).name for p in pairing.pairs} == {"case1_ct.nrrd", "case2_ct.nrrd", "case3_ct.nrrd"}
    one = match(real[:1], [files["synthetic"] / "other.nrrd"])
    assert one.how == "all samples of one real CT" and "other.nrrd" in one.note  # never a silent guess
    with pytest.raises(InputError, match=r"case2_synthetic.nrrd are named after another case"):
        match(real[:1], [files["synthetic"] / "case1_synthetic.nrrd", files["synthetic"] / "case2_synthetic.nrrd"])
    none = match(real, [Path("x.nrrd"), Path("y.nrrd")])
    assert none.how == "none" and "only set metrics" in none.note


def test_evaluate_report_known_answers(files, capsys) -> None:
    out = files["root"] / "report"
    rc = main(
        ["evaluate", "--real", str(files["real"]), "--synthetic", str(files["synthetic"]),
         "--layout", str(files["real"]), "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["pairing"]["how"] == "by case name" and len(report["pairs"]) == 4
    by_name = {Path(p["synthetic"]).name: p for p in report["pairs"]}
    for name, shift in (("case1_synthetic_0.nrrd", 50), ("case1_synthetic_1.nrrd", 60), ("case3_synthetic.nrrd", 50)):
        r = by_name[name]["regions"]
        assert r["lung"]["mae_hu"] == pytest.approx(shift) and r["lung"]["w1_hu"] == pytest.approx(shift)
        assert r["kept"]["mae_hu"] == 0 and r["kept"]["mse_hu"] == 0
        assert by_name[name]["layout"].endswith("_layout.nrrd")  # the label map, not the .seg.nrrd
    empty = by_name["case3_synthetic.nrrd"]["regions"]["nodule"]
    assert empty["voxels"] == 0 and empty["mae_hu"] is None and empty["ssim"] is None  # not applicable, not NaN
    assert report["summary"]["lung"]["mae_hu"] == pytest.approx((50 + 60 + 50 + 50) / 4)
    assert report["summary"]["nodule"]["mae_hu"] == 0  # nodules untouched; the empty one is skipped
    # Diversity: the two samples of case1 differ by exactly 10 HU in the lung and not at all in the nodules.
    div = report["diversity"]
    case1 = next(v for k, v in div.items() if k.endswith("case1_ct.nrrd"))
    assert case1 is not None and 0 < case1["mean_pairwise_mae_hu"] <= 10
    assert all(v is None for k, v in div.items() if not k.endswith("case1_ct.nrrd"))
    sets = report["set_metrics"]
    assert sets["status"] == "ok" and sets["n_real"] == 3 and sets["n_synthetic"] == 4
    assert sets["fid"] > 0 and np.isfinite(sets["mmd2"]) and sets["comparable_with_paper"] is False
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 5
    nod = [r for r in rows if r["synthetic"].endswith("case3_synthetic.nrrd") and r["region"] == "nodule"]
    assert nod[0]["mae_hu"] == "NA"
    for name in ["figures/histograms.png", *report["pairs"][0]["figures"]]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "histograms.csv").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind
    assert "FID" in capsys.readouterr().out


def test_identical_sets_have_zero_fid(files, tmp_path, capsys) -> None:
    real = sorted(str(p) for p in files["real"].glob("*_ct.nrrd"))
    rc = main(
        ["evaluate", "--real", *real, "--synthetic", *real, "--layout", str(files["real"]), "--out", str(tmp_path)]
    )
    assert rc == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    sets = report["set_metrics"]
    assert sets["fid"] == pytest.approx(0.0, abs=1e-6)
    # 3 volumes for dozens of features: the console carries the same caveat as metrics.json, next to the numbers.
    assert sets["fid_reliable"] is False and "FID is unreliable here: 3 samples per set" in sets["note"]
    out = capsys.readouterr().out.splitlines()
    fid_line = next(i for i, line in enumerate(out) if line.startswith("FID "))
    assert out[fid_line + 1] == f"note: {sets['note']}"
    assert report["summary"]["whole"]["mae_hu"] == 0 and report["summary"]["whole"]["psnr_db"] == "inf"


def test_geometry_mismatch_refused_then_resampled(files, tmp_path, capsys) -> None:
    ph = files["phantoms"][1]
    moved = sitk.Image(ph.ct)
    moved.SetSpacing((4.4, 4.4, 6.0))
    synth = write_image(moved, tmp_path / "in" / "case1_synthetic.nrrd")
    args = ["evaluate", "--real", str(files["real"] / "case1_ct.nrrd"), "--synthetic", str(synth),
            "--layout", str(files["real"] / "case1_layout.nrrd"), "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "not on the grid" in err and "--geometry resample" in err
    assert not (tmp_path / "out" / "metrics.json").exists() and not list((tmp_path / "out").iterdir())
    assert main([*args, "--geometry", "resample"]) == 0
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["pairs"][0]["resampled"] is True


def test_sets_too_small_and_non_ct(files, tmp_path, capsys) -> None:
    real = str(files["real"] / "case2_ct.nrrd")
    synth = str(files["synthetic"] / "case2_synthetic.nrrd")
    base = ["evaluate", "--real", real, "--synthetic", synth, "--out", str(tmp_path / "a")]
    assert main(base) == 0
    sets = json.loads((tmp_path / "a" / "metrics.json").read_text())["set_metrics"]
    assert sets["status"] == "not applicable" and "at least 2" in sets["reason"]
    assert main([*base, "--set-metrics", "on"]) == 1
    assert "at least 2 samples in each set" in capsys.readouterr().err
    assert main([*base, "--set-unit", "patch", "--set-metrics", "on"]) == 0  # patches make one pair enough
    sets = json.loads((tmp_path / "a" / "metrics.json").read_text())["set_metrics"]
    assert sets["status"] == "ok" and sets["unit"] == "patch" and sets["n_real"] == sets["n_synthetic"] >= 2
    prob = sitk.GetImageFromArray(np.random.default_rng(0).random((32, 48, 48)).astype(np.float32))
    prob.CopyInformation(files["phantoms"][2].ct)
    bad = write_image(prob, tmp_path / "prob.nrrd")
    assert main(["evaluate", "--real", real, "--synthetic", str(bad), "--out", str(tmp_path / "b")]) == 1
    assert "Hounsfield units" in capsys.readouterr().err


@pytest.mark.parametrize("unit", ["paired", "unpaired"])
def test_nan_synthetic_is_refused_naming_the_synthetic_file(files, tmp_path, capsys, unit) -> None:
    ph = files["phantoms"][2]
    arr = sitk.GetArrayFromImage(ph.ct).astype(np.float32)
    arr[3, 4, 5:9] = np.nan
    nan = sitk.GetImageFromArray(arr)
    nan.CopyInformation(ph.ct)
    if unit == "paired":
        bad = write_image(nan, tmp_path / "case2_synthetic.nrrd")
        reals, synthetic = [str(files["real"] / "case2_ct.nrrd")], [str(bad)]
    else:  # no names in common: set metrics only, whole-volume features of every synthetic file
        bad = write_image(nan, tmp_path / "x.nrrd")
        for name in ("y.nrrd", "z.nrrd"):
            write_image(ph.ct, tmp_path / name)
        reals = [str(files["real"] / "case1_ct.nrrd"), str(files["real"] / "case2_ct.nrrd")]
        synthetic = [str(tmp_path / n) for n in ("y.nrrd", "x.nrrd", "z.nrrd")]
    rc = main(["evaluate", "--real", *reals, "--synthetic", *synthetic, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"the synthetic CT {bad} has 4 NaN or infinite voxels" in err and "before synthesis" not in err


def test_patch_grid_is_deterministic_and_respects_fill() -> None:
    mask = np.zeros((40, 40, 40), dtype=bool)
    mask[5:35, 5:35, 5:25] = True
    boxes = list(patch_boxes(mask, (2.0, 2.0, 2.0), patch_mm=20.0, min_fill=0.5))
    assert boxes == list(patch_boxes(mask, (2.0, 2.0, 2.0), patch_mm=20.0, min_fill=0.5))
    assert len(boxes) == 3 * 3 * 2 and all(mask[b].mean() >= 0.5 for b in boxes)
    assert all(b[0].stop - b[0].start == 10 for b in boxes)  # 20 mm at 2 mm
    assert not list(patch_boxes(np.zeros_like(mask), (2.0, 2.0, 2.0)))


def test_partial_name_matches_are_refused_and_single_layouts_are_not_shared_by_name(files) -> None:
    real = sorted(files["real"].glob("*_ct.nrrd"))
    with pytest.raises(InputError, match="match no real CT by case name"):
        match(real, [files["synthetic"] / "case2_synthetic.nrrd", Path("other_synthetic.nrrd")])
    case1_layout = files["real"] / "case1_layout.nrrd"
    with pytest.raises(InputError, match=r"no layout matches the real CT case2_ct\.nrrd"):
        match(real, sorted(files["synthetic"].glob("*.nrrd")), [case1_layout])
    shared = match(real[:1], [Path("s.nrrd")], [files["real"] / "case2_layout.nrrd"])  # one real CT: its layout
    assert shared.pairs[0]["layout"].name == "case2_layout.nrrd"


def test_real_cts_without_samples_still_count_in_the_reference_set(files, tmp_path) -> None:
    rc = main(["evaluate", "--real", str(files["real"]), "--layout", str(files["real"]),
               "--synthetic", str(files["synthetic"] / "case1_synthetic_0.nrrd"),
               str(files["synthetic"] / "case1_synthetic_1.nrrd"), "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    sets = json.loads((tmp_path / "metrics.json").read_text())["set_metrics"]
    assert sets["status"] == "ok" and sets["n_real"] == 3 and sets["n_synthetic"] == 2


# ----------------------------------------------------------------------------------------- kinds of run
@pytest.fixture(scope="module")
def two_runs(files, tmp_path_factory) -> dict:
    """Real outputs of two kinds of run for the same cases: model A with dpm++ 2 steps, model B with ddim 3 steps."""
    import torch

    from LungDDPMLib.checkpoint import save_checkpoint
    from LungDDPMLib.config import preset
    from LungDDPMLib.diffusion import DiffusionModel
    from LungDDPMLib.worker import Case, Job, run_job

    root = tmp_path_factory.mktemp("two_runs")
    runs = {}
    for name, sampler, steps, seed in (("a", "dpm++", 2, 0), ("b", "ddim", 3, 1)):
        torch.manual_seed(seed)
        model = DiffusionModel(preset("tiny", grid=(16, 16, 16), crop="lung"))
        save_checkpoint(root / f"{name}.pt", model, ema=model)
        cases = [Case(f"case{k}", str(files["real"] / f"case{k}_ct.nrrd"), str(files["real"] / f"case{k}_layout.nrrd"),
                      str(root / name / f"case{k}_synthetic")) for k in (1, 2)]  # fmt: skip
        job = Job(cases=cases, checkpoint=str(root / f"{name}.pt"), sampler=sampler, steps=steps, device="cpu")
        events: list = []
        assert run_job(job, events.append) == 0, [e for e in events if e["type"] == "error"]
        runs[name] = root / name
    return runs


def test_outputs_of_different_runs_are_summarised_apart_never_pooled(files, two_runs, tmp_path, capsys) -> None:
    untracked = files["synthetic"] / "case3_synthetic.nrrd"  # no provenance: a kind of its own
    rc = main(["evaluate", "--real", str(files["real"]), "--layout", str(files["real"]), "--synthetic",
               str(two_runs["a"]), str(two_runs["b"]), str(untracked), "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    groups = report["groups"]
    labels = [g["label"] for g in groups]
    assert len(groups) == 3 and "no provenance" in labels
    by_sampler = {g["kind"]["sampler"]: g for g in groups if g["kind"]}
    assert by_sampler["dpm++"]["kind"]["steps"] == 2 and by_sampler["ddim"]["kind"]["steps"] == 3
    assert by_sampler["dpm++"]["kind"]["model_sha256"] != by_sampler["ddim"]["kind"]["model_sha256"]
    assert all(g["kind"]["mode"] == "full" for g in by_sampler.values())
    assert report["summary"] is None and report["set_metrics"]["status"] == "per group"  # nothing pooled
    for g in groups:  # each group's mean is over its own pairs only
        own = [p for p in report["pairs"] if p["group"] == g["group"]]
        assert g["pairs"] == len(own) == g["synthetic"]
        mean = np.mean([p["regions"]["lung"]["mae_hu"] for p in own])
        assert g["summary"]["lung"]["mae_hu"] == pytest.approx(mean)
    assert by_sampler["dpm++"]["set_metrics"]["n_synthetic"] == 2 == by_sampler["ddim"]["set_metrics"]["n_synthetic"]
    with open(tmp_path / "metrics.csv") as f:
        assert {r["group"] for r in csv.DictReader(f)} == {"0", "1", "2"}
    out = capsys.readouterr().out
    for g in groups:
        assert f"group {g['group']}: {g['label']}" in out
    assert sorted(report["figures"]) == [f"figures/histograms_group{g}.png" for g in range(3)]
    rc = main(["evaluate", "--real", str(files["real"]), "--layout", str(files["real"]),
               "--synthetic", str(two_runs["a"]), "--out", str(tmp_path)])  # fmt: skip
    report = json.loads((tmp_path / "metrics.json").read_text())  # one kind: the summary as before
    assert rc == 0 and len(report["groups"]) == 1 and report["summary"] == report["groups"][0]["summary"]
    assert report["figures"] == ["figures/histograms.png"] and not list(tmp_path.glob("figures/histograms_group*"))


# ---------------------------------------------------------------------------------------------- figures
def test_the_montage_says_what_it_shows(files) -> None:
    from LungDDPMLib.data.preview import WINDOWS
    from LungDDPMLib.evaluation.figures import DIFF_SCALE_HU, montage_figure

    ph = files["phantoms"][1]
    real = sitk.GetArrayFromImage(ph.ct).astype(np.float32)
    synthetic = sitk.GetArrayFromImage(_shifted(ph.ct, ph.layout, 1, 50)).astype(np.float32)
    fig = montage_figure(real, synthetic, sitk.GetArrayFromImage(ph.layout), (6.0, 4.0, 4.0), "lung",
                         case="case1", sample="case1_synthetic_0.nrrd")  # fmt: skip
    title = fig._suptitle.get_text()
    assert "case1" in title and "case1_synthetic_0.nrrd" in title and "the largest nodule" in title
    assert "lung window (level -600, width 1500 HU)" in title
    images = [ax for ax in fig.axes if ax.images]
    titles = sorted(ax.get_title() for ax in images)
    assert len(images) == 6 and sum("axial" in t for t in titles) == 3 and sum("coronal" in t for t in titles) == 3
    assert {t.split(",")[0] for t in titles} == {"real", "synthetic", "|synthetic - real|"}
    level, width = WINDOWS["lung"]
    window = (level - width / 2, level + width / 2)
    for kind, label, clim in (("ct", "HU", window), ("diff", "|difference| HU", (0.0, DIFF_SCALE_HU))):
        shown = [ax.images[0] for ax in images if ax.get_title().startswith("|") == (kind == "diff")]
        [bar] = [im.colorbar for im in shown if im.colorbar is not None]  # one bar for the panels of one scale
        assert bar.ax.get_ylabel() == label and all(im.get_clim() == clim for im in shown), kind


def test_a_layout_of_nodules_alone_is_read_as_the_synthesis_read_it(files, tmp_path, capsys) -> None:
    ph = files["phantoms"][2]
    lay = sitk.GetArrayFromImage(ph.layout)
    nodules = sitk.GetImageFromArray(np.where(lay >= 2, lay, 0).astype(np.uint8))
    nodules.CopyInformation(ph.layout)
    layout = write_image(nodules, tmp_path / "case2_layout.nrrd")
    args = ["evaluate", "--real", str(files["real"] / "case2_ct.nrrd"), "--layout", str(layout),
            "--synthetic", str(files["synthetic"] / "case2_synthetic.nrrd"), "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(args) == 1 and "--auto-lung if-missing" in capsys.readouterr().err  # the option exists here too
    assert main([*args, "--auto-lung", "if-missing"]) == 0
    report = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert report["settings"]["auto_lung"] == "if-missing" and report["pairs"][0]["regions"]["lung"]["voxels"] > 0
