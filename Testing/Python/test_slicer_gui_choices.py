"""Static checks of the Slicer module's choices (plain Python, no Qt): each choice the GUI offers reaches the job the
worker runs, the model description is computed in a probe process, and Slicer's own process imports neither torch
nor scikit-image nor the heavy engine. The GUI itself needs Slicer's Qt and cannot run here.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from slicer_static import (
    GUI_FILES,
    MODULE,
    PARAMETERS,
    UI_FILE,
    gui_method,
    ui_widgets,
)


def _choices(field: str) -> tuple:
    m = re.search(rf"{field}: Annotated\[str, Choice\((\[.*?\])\)\]", PARAMETERS.read_text())
    assert m, f"no Choice parameter {field!r} in {PARAMETERS.name}"
    return tuple(ast.literal_eval(m.group(1)))


def _form_row(tree, widget_name):
    """(layout element, row) of the QFormLayout item that holds ``widget_name``."""
    for layout in tree.getroot().iter("layout"):
        for item in layout.findall("item"):
            w = item.find("widget")
            if w is not None and w.get("name") == widget_name:
                return layout, int(item.get("row", -1))
    raise AssertionError(f"{widget_name} is in no layout")


def test_slicer_nodule_placement_offers_shapes_and_types():
    """Placing a nodule: a geometric shape and a density class (solid, part-solid, ground-glass; solid first, the
    default), each a combo box bound to its parameter, side by side in the placement form; Add passes both."""
    placement = (MODULE / "LungDDPMLogic" / "nodule_placement.py").read_text()
    assert 'SHAPES = ("round", "lobulated", "spiculated")' in placement
    assert _choices("noduleShape") == ("round", "lobulated", "spiculated")
    assert _choices("noduleType") == ("solid", "part-solid", "ground-glass")
    assert re.search(r'noduleType: Annotated\[str, Choice\(\[.*?\]\)\] = "solid"', PARAMETERS.read_text())
    tree, widgets = ui_widgets()
    assert widgets["noduleShapeComboBox"] == ("QComboBox", "noduleShape")
    assert widgets["noduleTypeComboBox"] == ("QComboBox", "noduleType")
    shape_layout, shape_row = _form_row(tree, "noduleShapeComboBox")
    type_layout, type_row = _form_row(tree, "noduleTypeComboBox")
    assert shape_layout is type_layout and shape_layout.get("class") == "QFormLayout" and type_row == shape_row + 1
    add = ast.unparse(gui_method("onAddNodule"))
    assert "p.noduleShape" in add and "p.noduleType" in add
    assert "nodule_type=noduleType" in ast.unparse(gui_method("addNodule"))


def test_slicer_mode_choice_offers_the_roi_model():
    """A user asks for the ROI model with mode 'roi' (bound combo box); the model line follows the mode."""
    assert _choices("mode") == ("auto", "full", "roi")
    _, widgets = ui_widgets()
    assert widgets["modeComboBox"] == ("QComboBox", "mode")
    tooltip = ET.parse(UI_FILE).getroot().find(".//widget[@name='modeComboBox']/property[@name='toolTip']/string").text
    assert "roi" in tooltip and "bundled ROI model" in tooltip
    assert "model_to_describe(checkpoint, p.mode" in ast.unparse(gui_method("_updateGui"))


def test_slicer_recipe_choice_reaches_the_job_and_the_published_model_is_offered(tmp_path, monkeypatch):
    """The recipe is a combo bound to the parameter node and travels in the job; the Lung-DDPM+ button shows only
    when best_model.pt is in the engine's models folder, and its job carries no sampler setting the published
    recipe would refuse."""
    assert _choices("recipe") == ("lungddpm", "published")
    _, widgets = ui_widgets()
    assert widgets["recipeComboBox"] == ("QComboBox", "recipe")
    assert "recipe=p.recipe" in (MODULE / "LungDDPMGui" / "module_logic.py").read_text()
    assert "usePublishedModelButton.visible = bool(plus)" in ast.unparse(gui_method("_updateGui"))
    _logic_importable()
    from LungDDPMLogic import model_info
    from LungDDPMLogic.synthesis_run import RunSettings

    from LungDDPMLib.job import Case, Job

    monkeypatch.setattr(model_info, "engine_root", lambda: tmp_path)
    assert model_info.published_plus_file() == ""
    (tmp_path / "LungDDPMLib" / "models").mkdir(parents=True)
    (tmp_path / "LungDDPMLib" / "models" / "best_model.pt").write_bytes(b"x")
    assert model_info.published_plus_file() == str(tmp_path / "LungDDPMLib" / "models" / "best_model.pt")
    case = [Case("a", "ct.nrrd", "lay.nrrd", str(tmp_path / "a"))]
    fields = RunSettings(sampler="ddpm", steps=20, aas=False, recipe="published").job_fields()
    assert Job(cases=case, **fields).recipe == "published"
    assert Job(cases=case, **RunSettings(steps=20).job_fields()).recipe == "lungddpm"


def test_slicer_nodule_density_is_a_choice_and_a_text_that_reach_the_job(tmp_path):
    """Density: a combo (auto / off / custom) and a text field, both bound to the parameter node; custom sends the
    text, which the job checks as the CLI's --density does; the text field is live only for custom."""
    assert _choices("density") == ("auto", "off", "custom")
    _, widgets = ui_widgets()
    assert widgets["densityComboBox"] == ("QComboBox", "density")
    assert widgets["densityCustomLineEdit"] == ("QLineEdit", "densityCustom")
    logic = (MODULE / "LungDDPMGui" / "module_logic.py").read_text()
    assert 'density=p.densityCustom.strip() if p.density == "custom" else p.density' in logic
    assert "densityCustomLineEdit.enabled = bool(p and p.density == 'custom')" in ast.unparse(gui_method("_updateGui"))
    _logic_importable()
    from LungDDPMLogic.synthesis_run import RunSettings

    from LungDDPMLib.errors import InputError
    from LungDDPMLib.job import Case, Job

    case = [Case("a", "ct.nrrd", "lay.nrrd", str(tmp_path / "a"))]
    assert Job(cases=case, **RunSettings().job_fields()).density == "auto"
    spec = "ground-glass=-650,part-solid=-600/0@0.5"
    assert Job(cases=case, **RunSettings(density=spec).job_fields()).density == spec
    with pytest.raises(InputError, match="--density entry"):
        Job(cases=case, **RunSettings(density="glass=-650").job_fields())


