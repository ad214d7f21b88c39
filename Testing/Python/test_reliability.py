"""Nothing lost, nothing silently wrong: a user's folder with files we did not make, runs repeated or concurrent,
inputs that are not what they claim to be. Each test reproduces one way a real batch went wrong."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDDPMLib.checkpoint import load_checkpoint, save_checkpoint
from LungDDPMLib.config import preset
from LungDDPMLib.data.datasets import pair_files
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.errors import InputError
from LungDDPMLib.phantom import make_phantom, save_phantom
from LungDDPMLib.worker import Case, Job, classify_error, run_job


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reliability")
    for seed in (0, 1):
        ph = make_phantom((48, 48, 32), (4.0, 4.0, 6.0), seed=seed, nodules=1)
        save_phantom(root / "cases", ph, name=f"case{seed}", seg_nrrd=False)
    model = DiffusionModel(preset("tiny", grid=(16, 16, 16), crop="lung"))
    save_checkpoint(root / "model.pt", model, ema=model)
    return root


def job(ws: Path, cases: List[Case], **kw: Any) -> Job:
    return Job(cases=cases, checkpoint=str(ws / "model.pt"), steps=2, device="cpu", precision="fp32", **kw)


def case(ws: Path, out: Path, n: int = 0, **kw: str) -> Case:
    files = {"ct": str(ws / f"cases/case{n}_ct.nrrd"), "layout": str(ws / f"cases/case{n}_layout.nrrd"), **kw}
    return Case(f"case{n}", files["ct"], files["layout"], str(out))


def run(j: Job) -> List[Dict[str, Any]]:
    events: List[Dict[str, Any]] = []
    run_job(j, events.append)
    return events


def of(events: List[Dict[str, Any]], kind: str) -> List[Dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


# ----------------------------------------------------------------------------------------------- data loss
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(ws: Path, tmp_path: Path) -> None:
    ct = ws / "cases/case0_ct.nrrd"
    before = ct.read_bytes()
    ev = run(job(ws, [case(ws, ws / "cases/case0_ct")]))  # out prefix + .nrrd == the CT
    assert of(ev, "error")[0]["kind"] == "input" and "overwrite the input" in of(ev, "error")[0]["message"]
    link = tmp_path / "linked.nrrd"
    os.link(ct, link)  # a hard link: another name for the same file
    ev = run(job(ws, [case(ws, tmp_path / "linked")]))
    assert "overwrite the input" in of(ev, "error")[0]["message"] and not of(ev, "result")
    assert ct.read_bytes() == before and link.read_bytes() == before
    cli = subprocess.run(
        [sys.executable, "-m", "LungDDPMLib", "synthesize", "--ct", str(ct), "--layout",
         str(ws / "cases/case0_layout.nrrd"), "--out", str(ws / "cases/case0_layout.nrrd"),
         "--checkpoint", str(ws / "model.pt"), "--steps", "2", "--device", "cpu", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 1 and "overwrite the input" in cli.stderr
    assert ct.read_bytes() == before


def test_a_users_json_beside_the_output_is_neither_overwritten_nor_taken_for_done(ws: Path, tmp_path: Path) -> None:
    bids = tmp_path / "sub01.json"
    bids.write_text('{"RepetitionTime": 2.0}')
    ev = run(job(ws, [case(ws, tmp_path / "sub01")]))
    assert len(of(ev, "result")) == 1 and not of(ev, "skipped")
    assert bids.read_text() == '{"RepetitionTime": 2.0}'
    record = json.loads((tmp_path / "sub01.lungddpm.json").read_text())["completion"]
    assert record["outputs"][0]["path"] == str(tmp_path / "sub01.nrrd")


def test_done_means_same_inputs_model_and_seeds(ws: Path, tmp_path: Path) -> None:
    c = case(ws, tmp_path / "s")
    assert len(of(run(job(ws, [c])), "result")) == 1
    again = run(job(ws, [c]))
    assert of(again, "skipped")[0]["reason"] == "done" and not of(again, "result")
    assert len(of(run(job(ws, [c], seed=5)), "result")) == 1  # another seed: redone, not "done"
    other = tmp_path / "other.pt"
    model = DiffusionModel(preset("tiny", grid=(16, 16, 16), crop="lung"))
    save_checkpoint(other, model, ema=model)
    redo = run(Job(cases=[c], checkpoint=str(other), steps=2, device="cpu", seed=5))
    assert len(of(redo, "result")) == 1  # another checkpoint: redone
    (tmp_path / "s.nrrd").write_bytes((tmp_path / "s.nrrd").read_bytes()[:-100])  # damaged since
    assert len(of(run(Job(cases=[c], checkpoint=str(other), steps=2, device="cpu", seed=5)), "result")) == 1


def test_a_file_we_did_not_write_under_an_output_name_is_kept(ws: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "t.nrrd"
    theirs.write_bytes(b"someone else's volume")
    ev = run(job(ws, [case(ws, tmp_path / "t")]))
    assert "was not written by LungDDPM" in of(ev, "error")[0]["message"]
    assert theirs.read_bytes() == b"someone else's volume"


def test_orphaned_temporaries_of_killed_runs_are_cleaned_and_nothing_else(ws: Path, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f".o.{dead.pid}.partial.nrrd"
    orphan.write_bytes(b"half")
    live = tmp_path / f".o.{os.getppid()}.partial.nrrd"  # a running process's file: not ours to remove
    live.write_bytes(b"busy")
    hidden = tmp_path / ".o.partial.nrrd"  # not our pattern
    hidden.write_bytes(b"user")
    ev = run(job(ws, [case(ws, tmp_path / "o")]))
    assert of(ev, "result") and not orphan.exists() and live.exists() and hidden.exists()
    assert any(orphan.name in e["message"] for e in of(ev, "log"))


# ----------------------------------------------------------------------------------------- silent wrong output
def test_a_sample_with_nan_is_an_error_and_never_written(ws: Path, tmp_path: Path, monkeypatch) -> None:
    import LungDDPMLib.worker as worker

    real = worker._load_model

    def poisoned(j, emit):
        ckpt = real(j, emit)
        with torch.no_grad():
            next(ckpt.model.denoise_fn.parameters()).fill_(float("nan"))
        return ckpt

    monkeypatch.setattr(worker, "_load_model", poisoned)
    ev = run(job(ws, [case(ws, tmp_path / "n")]))
    err = of(ev, "error")[0]
    assert err["kind"] == "numerical" and "NaN" in err["message"] and not of(ev, "result")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no image, no sidecar, no lock, no temporary


def test_a_ct_given_as_layout_is_refused(ws: Path, tmp_path: Path) -> None:
    ct = str(ws / "cases/case0_ct.nrrd")
    ev = run(job(ws, [case(ws, tmp_path / "a", layout=ct)]))
    assert "same file" in of(ev, "error")[0]["message"]
    copy = tmp_path / "copy_of_ct.nrrd"
    shutil.copy(ct, copy)
    ev = run(job(ws, [case(ws, tmp_path / "b", layout=str(copy))]))
    assert "distinct values" in of(ev, "error")[0]["message"] and not of(ev, "result")
    folder = tmp_path / "both"
    folder.mkdir()
    shutil.copy(ct, folder / "p1.nrrd")
    with pytest.raises(InputError, match="same file"):  # --ct-dir X --layout-dir X would pair p1 with itself
        pair_files(folder, folder)


def test_label_values_that_are_neither_lung_nor_nodule_are_refused_with_the_fix(ws: Path, tmp_path: Path) -> None:
    lay = sitk.ReadImage(str(ws / "cases/case0_layout.nrrd"))
    arr = sitk.GetArrayFromImage(lay)
    arr[(arr == 1) & (np.arange(arr.shape[2]) < arr.shape[2] // 2)] = 3  # a right lung labelled 3
    relabelled = sitk.GetImageFromArray(arr)
    relabelled.CopyInformation(lay)
    path = tmp_path / "three.nrrd"
    sitk.WriteImage(relabelled, str(path))
    ev = run(job(ws, [case(ws, tmp_path / "r", layout=str(path))]))
    message = of(ev, "error")[0]["message"]
    assert "[3]" in message and "--lung-labels 1,3" in message
    ev = run(job(ws, [case(ws, tmp_path / "r", layout=str(path))], lung_labels=[1, 3]))
    assert of(ev, "result")


def test_a_shifted_layout_is_refused_unless_asked_and_the_provenance_says_so(ws: Path, tmp_path: Path) -> None:
    lay = sitk.ReadImage(str(ws / "cases/case0_layout.nrrd"))
    shifted = sitk.Image(lay)
    shifted.SetOrigin(tuple(np.asarray(lay.GetOrigin()) + np.array([20.0, 0.0, 0.0])))
    path = tmp_path / "shifted.nrrd"
    sitk.WriteImage(shifted, str(path))
    ev = run(job(ws, [case(ws, tmp_path / "s", layout=str(path))]))
    message = of(ev, "error")[0]["message"]
    assert "overlap only" in message and "20.0 mm apart" in message and "--resample-layout" in message
    ev = run(job(ws, [case(ws, tmp_path / "s", layout=str(path))], resample_layout=True))
    geo = of(ev, "result")[0]["provenance"]["inputs"]["layout_geometry"]
    assert geo["resampled"] is True and 0.5 < geo["extent_overlap"] < 0.95
    assert any("resampled onto the CT grid" in e["message"] for e in of(ev, "log"))
    ev = run(job(ws, [case(ws, tmp_path / "same")]))
    assert of(ev, "result")[0]["provenance"]["inputs"]["layout_geometry"]["resampled"] is False


@pytest.mark.parametrize(
    "field,value",
    [("aas", "no"), ("lung_labels", "12"), ("out_format", "png"), ("num_samples", "2"), ("seed", "0"),
     ("steps", True), ("num_samples", 0), ("feather_voxels", 1.5), ("lung_segments", "lung")],
)  # fmt: skip
def test_job_values_of_the_wrong_type_are_refused(ws: Path, field: str, value: Any) -> None:
    data = {"cases": [{"name": "a", "ct": "a.nrrd", "layout": "b.nrrd", "out_prefix": "o"}], field: value}
    with pytest.raises(InputError, match=field):
        Job.from_dict(data)


@pytest.mark.parametrize("text", ["[1, 2]", "null", '{"cases": [{"name": "a"}]}', '{"cases": "x"}', "{"])
def test_every_worker_failure_is_one_error_event_then_done(ws: Path, tmp_path: Path, text: str) -> None:
    path = tmp_path / "job.json"
    path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "LungDDPMLib", "worker", "--job", str(path)], capture_output=True, text=True, timeout=60
    )
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1 and [e["type"] for e in events] == ["error", "done"]
    assert events[0]["kind"] == "input" and "Traceback" not in proc.stderr


@pytest.mark.parametrize("name,written", [("s.mha", "s.mha"), ("s.nii", "s.nii"), ("s", None), ("s.png", None)])
def test_the_output_format_asked_for_is_written_or_refused(ws: Path, tmp_path: Path, name, written) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "LungDDPMLib", "synthesize", "--ct", str(ws / "cases/case0_ct.nrrd"), "--layout",
         str(ws / "cases/case0_layout.nrrd"), "--out", str(tmp_path / name), "--checkpoint", str(ws / "model.pt"),
         "--steps", "1", "--device", "cpu", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if written is None:
        assert proc.returncode == 1 and "name the output with one of" in proc.stderr
        assert not any(p.suffix in (".nrrd", ".png", "") for p in tmp_path.iterdir() if not p.name.startswith("."))
    else:
        assert proc.returncode == 0, proc.stderr
        assert sitk.ReadImage(str(tmp_path / written)).GetSize() == (48, 48, 32)
        assert not (tmp_path / "s.nrrd").exists()


def test_cases_that_would_collide_are_refused_naming_both(ws: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in ("Case_ct", "case_ct"):
        shutil.copy(ws / "cases/case0_ct.nrrd", folder / f"{n}.nrrd")
    if len(list(folder.iterdir())) == 2:  # a case-sensitive file system keeps both
        with pytest.raises(InputError, match=r"Case_ct.nrrd.*case_ct.nrrd|case_ct.nrrd.*Case_ct.nrrd"):
            pair_files(folder, ws / "cases")
    a, b = case(ws, tmp_path / "x"), case(ws, tmp_path / "y")
    with pytest.raises(InputError, match="share the name"):
        job(ws, [a, Case("CASE0", b.ct, b.layout, b.out_prefix)])
    with pytest.raises(InputError, match="share the output prefix"):
        job(ws, [a, Case("other", b.ct, b.layout, a.out_prefix)])


def test_a_case_locked_by_a_live_process_is_skipped_truthfully_and_a_stale_lock_taken_over(ws, tmp_path) -> None:
    c = case(ws, tmp_path / "l")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / "l.lungddpm.lock"
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        ev = run(job(ws, [c]))
        skipped = of(ev, "skipped")
        assert skipped and skipped[0]["reason"] == "locked" and str(holder.pid) in skipped[0]["message"]
        assert of(ev, "done")[0]["skipped"] == 1 and not of(ev, "result") and lock.exists()
    finally:
        holder.kill()
        holder.wait()
    ev = run(job(ws, [c]))  # the holder is gone: its lock is stale
    assert of(ev, "result") and not (tmp_path / "l.lungddpm.lock").exists()


def test_two_batches_on_one_folder_do_each_case_once(ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "LungDDPMLib", "worker", "--ct-dir", str(ws / "cases"), "--out-dir", str(out),
           "--checkpoint", str(ws / "model.pt"), "--steps", "3", "--device", "cpu", "--precision", "fp32"]  # fmt: skip
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for proc, text in zip(procs, outs):  # 75 only while a case skipped as locked was still unfinished at the end
        own = [json.loads(line) for line in text.splitlines()]
        held = {e["name"] for e in own if e["type"] == "skipped" and e["reason"] == "locked"}
        assert set(own[-1]["locked"]) <= held and proc.returncode == (75 if own[-1]["locked"] else 0)
    events = [json.loads(line) for text in outs for line in text.splitlines()]
    done = [e["name"] for e in events if e["type"] == "result"]
    assert sorted(done) == ["case0", "case1"]  # each case synthesised exactly once over both runs
    skipped = [e for e in events if e["type"] == "skipped"]
    assert len(skipped) == 2 and all(e["reason"] in ("done", "locked") for e in skipped)
    assert not list(out.glob("*.lock")) and not list(out.glob(".*partial*"))


def test_too_many_samples_are_refused_up_front_with_the_figure(ws: Path, tmp_path: Path) -> None:
    ev = run(job(ws, [case(ws, tmp_path / "m")], num_samples=10**6))
    err = of(ev, "error")[0]
    assert err["kind"] == "input" and "GiB" in err["message"] and "10" in err["message"]
    assert not list(tmp_path.iterdir()) and not of(ev, "progress")


def test_allocation_failures_are_out_of_memory() -> None:
    assert classify_error(MemoryError()) == "out-of-memory"
    assert classify_error(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")) == "out-of-memory"


def test_the_bundled_checkpoint_still_loads_after_all_checks() -> None:
    from LungDDPMLib.registry import DEMO_FILE

    assert load_checkpoint(DEMO_FILE).config.preset == "small"


def test_a_missing_input_is_an_input_error_naming_it(ws: Path, tmp_path: Path) -> None:
    ev = run(job(ws, [case(ws, tmp_path / "x", ct=str(tmp_path / "absent_ct.nrrd"))]))
    err = of(ev, "error")[0]
    assert err["kind"] == "input" and "file not found" in err["message"] and "absent_ct.nrrd" in err["message"]
    assert of(ev, "done")[0]["failed"] == ["case0"]


def test_label_values_on_the_command_line_take_commas_or_spaces(ws: Path, tmp_path: Path) -> None:
    import argparse

    from LungDDPMLib.commands.job_args import add_job_arguments, job_from_args

    parser = argparse.ArgumentParser()
    add_job_arguments(parser, job_file=False)
    common = ["--ct", "c.nrrd", "--layout", "l.nrrd", "--out", str(tmp_path / "o.nrrd")]
    for tokens in (["1,3"], ["1", "3"]):
        assert job_from_args(parser.parse_args([*common, "--lung-labels", *tokens])).lung_labels == [1, 3]
    with pytest.raises(SystemExit):
        parser.parse_args([*common, "--lung-labels", "1;3"])


def test_a_run_killed_between_two_images_is_redone_not_refused(ws: Path, tmp_path: Path, monkeypatch) -> None:
    import LungDDPMLib.data.io as io

    real = io.write_image
    calls = []

    def dies_on_the_second(image, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is killed: nothing after this line runs
        return real(image, path, *args, **kwargs)

    c = case(ws, tmp_path / "k")
    monkeypatch.setattr(io, "write_image", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        run(job(ws, [c], num_samples=2))
    monkeypatch.setattr(io, "write_image", real)
    assert (tmp_path / "k_0.nrrd").exists() and not (tmp_path / "k_1.nrrd").exists()
    assert not (tmp_path / "k.lungddpm.lock").exists()  # released on the way out (a killed one would be stale)
    ev = run(job(ws, [c], num_samples=2))
    assert len(of(ev, "result")) == 1 and not of(ev, "error")
