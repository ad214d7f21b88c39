"""Static checks of the Slicer module (plain Python, no Qt): .ui widgets, parameter bindings, CMake lists, imports.

The GUI itself needs Slicer's Qt and cannot run here; these tests catch what usually breaks it: a widget the code
names but the .ui lacks, a parameter-node field without a bound widget of a class its connector accepts, a
Python file missing from the CMake SCRIPTS (it would not ship), and a module-level import that pulls torch.
"""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "LungDDPM"
UI_FILE = MODULE / "Resources" / "UI" / "LungDDPM.ui"
CMAKE = MODULE / "CMakeLists.txt"
#: The module's Qt side: the module file Slicer loads and the package that holds its widget, tasks and logic class.
GUI_FILES = [MODULE / "LungDDPM.py", *sorted((MODULE / "LungDDPMGui").glob("*.py"))]
PARAMETERS = MODULE / "LungDDPMGui" / "parameters.py"

#: Widget classes whose parameterNodeWrapper connector binds each field type (exact class, as the connectors test).
CONNECTOR_CLASSES = {
    "vtkMRMLScalarVolumeNode": {"qMRMLNodeComboBox"},
    "vtkMRMLSegmentationNode": {"qMRMLNodeComboBox"},
    "vtkMRMLMarkupsFiducialNode": {"qMRMLNodeComboBox"},
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "str": {"QLineEdit", "QTextEdit"},
    "Choice": {"QComboBox"},
    "pathlib.Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
}


def _ui_widgets():
    tree = ET.parse(UI_FILE)
    widgets = {}
    for w in tree.iter("widget"):
        param = None
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                param = p.find("string").text
        widgets[w.get("name")] = (w.get("class"), param)
    return tree, widgets


def _gui_source() -> str:
    return "\n".join(path.read_text() for path in GUI_FILES)


def _gui_asts():
    return [ast.parse(path.read_text()) for path in GUI_FILES]


def _parameter_fields():
    """Field name -> type key of CONNECTOR_CLASSES, read from the @parameterNodeWrapper class."""
    for node in ast.walk(ast.parse(PARAMETERS.read_text())):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list
        ):
            fields = {}
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign):
                    text = ast.unparse(stmt.annotation)
                    if "Choice(" in text:
                        key = "Choice"
                    elif text.startswith("Annotated["):
                        key = text[len("Annotated[") :].split(",")[0].strip()
                    else:
                        key = text
                    fields[stmt.target.id] = key
            return fields
    raise AssertionError(f"no @parameterNodeWrapper class in {PARAMETERS}")


#: Every widget the Qt side names (``self.ui.<name>``) and the class it must have in the .ui: the code calls
#: methods of that class (``setSelectedSegmentIDs``, ``checkedNodes``, ``appendPlainText``, ``setCurrentNode``...).
CODE_WIDGETS = {
    "applyButton": "QPushButton",
    "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
    "logTextEdit": "QPlainTextEdit",
    "deviceComboBox": "QComboBox",
    "deviceStatusLabel": "QLabel",
    "refreshDevicesButton": "QPushButton",
    "inputsCollapsibleButton": "ctkCollapsibleButton",
    "modelCollapsibleButton": "ctkCollapsibleButton",
    "blendFromSpinBox": "QSpinBox",
    "guessSegmentsButton": "QPushButton",
    "lungSegmentSelector": "qMRMLSegmentSelectorWidget",  # multi-select segment pickers
    "noduleSegmentSelector": "qMRMLSegmentSelectorWidget",
    "checkpointPathLineEdit": "ctkPathLineEdit",
    "modelInfoLabel": "QLabel",
    "noduleMarkupsSelector": "qMRMLNodeComboBox",
    "noduleMarkupsPlaceWidget": "qSlicerMarkupsPlaceWidget",
    "addNoduleButton": "QPushButton",
    "realVolumesComboBox": "qMRMLCheckableNodeComboBox",  # FID/MMD sets
    "syntheticVolumesComboBox": "qMRMLCheckableNodeComboBox",
    "setMetricsUnitComboBox": "QComboBox",
    "computeSetMetricsButton": "QPushButton",
    "setMetricsStatusLabel": "QLabel",
    "usePublishedModelButton": "QPushButton",
    "densityCustomLineEdit": "QLineEdit",
}
#: Parameters synced with their widget in code rather than by ``SlicerParameterName`` (see the parameter class).
MANUALLY_SYNCED = {"lungSegmentIds", "noduleSegmentIds", "checkpoint"}