def test_slicer_dicom_copies_folder_reaches_the_job(tmp_path):
    """The module saves its results as marked DICOM through the worker's own writer: a folder bound to the
    parameter node travels in the job as ``dicom_dir`` (empty: none)."""
    _, widgets = ui_widgets()
    assert widgets["dicomFolderLineEdit"] == ("QLineEdit", "dicomFolder")
    assert "dicom_dir=dicom_run_folder(p.dicomFolder)" in (MODULE / "LungDDPMGui" / "module_logic.py").read_text()
    _logic_importable()
    from LungDDPMLogic.synthesis_run import RunSettings, dicom_run_folder

    assert dicom_run_folder("  ") == ""
    first, second = dicom_run_folder(str(tmp_path)), dicom_run_folder(str(tmp_path))
    assert first != second and Path(first).parent == tmp_path  # every run its own folder: no clash between runs

    from LungDDPMLib.job import Case, Job

    case = [Case("a", "ct.nrrd", "lay.nrrd", str(tmp_path / "a"))]
    assert Job(cases=case, **RunSettings().job_fields()).dicom_dir is None
    job = Job(cases=case, **RunSettings(dicom_dir=f" {tmp_path} ").job_fields())
    assert job.dicom_dir == str(tmp_path)
    assert [p.name for p in job.dicom_copy_paths(case[0])] == ["a_dicom", "a_seg.dcm"]


def _logic_importable():
    import sys

    if str(MODULE) not in sys.path:
        sys.path.insert(0, str(MODULE))


def test_slicer_model_info_is_hashed_in_a_probe_process_and_cached(tmp_path):
    """The model line: bundled model by default, known models by content, else 'not known'; the GUI call only stats
    the file (hashing runs in ``lungddpm probe model``) and a description is reused until the file changes."""
    import shutil
    import time

    _logic_importable()
    from LungDDPMLogic.model_info import CHECKING, ModelDescriber

    from LungDDPMLib.registry import DEMO_FILE

    describer = ModelDescriber()

    def answer(path):
        started = time.perf_counter()
        first = describer.describe(path)
        assert time.perf_counter() - started < 0.1  # a stat and a process start, never the hash
        deadline = time.monotonic() + 60
        while describer.pending and time.monotonic() < deadline:
            text = describer.poll()
            if text is not None:
                return first, text
            time.sleep(0.02)
        return first, first

    copy = tmp_path / "renamed.pt"
    shutil.copyfile(DEMO_FILE, copy)
    big = tmp_path / "mine.pt"
    with open(big, "wb") as fh:
        fh.truncate(64 << 20)  # 64 MB of someone's model
    first, demo = answer("")
    assert first == CHECKING and demo.startswith("LungDDPM demo model") and "preset small, grid 64x64x64" in demo
    assert answer(str(copy)) == (CHECKING, demo)  # recognised by its sha256 under another name
    first, other = answer(str(big))
    assert first == CHECKING and "not a known model" in other
    assert answer("") == (demo, demo) and not describer.pending  # cached: no second probe
    assert answer(str(tmp_path / "absent.pt"))[0].startswith("File not found") and not describer.pending
    with open(big, "ab") as fh:
        fh.write(b"x")  # changed: described again
    assert answer(str(big)) == (CHECKING, other)
    describer.close()


#: What Slicer's process may import of the engine, anywhere in the module (also lazily, inside functions).
ENGINE_IN_SLICER = ("LungDDPMLib.errors", "LungDDPMLib.config", "LungDDPMLib.data")


def test_slicer_process_never_imports_torch_skimage_or_the_heavy_engine():
    """Every import in the Qt side and LungDDPMLogic/, module-level or lazy: no torch, no scikit-image, and of the
    engine only its light parts (the widget cannot run here, so this is its check; the logic also runs in
    test_slicer_stock_process.py under an import blocker)."""
    files = [*GUI_FILES, *sorted((MODULE / "LungDDPMLogic").glob("*.py"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in ("torch", "skimage", "torchvision", "monai"), f"{path.name} imports {name}"
                if top == "LungDDPMLib":
                    assert name.startswith(ENGINE_IN_SLICER), f"{path.name}:{node.lineno} imports {name}"
