"""The worker protocol and batch synthesis: JSON events, cancel by signal, resume, error kinds."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDDPMLib.checkpoint import save_checkpoint
from LungDDPMLib.config import preset
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.phantom import make_phantom, save_phantom
from LungDDPMLib.worker import Case, Job, run_job


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("worker")
    for seed in (0, 1):
        ph = make_phantom((64, 64, 40), (3.2, 3.2, 6.0), seed=seed, nodules=1)
        save_phantom(root / "cases", ph, name=f"case{seed}", seg_nrrd=False)
    model = DiffusionModel(preset("tiny", grid=(32, 32, 32), crop="lung"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    save_checkpoint(root / "model.pt", model, ema=model)
    return root


def worker(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "LungDDPMLib", "worker", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def events(text: str) -> list:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_worker_reports_progress_result_and_done(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.nrrd"
    proc = worker(
        "--ct", "cases/case0_ct.nrrd", "--layout", "cases/case0_layout.nrrd", "--out", str(out),
        "--checkpoint", "model.pt", "--steps", "4", "--num-samples", "2", "--device", "cpu", cwd=workspace,
    )  # fmt: skip
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    ev = events(stdout)
    kinds = [e["type"] for e in ev]
    assert kinds[0] == "log" and kinds[-2:] == ["result", "done"]
    progress = [e for e in ev if e["type"] == "progress"]
    assert [p["step"] for p in progress] == [1, 2, 3, 4] and all(p["total"] == 4 for p in progress)
    result = ev[-2]
    assert result["paths"] == [str(tmp_path / "x_0.nrrd"), str(tmp_path / "x_1.nrrd")]
    assert result["provenance"]["seeds"] == [0, 1] and len(result["provenance"]["model"]["sha256"]) == 64
    ct = sitk.ReadImage(str(workspace / "cases/case0_ct.nrrd"))
    for path in result["paths"]:
        img = sitk.ReadImage(path)
        assert img.GetSize() == ct.GetSize() and img.GetDirection() == ct.GetDirection()
    sidecar = json.loads((tmp_path / "x.lungddpm.json").read_text())
    assert sidecar["sampler"] == "dpm++" and sidecar["inputs"]["layout_options"]["auto_lung"] == "never"
    assert sidecar["preprocess"]["crop"] == "lung" and sidecar["preprocess"]["grid"] == [32, 32, 32]
    assert ev[-1] == {**ev[-1], "ok": 1, "failed": [], "cancelled": False}


def test_sigterm_cancels_cleanly_without_partial_outputs(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "slow.nrrd"
    proc = worker(
        "--ct", "cases/case0_ct.nrrd", "--layout", "cases/case0_layout.nrrd", "--out", str(out),
        "--checkpoint", "model.pt", "--sampler", "ddpm", "--device", "cpu", cwd=workspace,
    )  # fmt: skip
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if seen[-1]["type"] == "progress" and seen[-1]["step"] == 5:
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=60)
    ev = seen + events(rest)
    assert proc.returncode == 130
    assert ev[-1]["type"] == "done" and ev[-1]["cancelled"] is True
    assert max(e["step"] for e in ev if e["type"] == "progress") <= 6  # stopped within one step
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary


def test_batch_resumes_after_a_killed_run_and_reports_bad_cases(workspace: Path, tmp_path: Path) -> None:
    cases = [
        Case("case0", str(workspace / "cases/case0_ct.nrrd"), str(workspace / "cases/case0_layout.nrrd"),
             str(tmp_path / "case0_synthetic")),
        Case("broken", str(workspace / "missing_ct.nrrd"), str(workspace / "cases/case0_layout.nrrd"),
             str(tmp_path / "broken_synthetic")),
        Case("case1", str(workspace / "cases/case1_ct.nrrd"), str(workspace / "cases/case1_layout.nrrd"),
             str(tmp_path / "case1_synthetic")),
    ]  # fmt: skip
    job = Job(cases=cases, checkpoint=str(workspace / "model.pt"), steps=3, device="cpu")
    first: list = []
    calls = []

    def stop_in_third_case() -> bool:  # "kill" the run while case1 is being sampled
        calls.append(1)
        return any(e["type"] == "progress" and e["name"] == "case1" for e in first)

    with pytest.raises(Exception, match="cancelled"):
        run_job(job, first.append, stop_in_third_case)
    assert [e["name"] for e in first if e["type"] == "result"] == ["case0"]
    assert [(e["name"], e["kind"]) for e in first if e["type"] == "error"] == [("broken", "input")]
    assert not list(tmp_path.glob("case1*"))
    before = (tmp_path / "case0_synthetic.nrrd").stat().st_mtime_ns

    second: list = []
    failed = run_job(job, second.append)
    assert failed == 1
    assert [e["name"] for e in second if e["type"] == "skipped"] == ["case0"]
    assert [e["name"] for e in second if e["type"] == "result"] == ["case1"]
    assert (tmp_path / "case0_synthetic.nrrd").stat().st_mtime_ns == before
    assert second[-1]["type"] == "done" and second[-1]["failed"] == ["broken"]


def test_ranks_take_disjoint_shares_of_a_batch(workspace: Path, tmp_path: Path) -> None:
    cases = [
        Case(f"c{i}", str(workspace / f"cases/case{i % 2}_ct.nrrd"), str(workspace / f"cases/case{i % 2}_layout.nrrd"),
             str(tmp_path / f"c{i}"))
        for i in range(3)
    ]  # fmt: skip
    job = Job(cases=cases, checkpoint=str(workspace / "model.pt"), steps=2, device="cpu")
    names = []
    for rank in (0, 1):
        ev: list = []
        run_job(job, ev.append, rank=rank, world=2)
        names.append([e["name"] for e in ev if e["type"] == "result"])
    assert names == [["c0", "c2"], ["c1"]]


def test_error_kinds_and_exit_codes(workspace: Path, tmp_path: Path) -> None:
    missing = worker(
        "--ct", "cases/case0_ct.nrrd", "--layout", "cases/case0_layout.nrrd", "--out", str(tmp_path / "a.nrrd"),
        "--checkpoint", "nope.pt", "--device", "cpu", cwd=workspace,
    )  # fmt: skip
    out, _ = missing.communicate(timeout=60)
    ev = events(out)
    assert missing.returncode == 1 and any(e["type"] == "error" and e["kind"] == "checkpoint" for e in ev)
    usage = worker("--ct", "cases/case0_ct.nrrd", cwd=workspace)
    out, _ = usage.communicate(timeout=60)
    errors = [e for e in events(out) if e["type"] == "error"]
    assert usage.returncode == 1 and errors[-1]["kind"] == "input" and events(out)[-1]["type"] == "done"
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"cases": [], "checkpoint": "model.pt"}))
    bad = worker("--job", str(job_file), cwd=workspace)
    out, _ = bad.communicate(timeout=60)
    assert bad.returncode == 1 and "no cases" in events(out)[-2]["message"] and events(out)[-1]["type"] == "done"


def test_job_round_trips_through_json(workspace: Path) -> None:
    job = Job(cases=[Case("a", "ct.nrrd", "lay.nrrd", "out/a")], seed=3, num_samples=2, lung_labels=[3, 4])
    back = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    assert back == job and back.seeds() == [3, 4]
    with pytest.raises(ValueError, match="unknown job fields"):
        Job.from_dict({**job.to_dict(), "colour": "red"})
    assert np.array_equal([str(p) for p in job.output_paths(job.cases[0])], ["out/a_0.nrrd", "out/a_1.nrrd"])


def test_out_of_memory_gets_an_actionable_message() -> None:
    from LungDDPMLib.worker import classify_error, error_message

    exc = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert classify_error(exc) == "out-of-memory"
    text = error_message(exc, "out-of-memory")
    assert "--mode roi" in text and "--device cpu" in text and "--batch-size 1" in text
    assert classify_error(RuntimeError("DefaultCPUAllocator: can't allocate memory: out of memory")) == "out-of-memory"
    assert classify_error(ZeroDivisionError()) == "internal"


def test_cli_turns_unexpected_errors_into_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys) -> None:
    from LungDDPMLib import cli
    from LungDDPMLib.commands import info

    def boom(args):
        raise ZeroDivisionError("deliberate")

    monkeypatch.setattr(info, "run", boom)
    assert cli.main(["info", "x.pt"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected ZeroDivisionError: deliberate" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "info", "x.pt"])


def test_cuda_requested_without_a_gpu_is_a_clear_error(workspace: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = worker(
        "--ct", "cases/case0_ct.nrrd", "--layout", "cases/case0_layout.nrrd", "--out", str(tmp_path / "a.nrrd"),
        "--checkpoint", "model.pt", "--device", "cuda", cwd=workspace,
    )  # fmt: skip
    out, _ = proc.communicate(timeout=60)
    ev = events(out)
    err = [e for e in ev if e["type"] == "error"]
    assert proc.returncode == 1 and len(err) == 1 and "cannot use a CUDA GPU" in err[0]["message"]


def test_runtime_options_reach_the_sampler_and_the_provenance(workspace: Path, tmp_path: Path) -> None:
    case = Case("c", str(workspace / "cases/case0_ct.nrrd"), str(workspace / "cases/case0_layout.nrrd"),
                str(tmp_path / "c"))  # fmt: skip
    job = Job(cases=[case], checkpoint=str(workspace / "model.pt"), steps=2, device="cpu", channels_last=True,
              precision="fp32")  # fmt: skip
    ev: list = []
    assert run_job(job, ev.append) == 0
    result = next(e for e in ev if e["type"] == "result")
    assert result["provenance"]["runtime"] == {
        "precision": "fp32", "channels_last": True, "compile": False, "compile_mode": "default", "cuda_graphs": False,
    }  # fmt: skip
    auto = Job(cases=[Case("e", case.ct, case.layout, str(tmp_path / "e"))], checkpoint=job.checkpoint, steps=2,
               device="cpu")  # fmt: skip
    assert auto.precision == "auto"  # the default: the provenance records what actually ran
    ev = []
    assert run_job(auto, ev.append) == 0
    ran = next(e for e in ev if e["type"] == "result")["provenance"]
    assert ran["precision"] in ("fp32", "bf16") and ran["runtime"]["precision"] == ran["precision"]
    if not torch.cuda.is_available():  # refused once, before any case runs
        fresh = Case("d", case.ct, case.layout, str(tmp_path / "d"))
        graphs: list = []
        assert (
            run_job(Job(cases=[fresh], checkpoint=job.checkpoint, device="cpu", cuda_graphs=True), graphs.append) == 1
        )
        errors = [e for e in graphs if e["type"] == "error"]
        assert len(errors) == 1 and errors[0]["kind"] == "input"
        assert "cuda_graphs needs a CUDA device" in errors[0]["message"]


def test_cli_flags_build_the_runtime_options() -> None:
    import argparse

    from LungDDPMLib.commands.job_args import add_job_arguments, job_from_args

    parser = argparse.ArgumentParser()
    add_job_arguments(parser, job_file=False)
    args = parser.parse_args(
        ["--ct", "a.nrrd", "--layout", "b.nrrd", "--out", "c.nrrd", "--channels-last", "--compile"]
    )
    job = job_from_args(args)
    assert (job.channels_last, job.compile, job.cuda_graphs) == (True, True, False)
    assert job.runtime().compile and job.runtime().torch_compile_mode == "default"
