"""`lungddpm info`: JSON description of checkpoints; unsafe or broken files give one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from LungDDPMLib.checkpoint import file_sha256, save_checkpoint
from LungDDPMLib.cli import main
from LungDDPMLib.config import preset
from LungDDPMLib.diffusion import DiffusionModel


def test_info_describes_our_checkpoint(tmp_path: Path, capsys) -> None:
    path = save_checkpoint(tmp_path / "m.pt", DiffusionModel(preset("tiny")), step=12, provenance={"by": "test"})
    assert main(["info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "lungddpm" and info["preset"] == "tiny" and info["step"] == 12
    assert info["timesteps"] == 250 and info["layout_channels"] == ["lung", "nodule"]
    assert info["grid"] == [32, 32, 32] and info["sha256"] == file_sha256(path)
    assert info["parameters"] == sum(p.numel() for p in DiffusionModel(preset("tiny")).denoise_fn.parameters())


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_info_refuses_unsafe_pickle_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"ema": {"denoise_fn.a": _Evil()}}, path)
    proc = subprocess.run(
        [sys.executable, "-m", "LungDDPMLib", "info", str(path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "would run code" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "PWNED").exists()


def test_missing_file_and_usage_errors(tmp_path: Path, capsys) -> None:
    assert main(["info", str(tmp_path / "none.pt")]) == 1
    assert "not found" in capsys.readouterr().err


def test_info_recognises_a_known_model_by_name(tmp_path: Path, capsys) -> None:
    """A file named like the published release is recognised by name, and a mismatch is flagged."""
    path = save_checkpoint(tmp_path / "Lung-DDPM-LIDC-IDRI-100000-steps.pt", DiffusionModel(preset("tiny")))
    assert main(["info", str(path), "--weights", "model"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["recognised_as"] == {
        "key": "lung-ddpm",
        "title": "Lung-DDPM, 100,000 steps (Jiang et al., IEEE TBME 2025)",
        "by": "name",
    }
    assert "preset is lung-ddpm" in info["warning"]
    other = save_checkpoint(tmp_path / "mine.pt", DiffusionModel(preset("tiny")))
    assert main(["info", str(other), "--weights", "model"]) == 0
    assert json.loads(capsys.readouterr().out)["recognised_as"] is None
