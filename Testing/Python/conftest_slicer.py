"""A real MRML scene without the Slicer application, from the ``slicer-core`` wheel (imported by test_slicer_*).

``empty_scene`` (wrapped as a fixture by each test module) sets up what ``slicer.util`` needs once per
session: ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` for colors, subject hierarchy, volumes,
segmentations, tables, plots and markups. It clears the scene after each test. Tests skip with the reason when
slicer-core cannot be imported.
"""

from __future__ import annotations

import os
import stat
import sys
import types
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "LungDDPM"
BLOCKER_DIR = Path(__file__).resolve().parent / "stock_slicer"


def slicer_core_available() -> bool:
    """slicer-core is installed (a plain ``slicer`` package without MRML does not count)."""
    try:
        import slicer
    except ImportError:
        return False
    return hasattr(slicer, "vtkMRMLScene")


def _headless_slicer():
    slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is not installed")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the installed 'slicer' package has no MRML (slicer-core is needed)")
    return setup_headless()


def setup_headless():
    """The headless ``slicer`` module with a scene and module logics (also used by tests in a subprocess)."""
    import slicer
    import slicer.util

    if getattr(slicer, "_lungddpm_headless", False):
        return slicer
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    modules = {}
    for name, cls in (
        ("colors", "vtkSlicerColorLogic"),
        ("subjecthierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
        ("volumes", "vtkSlicerVolumesLogic"),
        ("segmentations", "vtkSlicerSegmentationsModuleLogic"),
        ("tables", "vtkSlicerTablesLogic"),
        ("plots", "vtkSlicerPlotsLogic"),
        ("markups", "vtkSlicerMarkupsLogic"),
    ):
        logic = getattr(slicer, cls)()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name.capitalize(), logic)
        modules[name] = types.SimpleNamespace(logic=lambda logic=logic: logic)
    slicer.modules = types.SimpleNamespace(**modules)
    slicer.app = None  # not the application: launchers pick sys.executable
    slicer._lungddpm_headless = True
    slicer._lungddpm_app_logic = app_logic
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    return slicer


def add_module_path() -> None:
    """Make the qt-free ``LungDDPMLogic`` package importable (also without slicer-core, for its non-MRML parts)."""
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))


def empty_scene():
    """Generator for a fixture: the headless ``slicer`` module with an empty scene, cleared again afterwards."""
    slicer = _headless_slicer()
    slicer.mrmlScene.Clear(0)
    yield slicer
    slicer.mrmlScene.Clear(0)


def python_lacking(folder: Path, modules: str) -> str:
    """An executable that starts this Python unable to import ``modules`` (comma-separated), like a worker's Python
    that lacks them (``stock_slicer/sitecustomize.py`` does the blocking). POSIX shell script."""
    wrapper = Path(folder) / "python-lacking"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'PYTHONPATH="{BLOCKER_DIR}${{PYTHONPATH:+{os.pathsep}$PYTHONPATH}}" LUNGDDPM_BLOCK="{modules}" '
        f'exec "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


def write_tiny_checkpoint(folder: Path) -> str:
    """A freshly initialised tiny model (32^3 lung crops) saved in ``folder``: fast workers, no downloads."""
    torch = pytest.importorskip("torch")
    from LungDDPMLib.checkpoint import save_checkpoint
    from LungDDPMLib.config import preset
    from LungDDPMLib.diffusion import DiffusionModel

    torch.manual_seed(0)
    path = Path(folder) / "tiny.pt"
    save_checkpoint(path, DiffusionModel(preset("tiny", grid=(32, 32, 32), crop="lung")))
    return str(path)
