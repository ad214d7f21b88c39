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

from slicer_static import (
    CMAKE,
    CONNECTOR_CLASSES,
    GUI_FILES,
    MODULE,
    ROOT,
    UI_FILE,
    gui_asts,
    gui_calls,
    gui_method,
    gui_source,
    parameter_fields,
    ui_widgets,
)

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
    tree, widgets = ui_widgets()
    assert tree.getroot().tag == "ui"
    top = tree.getroot().find("widget")
    assert top.get("class") == "qMRMLWidget"  # setMRMLScene on the loaded widget
    used = set(re.findall(r"self\.ui\.([A-Za-z_]\w*)", gui_source()))
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
    _, widgets = ui_widgets()
    fields = parameter_fields()
    assert len(fields) >= 15
    bound = {param: (name, cls) for name, (cls, param) in widgets.items() if param}
    source = gui_source()
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


def test_slicer_device_handler_is_connected_after_the_box_is_filled():
    """The first addItem emits currentIndexChanged(0); connecting before filling overwrote the remembered device."""
    calls = [
        (n.lineno, ast.unparse(n))
        for n in ast.walk(gui_method("setup"))
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
    text = ast.unparse(gui_method("onReload"))
    assert "LungDDPMLogic.unload()" in text and "ScriptedLoadableModuleWidget.onReload(self)" in text
    assert text.index("unload()") < text.index("ScriptedLoadableModuleWidget.onReload")


def test_slicer_failures_restore_the_gui_in_finally():
    """Each action that changes a task's state updates the GUI in a finally block (tryWithErrorDisplay re-raises)."""
    for name in ("onApplyButton", "onComputeSetMetrics", "onTimer"):
        method = gui_method(name)
        tries = [n for n in ast.walk(method) if isinstance(n, ast.Try) and n.finalbody]
        assert any("_updateGui" in ast.unparse(t.finalbody) for t in tries), f"{name} restores no state in finally"


def test_slicer_error_display_with_a_wait_cursor_only_around_user_actions():
    """tryWithErrorDisplay(waitCursor=True) is for a click; the 200 ms poll reports through tick_safely instead
    (LungDDPMLogic.run_control, tested in test_slicer_run_control.py) and shows no wait cursor."""
    for tree in gui_asts():
        for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            for call in gui_calls(function, "tryWithErrorDisplay"):
                assert function.name.startswith("on") and function.name != "onTimer", function.name
                assert "waitCursor=True" in ast.unparse(call), function.name
    ticks = [n for tree in gui_asts() for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    ticks = [n for n in ticks if n.name.startswith("_tick") or n.name == "onTimer"]
    assert {t.name for t in ticks} >= {"onTimer", "_tick", "_tickSynthesis", "_tickSetMetrics", "_tickInstall"}
    for tick in ticks:
        assert not gui_calls(tick, "tryWithErrorDisplay") and not gui_calls(tick, "setOverrideCursor"), tick.name
    assert gui_calls(gui_method("_tick"), "tick_safely")
    for name in ("_tickSynthesis", "_tickSetMetrics", "_tickInstall"):
        assert any(ast.unparse(c.func) == "self._tick" for c in gui_calls(gui_method(name), "_tick")), name
    assert gui_calls(gui_method("_failed"), "singleShot")  # the message box opens after the tick


def test_slicer_widget_keeps_its_own_parameter_connection():
    """connectGui returns None on Slicer 5.6/5.8 (nothing to disconnect): the widget connects Slicer's connectors
    through its own ParameterGuiLink (tested in test_slicer_gui_logic.py) and ends it on exit and cleanup."""
    source = gui_source()
    assert "connectGui(" not in source and "disconnectGui(" not in source
    assert gui_calls(gui_method("setParameterNode"), "connect") and gui_calls(
        gui_method("_boundConnectors"), "createGuiConnector"
    )
    for name in ("exit", "setParameterNode"):
        assert gui_calls(gui_method(name), "_disconnectParameterNode"), name
    assert gui_calls(gui_method("_disconnectParameterNode"), "disconnect") and gui_calls(
        gui_method("cleanup"), "disconnect"
    )


def test_slicer_self_test_without_the_packages_logs_and_returns():
    """Reload and Test calls runTest directly: a missing package is a logged line and a return, not SkipTest."""
    run_test = gui_method("runTest")
    assert (
        gui_calls(run_test, "self_test_skip_reason")
        and gui_calls(run_test, "warning")
        and not gui_calls(run_test, "skipTest")
    )
    guard = next(n for n in run_test.body if isinstance(n, ast.If))
    assert any(isinstance(n, ast.Return) for n in guard.body)
    assert run_test.body.index(guard) < next(
        i for i, n in enumerate(run_test.body) if "test_LungDDPM_phantom_synthesis" in ast.unparse(n)
    )


def test_slicer_package_installation_runs_in_the_worker_python():
    """No PyTorchUtils.installTorch (it imports torch in Slicer's process) and no slicer.util.pip_install (it blocks
    the main thread): the installation is an InstallRun in a worker process, polled on the timer."""
    trees = [*gui_asts(), *(ast.parse(p.read_text()) for p in (MODULE / "LungDDPMLogic").glob("*.py"))]
    for tree in trees:
        assert not gui_calls(tree, "installTorch") and not gui_calls(tree, "pip_install")
    assert gui_calls(gui_method("_installingDependencies"), "startInstall")
    assert gui_calls(gui_method("startInstall"), "start")


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
