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


def _module_ast():
    return ast.parse((MODULE / "LungDDPM.py").read_text())


def _parameter_fields():
    """Field name -> type key of CONNECTOR_CLASSES, read from the @parameterNodeWrapper class."""
    for node in ast.walk(_module_ast()):
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
    raise AssertionError("no @parameterNodeWrapper class in LungDDPM.py")


def test_slicer_ui_parses_and_names_every_widget_the_code_uses():
    tree, widgets = _ui_widgets()
    assert tree.getroot().tag == "ui"
    top = tree.getroot().find("widget")
    assert top.get("class") == "qMRMLWidget"  # setMRMLScene on the loaded widget
    used = set(re.findall(r"self\.ui\.([A-Za-z_]\w*)", (MODULE / "LungDDPM.py").read_text()))
    assert used, "the module names no widget"
    missing = sorted(used - set(widgets))
    assert not missing, f"widgets named in LungDDPM.py but absent from the .ui: {missing}"
    expected = {
        "applyButton": "QPushButton",
        "progressBar": "QProgressBar",
        "statusLabel": "QLabel",
        "deviceComboBox": "QComboBox",
        "inputsCollapsibleButton": "ctkCollapsibleButton",
        "modelCollapsibleButton": "ctkCollapsibleButton",
        "blendFromSpinBox": "QSpinBox",
        "lungSegmentSelector": "qMRMLSegmentSelectorWidget",  # multi-select segment pickers
        "noduleSegmentSelector": "qMRMLSegmentSelectorWidget",
        "realVolumesComboBox": "qMRMLCheckableNodeComboBox",  # FID/MMD sets
        "syntheticVolumesComboBox": "qMRMLCheckableNodeComboBox",
        "computeSetMetricsButton": "QPushButton",
    }
    for name, cls in expected.items():
        assert widgets[name][0] == cls, (name, widgets[name][0])
    custom = {c.find("class").text for c in tree.getroot().iter("customwidget")}
    used_custom = {cls for cls, _ in widgets.values() if cls.startswith(("ctk", "qMRML"))}
    assert used_custom <= custom, f"custom widgets without a <customwidget> entry: {used_custom - custom}"


def test_slicer_every_parameter_has_a_bound_widget_of_the_right_class():
    _, widgets = _ui_widgets()
    fields = _parameter_fields()
    assert len(fields) >= 15
    bound = {param: (name, cls) for name, (cls, param) in widgets.items() if param}
    for field, key in fields.items():
        assert field in bound, f"parameter {field!r} has no widget with SlicerParameterName={field!r}"
        name, cls = bound[field]
        assert key in CONNECTOR_CLASSES, f"parameter {field!r}: unexpected type {key!r}"
        assert cls in CONNECTOR_CLASSES[key], f"{field!r} ({key}) is bound to {name} of class {cls}"
    extra = sorted(set(bound) - set(fields))
    assert not extra, f"widgets bound to parameters that do not exist: {extra}"
    # node selectors need the scene: each is connected to mrmlSceneChanged
    receivers = {c.find("receiver").text for c in ET.parse(UI_FILE).getroot().iter("connection")}
    for name, (cls, _) in widgets.items():
        if cls in ("qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox", "qMRMLSegmentSelectorWidget"):
            assert name in receivers, f"{name} never gets the MRML scene"


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
    tree = _module_ast()
    for node in tree.body:  # only module-level statements run at import
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            assert not name.startswith(("torch", "LungDDPMLib", "LungDDPMLogic")), f"module-level import of {name}"
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


@pytest.mark.parametrize("name", ["solid", "part-solid", "ground-glass"])
def test_slicer_nodule_kinds_match_the_engine(name):
    from LungDDPMLib.phantom.nodules import KINDS

    assert name in KINDS
    assert f'"{name}"' in (MODULE / "LungDDPM.py").read_text()


def test_slicer_model_info_uses_the_registry_without_torch(tmp_path):
    """The model line under the file chooser: bundled model by default, known models by content, else 'not known'."""
    import shutil
    import subprocess
    import sys

    code = (
        "import sys; sys.path[:0] = [{module!r}, {root!r}]\n"
        "from LungDDPMLogic.model_info import describe_checkpoint\n"
        "print(describe_checkpoint(''))\n"
        "print(describe_checkpoint({copy!r}))\n"
        "print(describe_checkpoint({other!r}))\n"
        "print(describe_checkpoint({missing!r}))\n"
        "print('torch' in sys.modules)\n"
    )
    from LungDDPMLib.registry import DEMO_FILE

    copy = tmp_path / "renamed.pt"
    shutil.copyfile(DEMO_FILE, copy)
    other = tmp_path / "mine.pt"
    other.write_bytes(b"not a known model")
    script = code.format(module=str(MODULE), root=str(ROOT), copy=str(copy), other=str(other),
                         missing=str(tmp_path / "absent.pt"))  # fmt: skip
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith("LungDDPM demo model") and "preset small, grid 64x64x64" in out[0]
    assert out[1] == out[0]  # recognised by its sha256 under another name
    assert "not a known model" in out[2] and out[3].startswith("File not found")
    assert out[4] == "False"  # the GUI's process never imports torch for this
