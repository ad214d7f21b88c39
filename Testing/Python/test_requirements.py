"""The set-up's requirement files and venv stamp: the demo gets the runtime only, tests add their stack.

``bash scripts/run.sh demo`` installs ``requirements-demo.txt`` (the engine's runtime, pinned), ``test`` installs
``requirements-ci.txt`` (``-r requirements-demo.txt`` plus the test stack) into the same venv. The stamp tests run
the real script with a stand-in Python that records what it is asked to do, so no package is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DEMO, CI = ROOT / "requirements-demo.txt", ROOT / "requirements-ci.txt"
#: What the demo must never install: the test runner, linters, test-only readers, MONAI, Slicer's wheels, plotting.
TEST_STACK = {"pytest", "ruff", "nibabel", "monai", "slicer-core", "vtk", "matplotlib"}


def _lines(path: Path) -> List[str]:
    return [line for line in (raw.split("#", 1)[0].strip() for raw in path.read_text().splitlines()) if line]


def _pins(path: Path) -> Dict[str, Requirement]:
    """Requirements of a file and of the files it includes (``-r``); a package pinned twice fails here."""
    pins: Dict[str, Requirement] = {}
    for line in _lines(path):
        if line.startswith("-r "):
            included = _pins(path.parent / line[3:].strip())
            for name in included.keys() & pins.keys():
                raise AssertionError(f"{name} is pinned in {path.name} and in a file it includes")
            pins.update(included)
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in pins, f"{name} is pinned twice (in {path.name})"
        assert re.fullmatch(r"==[\w.+]+", str(req.specifier)), f"{line!r} in {path.name} is not an exact pin"
        pins[name] = req
    return pins


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_demo_file_pins_exactly_the_runtime_and_no_test_package() -> None:
    demo = _pins(DEMO)
    assert not demo.keys() & TEST_STACK, f"the demo would install test packages: {sorted(demo.keys() & TEST_STACK)}"
    runtime = {canonicalize_name(Requirement(d).name): Requirement(d) for d in _pyproject()["dependencies"]}
    assert demo.keys() == runtime.keys(), "requirements-demo.txt must pin exactly pyproject's dependencies"
    for name, req in runtime.items():
        version = next(iter(demo[name].specifier)).version
        assert req.specifier.contains(version, prereleases=True), f"{name}=={version} violates pyproject's {req}"
    # Without the torch pin pip resolves the newest torch from PyPI: gigabytes of CUDA packages on Linux.
    assert "torch" in demo


def test_the_ci_file_adds_the_test_stack_to_the_demo_pins_without_repinning_them() -> None:
    assert "-r requirements-demo.txt" in _lines(CI)
    ci, demo = _pins(CI), _pins(DEMO)  # _pins refuses a package pinned in both files
    assert {k: str(v) for k, v in demo.items()} == {k: str(ci[k]) for k in demo}
    assert {"pytest", "ruff", "nibabel", "monai", "slicer-core"} <= ci.keys()
    # Every optional extra a user can install is covered by a CI pin inside its range, so CI tests what users get.
    for extra, reqs in _pyproject()["optional-dependencies"].items():
        for text in reqs:
            req = Requirement(text)
            pin = ci.get(canonicalize_name(req.name))
            assert pin is not None, f"extra {extra!r}: {req.name} has no pin in requirements-ci.txt"
            assert req.specifier.contains(next(iter(pin.specifier)).version), f"extra {extra!r}: {pin} violates {req}"


# --- the stamp logic of scripts/run.sh, with a stand-in Python ---------------------------------------------------

FAKE = """#!/usr/bin/env bash
# Stand-in for python, lungddpm and ruff: logs its name and arguments; `-m venv DIR` makes DIR/bin of stand-ins.
echo "$(basename "$0") $*" >> "$FAKE_LOG"
if [ "${1:-}" = -m ] && [ "${2:-}" = venv ]; then
  mkdir -p "$3/bin"
  for tool in python lungddpm ruff; do cp "$0" "$3/bin/$tool"; done
fi
exit 0
"""


@pytest.fixture
def run_sh(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    fake = tmp_path / "python3"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    log = tmp_path / "log.txt"
    venv = tmp_path / "venv"
    env = {**os.environ, "PYTHON": str(fake), "LUNGDDPM_VENV": str(venv), "FAKE_LOG": str(log)}

    def run(*args: str) -> List[str]:
        log.write_text("")
        proc = subprocess.run(
            ["bash", str(ROOT / "scripts" / "run.sh"), *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        return [line for line in log.read_text().splitlines() if " -c " not in f" {line} "]

    run.venv = venv  # type: ignore[attr-defined]
    return run


def _installs(calls: List[str]) -> List[str]:
    return [c.split("-r ", 1)[1] for c in calls if "pip install" in c and "-r " in c]


def test_demo_installs_the_runtime_only_and_test_then_adds_the_test_stack(run_sh) -> None:
    first = run_sh("demo", "--seed", "3")
    assert any("-m venv" in c for c in first)
    assert _installs(first) == ["requirements-demo.txt"]
    assert first[-1] == "lungddpm demo --seed 3"
    assert _installs(run_sh("demo")) == [], "a set-up venv is not installed into again"

    upgrade = run_sh("test", "-k", "readme")
    assert not any("-m venv" in c for c in upgrade), "the demo's venv is reused"
    assert _installs(upgrade) == ["requirements-ci.txt"], "a demo-only venv gets the test stack before tests"
    assert upgrade[-3:] == ["ruff check .", "ruff format --check .", "python -m pytest -k readme"]
    assert _installs(run_sh("test")) == [] and _installs(run_sh("demo")) == []


def test_a_requirement_file_newer_than_the_stamp_is_installed_again(run_sh) -> None:
    run_sh("test")
    stamp = run_sh.venv / ".lungddpm-installed"
    old = (DEMO.stat().st_mtime - 10,) * 2
    os.utime(stamp, old)  # as if requirements-demo.txt (and so what both commands install) changed since
    assert _installs(run_sh("demo")) == ["requirements-demo.txt"]
    assert _installs(run_sh("test")) == ["requirements-ci.txt"], "the demo's reinstall does not count for tests"
    stamp.write_text("")  # a stamp of the earlier run.sh, which did not say what it installed
    assert _installs(run_sh("test")) == ["requirements-ci.txt"]


def test_an_unknown_command_installs_nothing(run_sh, tmp_path) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "run.sh"), "tset"],
        env={**os.environ, "PYTHON": str(tmp_path / "python3"), "LUNGDDPM_VENV": str(run_sh.venv)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "usage: bash scripts/run.sh demo|test" in proc.stderr
    assert not run_sh.venv.exists()
