"""The engine's module layout: split modules keep their old import paths, and no two modules import each other
in a circle (an import anywhere in a module counts, also one inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

import LungDDPMLib

PACKAGE = Path(LungDDPMLib.__file__).parent


@pytest.mark.parametrize(
    "old,new,names",
    [
        ("data.io", "data.geometry", ["Geometry", "same_geometry"]),
        ("data.io", "data.suffixes", ["READ_SUFFIXES", "WRITE_SUFFIXES", "PathLike", "file_suffix", "strip_suffix"]),
        (
            "data.io",
            "data.writing",
            ["TEMP_PATTERN", "clean_orphans", "disk_full_error", "fsync_file", "pid_alive", "temp_path", "write_image"],
        ),
        ("data.io", "data.writing", ["write_text_atomic"]),
        ("training.trainer", "training.checkpointing", ["TRAINER_STATE_VERSION", "TrainingDiverged"]),
        ("evaluation.features", "evaluation.extractor", ["FeatureExtractor", "validate_volume"]),
    ],
)
def test_moved_names_are_the_same_objects_under_their_old_paths(old: str, new: str, names: List[str]) -> None:
    import importlib

    before, now = importlib.import_module(f"LungDDPMLib.{old}"), importlib.import_module(f"LungDDPMLib.{new}")
    for name in names:
        assert getattr(before, name) is getattr(now, name), name


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the package's modules it imports (relative or absolute, at any depth of the file)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["LungDDPMLib", *path.relative_to(PACKAGE).with_suffix("").parts]
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: List[str] = []
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
                source = ".".join(p for p in (base, node.module or "") if p)
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycle_through(graph: Dict[str, Set[str]], start: str) -> List[str]:
    """A shortest import circle from ``start`` back to itself, or [] if there is none."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for module in frontier:
            for target in sorted(graph[module]):
                if target == start:
                    return paths[module] + [start]
                if target not in paths:
                    paths[target] = paths[module] + [target]
                    nxt.append(target)
        frontier = nxt
    return []


def test_no_import_circles() -> None:
    graph = import_graph()
    assert "LungDDPMLib.evaluation.features" not in graph["LungDDPMLib.evaluation.resnet3d"]
    assert "LungDDPMLib.evaluation.extractor" in graph["LungDDPMLib.evaluation.resnet3d"]
    assert "LungDDPMLib.evaluation.resnet3d" in graph["LungDDPMLib.evaluation.features"]  # the detector sees lazy ones
    circles = [c for c in (cycle_through(graph, m) for m in sorted(graph)) if c]
    assert not circles, " ; ".join(" -> ".join(c) for c in circles)