def test_slicer_ui_parses_and_names_every_widget_the_code_uses():
    tree, widgets = _ui_widgets()
    assert tree.getroot().tag == "ui"
    top = tree.getroot().find("widget")
    assert top.get("class") == "qMRMLWidget"  # setMRMLScene on the loaded widget
    used = set(re.findall(r"self\.ui\.([A-Za-z_]\w*)", _gui_source()))
    assert used == set(CODE_WIDGETS), f"declare the class of every widget the code names: {used ^ set(CODE_WIDGETS)}"
    missing = sorted(used - set(widgets))
    assert not missing, f"widgets named in the code but absent from the .ui: {missing}"
    wrong = {name: (widgets[name][0], cls) for name, cls in CODE_WIDGETS.items() if widgets[name][0] != cls}
    assert not wrong, f"widget classes in the .ui differ from what the code expects (ui, code): {wrong}"
    custom = {c.find("class").text for c in tree.getroot().iter("customwidget")}
    used_custom = {cls for cls, _ in widgets.values() if cls.startswith(("ctk", "qMRML", "qSlicer"))}
    assert used_custom <= custom, f"custom widgets without a <customwidget> entry: {used_custom - custom}"
    # the place widget sits beside the point-list selector (same horizontal layout)
    for layout in tree.getroot().iter("layout"):
        names = [w.get("name") for w in layout.findall("item/widget")]
        if "noduleMarkupsSelector" in names:
            assert layout.get("class") == "QHBoxLayout" and "noduleMarkupsPlaceWidget" in names
            break
    else:
        raise AssertionError("noduleMarkupsSelector is not in a layout")


def test_slicer_every_parameter_has_a_bound_widget_of_the_right_class():
    _, widgets = _ui_widgets()
    fields = _parameter_fields()
    assert len(fields) >= 15
    bound = {param: (name, cls) for name, (cls, param) in widgets.items() if param}
    source = _gui_source()
    for field, key in fields.items():
        if field in MANUALLY_SYNCED:
            assert field not in bound, f"{field!r} is synced in code; it must not also be bound in the .ui"
            assert key == "str", f"{field!r} must be a str (got {key})"
            assert re.search(rf"\.{field}\s*=", source), f"nothing in the Qt side writes {field!r}"
            continue
        assert field in bound, f"parameter {field!r} has no widget with SlicerParameterName={field!r}"
        name, cls = bound[field]
        assert key in CONNECTOR_CLASSES, f"parameter {field!r}: unexpected type {key!r}"
        assert cls in CONNECTOR_CLASSES[key], f"{field!r} ({key}) is bound to {name} of class {cls}"
    extra = sorted(set(bound) - set(fields))
    assert not extra, f"widgets bound to parameters that do not exist: {extra}"
    # node selectors need the scene: each is connected to mrmlSceneChanged
    receivers = {c.find("receiver").text for c in ET.parse(UI_FILE).getroot().iter("connection")}
    for name, (cls, _) in widgets.items():
        if cls in ("qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox", "qMRMLSegmentSelectorWidget",
                   "qSlicerMarkupsPlaceWidget"):  # fmt: skip
            assert name in receivers, f"{name} never gets the MRML scene"


def _method(name: str) -> ast.FunctionDef:
    found = [n for tree in _gui_asts() for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]
    assert len(found) == 1, f"{len(found)} methods {name} in the Qt side (one expected)"
    return found[0]


