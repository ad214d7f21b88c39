"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["out"].shape == (2, 32, 32, 32)


def test_readme_names_the_two_commands_that_ci_and_users_run() -> None:
    text = README.read_text()
    assert "bash scripts/run.sh demo" in text and "bash scripts/run.sh test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "scripts/run.sh test" in ci
