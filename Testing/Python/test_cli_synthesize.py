"""``lungddpm synthesize`` and ``lungddpm worker`` as a user meets them: the help states the real defaults, a
layout of nodules alone works with the option the error recommends, a rerun that replaces our earlier outputs says
so, a case held by another process does not end looking done, and an unwritable folder is named with the fix."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import numpy as np
import pytest
import SimpleITK as sitk

from LungDDPMLib.checkpoint import save_checkpoint
from LungDDPMLib.cli import build_parser, main
from LungDDPMLib.commands.exit_codes import EXIT_ERROR, EXIT_LOCKED, EXIT_OK
from LungDDPMLib.commands.job_args import values_text
from LungDDPMLib.config import NODULE_LABELS, is_nodule, preset
from LungDDPMLib.data.io import Geometry, write_image
from LungDDPMLib.data.layout import read_layout
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.phantom import make_phantom, save_phantom


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_synthesize")
    ph = make_phantom((48, 48, 32), (4.0, 4.0, 6.0), seed=0, nodules=1)
    save_phantom(root, ph, name="case0", seg_nrrd=False)
    lay = sitk.GetArrayFromImage(ph.layout)
    nodules = np.where(is_nodule(lay), lay, 0).astype(np.uint8)
    write_image(Geometry.of(ph.layout).image_from_array(nodules), root / "case0_nodules.nrrd")
    model = DiffusionModel(preset("tiny", grid=(16, 16, 16), crop="lung"))
    save_checkpoint(root / "model.pt", model, ema=model)
    return root


def synthesize(ws: Path, out: Path, *extra: str, layout: str = "case0_layout.nrrd") -> List[str]:
    return ["synthesize", "--ct", str(ws / "case0_ct.nrrd"), "--layout", str(ws / layout), "--out", str(out),
            "--checkpoint", str(ws / "model.pt"), "--steps", "2", "--device", "cpu", "--precision", "fp32",
            *extra]  # fmt: skip


def worker_events(text: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def option_help(command: str, option: str) -> str:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if option in a.option_strings).help


# ------------------------------------------------------------------------------------------------------- help
def test_the_help_states_the_defaults_the_layout_reader_really_uses(tmp_path: Path) -> None:
    labels = np.zeros((8, 8, 8), dtype=np.uint8)
    labels[1:7, 1:7, 1:7] = 1
    for value in range(2, 6):
        labels[value, 2:4, 2:4] = value
    path = write_image(sitk.GetImageFromArray(labels), tmp_path / "l.nrrd")
    ref = sitk.GetImageFromArray(np.full((8, 8, 8), -800, np.int16))
    layout, _ = read_layout(path, ref)  # no --nodule-labels: every value 2..5 is a nodule
    read_as_nodule = sorted(int(v) for v in np.unique(labels[is_nodule(sitk.GetArrayViewFromImage(layout))]))
    assert read_as_nodule == list(NODULE_LABELS) == [2, 3, 4, 5]
    for command in ("synthesize", "worker"):
        assert f"default {values_text(read_as_nodule)}:" in option_help(command, "--nodule-labels")
        assert "(default 1)" in option_help(command, "--lung-labels")
        auto = option_help(command, "--auto-lung")
        assert all(f"{mode} (" in auto for mode in ("never", "if-missing", "always")), auto


def test_no_command_module_imports_the_cli() -> None:
    """The CLI imports every command; a command importing the CLI closes a circle (it did, for EXIT_CANCELLED)."""
    folder = Path(__file__).resolve().parents[2] / "LungDDPMLib" / "commands"
    offenders = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = (node.module or "") if node.level == 0 else "." * node.level + (node.module or "")
                if target in ("..cli", "LungDDPMLib.cli") or (
                    target == ".." and any(a.name == "cli" for a in node.names)
                ):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


# ------------------------------------------------------------------------------------------------- auto lung
def test_a_layout_of_nodules_alone_works_with_the_option_the_error_names(ws: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "n.nrrd"
    assert main(synthesize(ws, out, "--quiet", layout="case0_nodules.nrrd")) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "--auto-lung if-missing" in err and not out.exists()
    for mode in ("if-missing", "always"):
        assert main(synthesize(ws, out, "--quiet", "--auto-lung", mode, layout="case0_nodules.nrrd")) == EXIT_OK
        provenance = json.loads((tmp_path / "n.lungddpm.json").read_text())
        assert provenance["inputs"]["layout_options"]["auto_lung"] == mode and out.exists()


# ---------------------------------------------------------------------------------------------- replacement
def test_a_rerun_with_other_settings_replaces_our_outputs_with_a_warning(ws: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.nrrd"
    assert main(synthesize(ws, out, "--quiet")) == EXIT_OK
    assert "warning" not in capsys.readouterr().err  # nothing to replace on the first run
    assert main(synthesize(ws, out, "--quiet", "--seed", "5", "--sampler", "ddim")) == EXIT_OK
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and f"replacing {out}," in warning[0]
    assert "seeds [0] -> [5]" in warning[0] and "sampler dpm++ -> ddim" in warning[0]
    assert json.loads((tmp_path / "r.lungddpm.json").read_text())["seeds"] == [5]
    assert main(synthesize(ws, out, "--quiet", "--seed", "5", "--sampler", "ddim")) == EXIT_OK  # done: kept
    assert "warning" not in capsys.readouterr().err
    assert main(["worker", *synthesize(ws, out, "--num-samples", "2")[1:]]) == EXIT_OK
    events = worker_events(capsys.readouterr().out)
    [log] = [e for e in events if e["type"] == "log" and e.get("level") == "warning"]
    assert log["replaced"] == [] and log["name"] == "r"  # r.nrrd is no output of two samples: kept, and said so
    assert f"{out}, written earlier by LungDDPM with other settings: seeds [5] -> [0, 1]" in log["message"]
    assert log["message"].endswith(": kept as they are, but no completion record lists them any more")


# ---------------------------------------------------------------------------------------------------- locks
@pytest.fixture
def live_holder() -> Iterator[subprocess.Popen]:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_a_case_held_by_a_live_process_is_not_a_success(ws: Path, tmp_path: Path, capsys, live_holder) -> None:
    out = tmp_path / "l.nrrd"
    lock = tmp_path / "l.lungddpm.lock"
    lock.write_text(json.dumps({"pid": live_holder.pid, "host": socket.gethostname()}))
    assert main(synthesize(ws, out, "--quiet")) == EXIT_LOCKED
    err = capsys.readouterr().err
    assert f"in progress in process {live_holder.pid}" in err and "not finished: l still being synthesised" in err
    assert main(["worker", *synthesize(ws, out)[1:]]) == EXIT_LOCKED
    events = worker_events(capsys.readouterr().out)
    assert [e["reason"] for e in events if e["type"] == "skipped"] == ["locked"]
    assert events[-1]["type"] == "done" and events[-1]["locked"] == ["l"] and events[-1]["failed"] == []
    assert not out.exists() and lock.exists()
    lock.unlink()  # the other process finished the case: every case skipped as done is a success
    assert main(synthesize(ws, out, "--quiet")) == EXIT_OK
    lock.write_text(json.dumps({"pid": live_holder.pid, "host": socket.gethostname()}))
    assert main(synthesize(ws, out)) == EXIT_OK  # done is found before the lock is looked at
    assert "already done" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ unwritable folder
def _one_line_about(err: str, folder: Path, why: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"cannot write to the output folder {folder}: {why}" in lines[0], err
    assert "Errno" not in err and ".lock" not in err and "Traceback" not in err


def test_an_output_folder_behind_a_file_is_named_with_the_fix(ws: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("a file where the user meant a folder")
    for folder in (blocker, blocker / "sub"):
        assert main(synthesize(ws, folder / "s.nrrd", "--quiet")) == EXIT_ERROR
        _one_line_about(capsys.readouterr().err, folder, "a file is in the way")
    assert blocker.read_text() == "a file where the user meant a folder"


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write: without write permission, or (as root, who ignores permissions) a
    read-only tmpfs; skipped where neither can be had."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()[:120]}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_an_unwritable_output_folder_is_one_line_naming_it(ws: Path, unwritable: Path, capsys) -> None:
    assert main(synthesize(ws, unwritable / "s.nrrd", "--quiet")) == EXIT_ERROR
    why = "no write permission" if os.geteuid() != 0 else "it is on a read-only file system"
    _one_line_about(capsys.readouterr().err, unwritable, why)
    assert main(["worker", *synthesize(ws, unwritable / "s.nrrd")[1:]]) == EXIT_ERROR
    [error] = [e for e in worker_events(capsys.readouterr().out) if e["type"] == "error"]
    assert error["kind"] == "disk-full" and f"output folder {unwritable}: {why}" in error["message"]