def test_slicer_device_handler_is_connected_after_the_box_is_filled():
    """The first addItem emits currentIndexChanged(0); connecting before filling overwrote the remembered device."""
    calls = [
        (n.lineno, ast.unparse(n))
        for n in ast.walk(_method("setup"))
        if isinstance(n, ast.Call) and ("deviceComboBox" in ast.unparse(n) or "_fillDevices" in ast.unparse(n))
    ]
    fill = min(line for line, text in calls if text.startswith("self._fillDevices"))
    connect = [line for line, text in calls if "connect" in text and "currentIndexChanged" in text]
    assert connect and min(connect) > fill, calls
    assert not any("addItem" in text for _, text in calls), "setup must fill the box through _fillDevices"


def test_slicer_module_file_holds_what_slicer_looks_up_and_the_house_is_small():
    """Slicer finds <Name>Widget and <Name>Test by name in the module file; the parts live in packages (Slicer
    would take any other top-level .py file for a module of its own), none imports the module file (no circle),
    a developer Reload drops every one of them, and no file of the module is over 400 lines."""
    import sys

    tree = ast.parse((MODULE / "LungDDPM.py").read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    imported = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"LungDDPM", "LungDDPMTest"} <= defined and {"LungDDPMWidget", "LungDDPMLogic"} <= imported
    assert [p.name for p in MODULE.glob("*.py")] == ["LungDDPM.py"]
    for path in GUI_FILES[1:]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module != "LungDDPM", f"{path.name} imports the module file"
    packages = {p.parent.name for p in MODULE.glob("*/__init__.py")}
    if str(MODULE) not in sys.path:
        sys.path.insert(0, str(MODULE))
    from LungDDPMLogic import RELOADED_PACKAGES

    assert packages == {"LungDDPMGui", "LungDDPMLogic"} and packages <= set(RELOADED_PACKAGES)
    long = {str(p.relative_to(MODULE)): n for p in MODULE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_slicer_reload_also_reloads_the_logic_package():
    text = ast.unparse(_method("onReload"))
    assert "LungDDPMLogic.unload()" in text and "ScriptedLoadableModuleWidget.onReload(self)" in text
    assert text.index("unload()") < text.index("ScriptedLoadableModuleWidget.onReload")


def test_slicer_failures_restore_the_gui_in_finally():
    """Each action that changes a task's state updates the GUI in a finally block (tryWithErrorDisplay re-raises)."""
    for name in ("onApplyButton", "onComputeSetMetrics", "onTimer"):
        method = _method(name)
        tries = [n for n in ast.walk(method) if isinstance(n, ast.Try) and n.finalbody]
        assert any("_updateGui" in ast.unparse(t.finalbody) for t in tries), f"{name} restores no state in finally"


def _calls(node: ast.AST, name: str) -> list:
    """Calls of ``<anything>.name(...)`` or ``name(...)`` in ``node``."""
    return [
        n
        for n in ast.walk(node)
        if isinstance(n, ast.Call) and (getattr(n.func, "attr", None) == name or getattr(n.func, "id", None) == name)
    ]


def test_slicer_error_display_with_a_wait_cursor_only_around_user_actions():
    """tryWithErrorDisplay(waitCursor=True) is for a click; the 200 ms poll reports through tick_safely instead
    (LungDDPMLogic.run_control, tested in test_slicer_run_control.py) and shows no wait cursor."""
    for tree in _gui_asts():
        for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            for call in _calls(function, "tryWithErrorDisplay"):
                assert function.name.startswith("on") and function.name != "onTimer", function.name
                assert "waitCursor=True" in ast.unparse(call), function.name
    ticks = [n for tree in _gui_asts() for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    ticks = [n for n in ticks if n.name.startswith("_tick") or n.name == "onTimer"]
    assert {t.name for t in ticks} >= {"onTimer", "_tick", "_tickSynthesis", "_tickSetMetrics", "_tickInstall"}
    for tick in ticks:
        assert not _calls(tick, "tryWithErrorDisplay") and not _calls(tick, "setOverrideCursor"), tick.name
    assert _calls(_method("_tick"), "tick_safely")
    for name in ("_tickSynthesis", "_tickSetMetrics", "_tickInstall"):
        assert any(ast.unparse(c.func) == "self._tick" for c in _calls(_method(name), "_tick")), name
    assert _calls(_method("_failed"), "singleShot")  # the message box opens after the tick


def test_slicer_widget_keeps_its_own_parameter_connection():
    """connectGui returns None on Slicer 5.6/5.8 (nothing to disconnect): the widget connects Slicer's connectors
    through its own ParameterGuiLink (tested in test_slicer_gui_logic.py) and ends it on exit and cleanup."""
    source = _gui_source()
    assert "connectGui(" not in source and "disconnectGui(" not in source
    assert _calls(_method("setParameterNode"), "connect") and _calls(_method("_boundConnectors"), "createGuiConnector")
    for name in ("exit", "setParameterNode"):
        assert _calls(_method(name), "_disconnectParameterNode"), name
    assert _calls(_method("_disconnectParameterNode"), "disconnect") and _calls(_method("cleanup"), "disconnect")


def test_slicer_self_test_without_the_packages_logs_and_returns():
    """Reload and Test calls runTest directly: a missing package is a logged line and a return, not SkipTest."""
    run_test = _method("runTest")
    assert (
        _calls(run_test, "self_test_skip_reason") and _calls(run_test, "warning") and not _calls(run_test, "skipTest")
    )
    guard = next(n for n in run_test.body if isinstance(n, ast.If))
    assert any(isinstance(n, ast.Return) for n in guard.body)
    assert run_test.body.index(guard) < next(
        i for i, n in enumerate(run_test.body) if "test_LungDDPM_phantom_synthesis" in ast.unparse(n)
    )


def test_slicer_package_installation_runs_in_the_worker_python():
    """No PyTorchUtils.installTorch (it imports torch in Slicer's process) and no slicer.util.pip_install (it blocks
    the main thread): the installation is an InstallRun in a worker process, polled on the timer."""
    trees = [*_gui_asts(), *(ast.parse(p.read_text()) for p in (MODULE / "LungDDPMLogic").glob("*.py"))]
    for tree in trees:
        assert not _calls(tree, "installTorch") and not _calls(tree, "pip_install")
    assert _calls(_method("_installingDependencies"), "startInstall")
    assert _calls(_method("startInstall"), "start")


def _cmake_list(text, variable):
    m = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert m, f"{variable} is not set in {CMAKE}"
    return [t for t in m.group(1).split() if not t.startswith("#")]


def test_slicer_cmake_lists_every_python_file_and_existing_resources():
    text = CMAKE.read_text()
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py", text)
    module_scripts = set(_cmake_list(text, "MODULE_PYTHON_SCRIPTS"))
    engine_scripts = set(_cmake_list(text, "ENGINE_PYTHON_SCRIPTS"))
    on_disk_module = {str(p.relative_to(MODULE)) for p in MODULE.rglob("*.py") if "__pycache__" not in p.parts}
    on_disk_engine = {
        str(p.relative_to(ROOT)) for p in (ROOT / "LungDDPMLib").rglob("*.py") if "__pycache__" not in p.parts
    }
    assert on_disk_module == module_scripts, on_disk_module ^ module_scripts
    assert on_disk_engine == engine_scripts, on_disk_engine ^ engine_scripts
    for resource in _cmake_list(text, "MODULE_PYTHON_RESOURCES"):
        assert (MODULE / resource.replace("${MODULE_NAME}", "LungDDPM")).is_file(), resource
    assert "LungDDPMLib/models/*.pt" in text  # the bundled demo model ships as a resource
    icon = (MODULE / "Resources" / "Icons" / "LungDDPM.png").read_bytes()
    assert icon[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(icon[16:20], "big") == 128


def test_slicer_module_imports_no_engine_or_torch_at_import_time():
    """Slicer loads the module file, and with it LungDDPMGui, at every start: neither may pull in the engine."""
    for path in GUI_FILES:
        for node in ast.parse(path.read_text()).body:  # only module-level statements run at import
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                bad = name.startswith(("torch", "LungDDPMLib", "LungDDPMLogic"))
                assert not bad, f"module-level import of {name} in {path.name}"
    # the qt-free logic package: no qt anywhere, no torch at module level
    for path in (MODULE / "LungDDPMLogic").glob("*.py"):
        src = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(src):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] in ("qt", "ctk") for m in mods), f"{path.name} imports Qt"
        for node in src.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] == "torch" for m in mods), f"{path.name} imports torch"
    # and the engine never imports slicer or qt; sources stay ASCII (read under any locale, e.g. an ASCII CI shell)
    for path in (ROOT / "LungDDPMLib").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert text.isascii(), f"{path} has non-ASCII characters"
        assert not re.search(r"^\s*(import|from)\s+(slicer|qt|ctk)\b", text, re.M), path


