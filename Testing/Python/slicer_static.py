"""What the static Slicer-module tests share: where the module's files are, and readers of its .ui, parameter class
and Qt-side source (plain Python: the GUI needs Slicer's Qt, which these tests do not have)."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

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


def ui_widgets():
    tree = ET.parse(UI_FILE)
    widgets = {}
    for w in tree.iter("widget"):
        param = None
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                param = p.find("string").text
        widgets[w.get("name")] = (w.get("class"), param)
    return tree, widgets


def gui_source() -> str:
    return "\n".join(path.read_text() for path in GUI_FILES)


def gui_asts():
    return [ast.parse(path.read_text()) for path in GUI_FILES]


def parameter_fields():
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


def gui_method(name: str) -> ast.FunctionDef:
    found = [n for tree in gui_asts() for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]
    assert len(found) == 1, f"{len(found)} methods {name} in the Qt side (one expected)"
    return found[0]


def gui_calls(node: ast.AST, name: str) -> list:
    """Calls of ``<anything>.name(...)`` or ``name(...)`` in ``node``."""
    return [
        n
        for n in ast.walk(node)
        if isinstance(n, ast.Call) and (getattr(n.func, "attr", None) == name or getattr(n.func, "id", None) == name)
    ]
