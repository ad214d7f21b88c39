"""The library must parse on every Python that Slicer may bundle (3.9-3.12).

torch may not be installable for each of those interpreters here, so this compiles every source file with each
interpreter found on the machine; syntax newer than 3.9 (match, PEP 604 unions evaluated at runtime in
signatures without ``from __future__ import annotations``, parenthesised context managers) fails here.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ["3.9", "3.10", "3.11", "3.12"]


def find_interpreter(version: str) -> Optional[str]:
    """A working pythonX.Y: on PATH, or inside a pyenv installation (whose shims may refuse to run it)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [
        shutil.which(f"python{version}"),
        *sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}")),
    ]
    for exe in filter(None, candidates):
        ok = subprocess.run([exe, "-c", "pass"], capture_output=True, timeout=30).returncode == 0
        if ok:
            return exe
    return None


@pytest.mark.parametrize("version", VERSIONS)
def test_sources_compile(version: str) -> None:
    exe = find_interpreter(version)
    if exe is None:
        pytest.skip(f"python{version} not installed")
    code = (
        "import ast, pathlib, sys\n"
        "bad = []\n"
        "for p in sorted(pathlib.Path(sys.argv[1]).rglob('*.py')):\n"
        "    try:\n"
        "        compile(p.read_text(encoding='utf-8'), str(p), 'exec', dont_inherit=True)\n"
        "    except SyntaxError as e:\n"
        "        bad.append(f'{p}:{e.lineno}: {e.msg}')\n"
        "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    for folder in ("LungDDPMLib", "LungDDPM"):
        if not (ROOT / folder).exists():
            continue
        proc = subprocess.run([exe, "-c", code, str(ROOT / folder)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_future_annotations_everywhere() -> None:
    """Runtime-evaluated ``X | Y`` annotations break 3.9; every module with annotations defers them."""
    missing = []
    for p in sorted((ROOT / "LungDDPMLib").rglob("*.py")):
        text = p.read_text(encoding="utf-8")
        if ("->" in text or ": " in text) and "def " in text and "from __future__ import annotations" not in text:
            missing.append(str(p.relative_to(ROOT)))
    assert not missing, missing