def test_slicer_extension_index_entry():
    entry = json.loads((ROOT / "LungDDPM.json").read_text())
    assert "slicer-extension-catalog-entry-schema-v1.0" in entry["$schema"]
    assert entry["category"] == "Image Synthesis"
    assert entry["scm_url"].startswith("https://")
    assert entry["build_dependencies"] == ["PyTorch"]


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
    tree, widgets = _ui_widgets()
    assert widgets["noduleShapeComboBox"] == ("QComboBox", "noduleShape")
    assert widgets["noduleTypeComboBox"] == ("QComboBox", "noduleType")
    shape_layout, shape_row = _form_row(tree, "noduleShapeComboBox")
    type_layout, type_row = _form_row(tree, "noduleTypeComboBox")
    assert shape_layout is type_layout and shape_layout.get("class") == "QFormLayout" and type_row == shape_row + 1
    add = ast.unparse(_method("onAddNodule"))
    assert "p.noduleShape" in add and "p.noduleType" in add
    assert "nodule_type=noduleType" in ast.unparse(_method("addNodule"))


def test_slicer_mode_choice_offers_the_roi_model():
    """A user asks for the ROI model with mode 'roi' (bound combo box); the model line follows the mode."""
    assert _choices("mode") == ("auto", "full", "roi")
    _, widgets = _ui_widgets()
    assert widgets["modeComboBox"] == ("QComboBox", "mode")
    tooltip = ET.parse(UI_FILE).getroot().find(".//widget[@name='modeComboBox']/property[@name='toolTip']/string").text
    assert "roi" in tooltip and "bundled ROI model" in tooltip
    assert "model_to_describe(checkpoint, p.mode" in ast.unparse(_method("_updateGui"))


