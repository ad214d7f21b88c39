"""`lungddpm phantom` and `lungddpm train` end to end on tiny settings, and their one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
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
    assert set(int(v) for v in set(arr.ravel().tolist())) <= {0, 1, 2} and (arr == 1).any()


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
