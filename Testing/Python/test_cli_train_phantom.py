"""`lungddpm phantom` and `lungddpm train` end to end on tiny settings, and their one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import SimpleITK as sitk

from LungDDPMLib.checkpoint import load_checkpoint
from LungDDPMLib.cli import main


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "LungDDPMLib", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_phantom_command_writes_ct_layout_and_segmentation(tmp_path: Path, capsys) -> None:
    assert main(["phantom", str(tmp_path), "--n", "2", "--size", "64", "64", "40", "--spacing", "3", "3", "4"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    ct = sitk.ReadImage(lines[0]["ct"])
    layout = sitk.ReadImage(lines[0]["layout"])
    assert ct.GetSize() == (64, 64, 40) and ct.GetSpacing() == (3.0, 3.0, 4.0)
    assert layout.GetSize() == ct.GetSize() and Path(lines[0]["seg"]).exists()
    arr = sitk.GetArrayFromImage(layout)
    assert set(int(v) for v in set(arr.ravel().tolist())) <= {0, 1, 3, 4, 5} and (arr == 1).any()
    assert (arr >= 3).any()  # nodules carry their class


def test_train_command_runs_resumes_and_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["train", "--phantom", "2", "--out", str(out), "--preset", "tiny", "--grid", "16"]
    common += ["--grad-accum", "1", "--lr", "1e-3", "--ema-start", "0", "--ema-every", "1", "--log-every", "1"]
    common += ["--device", "cpu", "--quiet"]
    first = run_cli(*common, "--steps", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout.strip().splitlines()[-1])["step"] == 2
    second = run_cli(*common, "--steps", "3", "--resume", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["step"] == 3
    assert len((out / "loss.jsonl").read_text().splitlines()) == 3
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.step == 3 and ckpt.config.grid == (16, 16, 16) and ckpt.config.preset == "tiny"


def test_train_errors_are_one_line(tmp_path: Path) -> None:
    bad = run_cli("train", "--phantom", "0", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: ") and "Traceback" not in bad.stderr
    missing = run_cli("train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    grid = run_cli("train", "--phantom", "1", "--out", str(tmp_path / "r"), "--grid", "30", cwd=tmp_path)
    assert grid.returncode == 1 and "divisible" in grid.stderr


TINY = ["--preset", "tiny", "--grid", "16", "--phantom", "2", "--phantom-size", "48", "48", "32"]
TINY += ["--phantom-spacing", "6", "6", "9", "--grad-accum", "1", "--lr", "1e-3", "--ema-start", "0"]
TINY += ["--log-every", "1", "--device", "cpu", "--quiet"]


def _logged_steps(out: Path) -> list:
    path = out / "loss.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.is_file() else []


def _check_stopped(out: Path, stdout: str, stderr: str) -> int:
    """The run stopped cleanly: summary, message, checkpoint and log all at the same step; returns it."""
    summary = json.loads(stdout.strip().splitlines()[-1])
    step = summary["step"]
    assert summary["stopped_early"] and step >= 1 and "Traceback" not in stderr
    assert f"stopped by a signal at step {step}" in stderr and "--resume" in stderr
    assert load_checkpoint(out / "last.pt").step == step and (out / "checkpoints" / f"step-{step:07d}.pt").is_file()
    assert _logged_steps(out) == list(range(1, step + 1))
    assert json.loads((out / "train.json").read_text())["sessions"][-1]["status"] == "stopped"
    return step


def test_sigterm_saves_a_checkpoint_at_the_step_reached_then_resume_continues_the_log(tmp_path, capsys):
    """What a cluster scheduler does: SIGTERM to every process of the job (here with a DataLoader worker too)."""
    out = tmp_path / "run"
    args = ["train", *TINY, "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "LungDDPMLib", *args, "--num-workers", "1", "--steps", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, signalled as a whole
    )
    try:
        deadline = time.monotonic() + 120
        while not _logged_steps(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    step = _check_stopped(out, stdout, stderr)
    assert main([*args, "--steps", str(step + 1)]) == 1  # without --resume it would overwrite the run
    assert "already holds a training run" in capsys.readouterr().err
    assert main([*args, "--steps", str(step + 1), "--resume"]) == 0
    assert _logged_steps(out) == list(range(1, step + 2))  # strictly increasing, no step twice
    assert load_checkpoint(out / "last.pt").step == step + 1
    record = json.loads((out / "train.json").read_text())
    sessions = [(s["start_step"], s["step"], s["status"], s["train"]["num_workers"]) for s in record["sessions"]]
    assert sessions == [(0, step, "stopped", 1), (step, step + 1, "done", 0)]
    assert record["model"]["preset"] == "tiny" and record["data"] == {"phantom": 2, "layout_dir": None, "cases": 2}


def test_sigint_saves_a_checkpoint_and_exits_130(tmp_path, capsys):
    """Ctrl-C, in this process: the handler is installed for the run and pytest's own is back afterwards."""
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)

    def interrupt_after_two_steps() -> None:
        deadline = time.monotonic() + 120
        while not _logged_steps(out) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_two_steps, daemon=True).start()
    assert main(["train", *TINY, "--out", str(out), "--steps", "100000"]) == 130
    captured = capsys.readouterr()
    _check_stopped(out, captured.out, captured.err)
    assert signal.getsignal(signal.SIGINT) is before