def test_slicer_recipe_choice_reaches_the_job_and_the_published_model_is_offered(tmp_path, monkeypatch):
    """The recipe is a combo bound to the parameter node and travels in the job; the Lung-DDPM+ button shows only
    when best_model.pt is in the engine's models folder, and its job carries no sampler setting the published
    recipe would refuse."""
    assert _choices("recipe") == ("lungddpm", "published")
    _, widgets = _ui_widgets()
    assert widgets["recipeComboBox"] == ("QComboBox", "recipe")
    assert "recipe=p.recipe" in (MODULE / "LungDDPMGui" / "module_logic.py").read_text()
    assert "usePublishedModelButton.visible = bool(plus)" in ast.unparse(_method("_updateGui"))
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
    _, widgets = _ui_widgets()
    assert widgets["densityComboBox"] == ("QComboBox", "density")
    assert widgets["densityCustomLineEdit"] == ("QLineEdit", "densityCustom")
    logic = (MODULE / "LungDDPMGui" / "module_logic.py").read_text()
    assert 'density=p.densityCustom.strip() if p.density == "custom" else p.density' in logic
    assert "densityCustomLineEdit.enabled = bool(p and p.density == 'custom')" in ast.unparse(_method("_updateGui"))
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
    _, widgets = _ui_widgets()
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
