"""The README's claims: its Python example runs, and every command line it shows parses with the real CLI."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path
from typing import Dict, List

import pytest

from LungDDPMLib.cli import build_parser

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


def _subcommands(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _block_commands() -> List[List[str]]:
    """Arguments of each ``lungddpm ...`` (or ``torchrun ... -m LungDDPMLib ...``) line in the shell code blocks."""
    out = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["lungddpm"]:
                out.append(words[1:])
            elif "LungDDPMLib" in words and words[words.index("LungDDPMLib") - 1] == "-m":
                out.append(words[words.index("LungDDPMLib") + 1 :])
    return out


def test_every_command_line_in_the_readme_parses_and_every_subcommand_is_shown() -> None:
    commands = _block_commands()
    assert len(commands) >= 10, commands  # the regex finds the blocks
    parser = build_parser()
    for argv in commands:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                parser.parse_args(argv)
        except SystemExit as exc:  # argparse's way of refusing a command line (0 only for --help/--version)
            assert exc.code == 0, f"README: `lungddpm {shlex.join(argv)}` does not parse: {err.getvalue().strip()}"
    shown = {argv[0] for argv in commands}
    assert shown == set(_subcommands(parser)), f"subcommands without an example: {set(_subcommands(parser)) - shown}"


def test_the_readme_code_spans_name_real_subcommands_and_options() -> None:
    """Inline mentions such as `lungddpm worker --metrics` are fragments (no required arguments), so each is
    checked for its subcommand and its options only."""
    spans = re.findall(r"`(lungddpm [^`]+)`", README.read_text())
    assert len(spans) >= 5, spans
    for span in spans:
        words = shlex.split(span)[1:]
        parser = build_parser()
        assert words and words[0] in _subcommands(parser), f"README: {span!r} names no subcommand"
        while words and words[0] in _subcommands(parser):
            parser = _subcommands(parser)[words.pop(0)]
        known = {opt for action in parser._actions for opt in action.option_strings}
        unknown = [w.split("=")[0] for w in words if w.startswith("--") and w.split("=")[0] not in known]
        assert not unknown, f"README: {span!r} uses options that `{parser.prog}` does not have: {unknown}"


@pytest.mark.parametrize("line", ["lungddpm synthesize --ct a.nrrd --no-such-flag", "lungddpm exprot a.pt b.pt"])
def test_the_command_line_check_refuses_what_the_parser_refuses(line: str) -> None:
    err = io.StringIO()
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(err):
        build_parser().parse_args(shlex.split(line)[1:])
    assert exc.value.code == 2
