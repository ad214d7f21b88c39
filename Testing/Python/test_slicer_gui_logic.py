"""The GUI's decisions, taken in qt-free code: remembered device, views to show, segments chosen by ID, reload.

The Qt widget itself cannot run here (no Slicer application); it only mirrors these objects, and the static test
(test_slicer_gui_static.py) checks that it is wired to them.
"""

from __future__ import annotations

import subprocess
import sys

import conftest_slicer
import numpy as np
import pytest

conftest_slicer.add_module_path()


class DocumentedComboBox:
    """What QComboBox does that matters here (Qt documentation): the first addItem on an empty box makes item 0
    current and emits currentIndexChanged(0); clear() emits currentIndexChanged(-1)."""

    def __init__(self) -> None:
        self.items, self.index, self.handlers = [], -1, []

    def connect(self, handler) -> None:
        self.handlers.append(handler)

    def _set(self, index: int) -> None:
        if index != self.index:
            self.index = index
            for handler in self.handlers:
                handler(index)

    def clear(self) -> None:
        self.items = []
        self._set(-1)

    def addItem(self, label: str, value: str) -> None:
        self.items.append(value)
        if self.index == -1:
            self._set(0)

    def itemData(self, index: int):
        return self.items[index] if 0 <= index < len(self.items) else None

    def setCurrentIndex(self, index: int) -> None:
        self._set(index)


def _fill(combo, choice, event=None) -> None:
    """The widget's _fillDevices."""
    items = choice.items(event)
    with choice.filling_items():
        combo.clear()
        for value, label in items:
            combo.addItem(label, value)
        combo.setCurrentIndex(choice.index_to_select([v for v, _ in items]))


def test_slicer_device_choice_is_remembered_across_sessions_and_refreshes():
    from LungDDPMLogic.device_choice import SETTINGS_DEVICE, DeviceChoice

    settings = {SETTINGS_DEVICE: "cpu"}  # chosen in an earlier session
    gpu = {"devices": [["auto", "auto"], ["cpu", "CPU"], ["cuda:0", "cuda:0 H200"]]}
    # the old order (connect, then fill) lost it: the first addItem stored "auto"
    old = DocumentedComboBox()
    old.connect(lambda i: settings.__setitem__(SETTINGS_DEVICE, old.itemData(i) or "auto"))
    old.addItem("auto", "auto")
    assert settings[SETTINGS_DEVICE] == "auto"
    # the module's order: fill (changes while filling are not choices), then connect
    settings[SETTINGS_DEVICE] = "cpu"
    choice, combo = DeviceChoice(settings), DocumentedComboBox()
    _fill(combo, choice)
    combo.connect(lambda i: choice.chosen(combo.itemData(i)))
    assert combo.itemData(combo.index) == "cpu" and settings[SETTINGS_DEVICE] == "cpu"
    _fill(combo, choice, gpu)  # refresh: the GPU appears; the choice survives the refill
    assert combo.itemData(combo.index) == "cpu"
    combo.setCurrentIndex(2)  # the user picks the GPU
    assert settings[SETTINGS_DEVICE] == "cuda:0"
    _fill(combo, choice)  # the GPU is gone (e.g. another machine): auto is shown, the choice is kept
    assert combo.itemData(combo.index) == "auto" and settings[SETTINGS_DEVICE] == "cuda:0"
    _fill(combo, choice, gpu)
    assert combo.itemData(combo.index) == "cuda:0"


class DocumentedCheckBox:
    """What matters of a QCheckBox here (Qt documentation): setting ``checked`` to another value emits stateChanged
    to every connected slot, once per connection."""

    def __init__(self) -> None:
        self._checked, self.slots = False, []

    @property
    def checked(self) -> bool:
        return self._checked

    @checked.setter
    def checked(self, value: bool) -> None:
        if bool(value) != self._checked:
            self._checked = bool(value)
            for slot in list(self.slots):
                slot()


class CheckBoxConnector:
    """Slicer's QCheckBoxToBoolConnector (parameterNodeWrapper/guiConnectors.py, the same in 5.6, 5.8 and 5.10) on
    the check box above: ``onChanged(callback)`` connects stateChanged, ``onChanged(None)`` disconnects it."""

    def __init__(self, widget: DocumentedCheckBox) -> None:
        self._widget, self._callback, self.writes = widget, None, 0

    def onChanged(self, callback) -> None:
        self._callback = callback
        if callback is None:
            self._widget.slots.remove(self.changed)
        else:
            self._widget.slots.append(self.changed)

    def changed(self) -> None:
        if self._callback:
            self._callback()

    def read(self) -> bool:
        return self._widget.checked

    def write(self, value: bool) -> None:
        self.writes += 1
        self._widget.checked = value


class WrapperSurface:
    """The three members of a parameterNodeWrapper object that ParameterGuiLink uses, over a real
    vtkMRMLScriptedModuleNode (a bool stored as "True"/"False", as the wrapper's serializer does)."""

    def __init__(self, node) -> None:
        self.parameterNode, self.sets = node, 0

    def getValue(self, name: str) -> bool:
        return self.parameterNode.GetParameter(name) == "True"

    def setValue(self, name: str, value: bool) -> None:
        self.sets += 1
        self.parameterNode.SetParameter(name, str(bool(value)))


@pytest.mark.skipif(not conftest_slicer.slicer_core_available(), reason="slicer-core is not installed")
def test_slicer_enter_exit_enter_leaves_exactly_one_gui_connection(slicer_scene):
    """connectGui returns None on Slicer 5.6 and 5.8, so each enter() used to add a connection that exit() could not
    remove. The module's own link: each enter (a new wrapper of the same node, as initializeParameterNode makes)
    replaces the connection, exit removes it with its node observer."""
    import vtk
    from LungDDPMLogic.gui_link import ParameterGuiLink

    node = slicer_scene.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "LungDDPM")
    node.SetParameter("aas", "True")
    box, link = DocumentedCheckBox(), ParameterGuiLink()
    for _ in range(3):  # enter, exit, enter, exit, enter
        parameters, connector = WrapperSurface(node), CheckBoxConnector(box)
        link.connect(parameters, {"aas": connector})
        assert box.checked and len(box.slots) == 1 and node.HasObserver(vtk.vtkCommand.ModifiedEvent)
        link.disconnect()
        assert box.slots == [] and not node.HasObserver(vtk.vtkCommand.ModifiedEvent) and not link.connected
        link.disconnect()  # exit twice (scene close, then exit): harmless
    parameters, connector = WrapperSurface(node), CheckBoxConnector(box)
    link.connect(parameters, {"aas": connector})
    link.connect(parameters, {"aas": connector})  # another parameter node: the previous connection goes first
    assert len(box.slots) == 1 and connector.writes == 2
    box.checked = False  # the user unticks AAS: written to the node once (and the node's change shown back once)
    assert (parameters.sets, node.GetParameter("aas"), connector.writes) == (1, "False", 3)
    node.SetParameter("aas", "True")  # changed elsewhere (a script, undo): shown once, nothing written back
    assert box.checked and connector.writes == 4 and parameters.sets == 1
    link.disconnect()
    node.SetParameter("aas", "False")
    box.checked = False
    box.checked = True
    assert connector.writes == 4 and parameters.sets == 1 and node.GetParameter("aas") == "False"


@pytest.mark.parametrize(
    ("table", "plot", "with_plot", "expected"),
    [
        (True, True, True, None),  # both shown: the user's layout stays
        (True, False, False, None),
        (True, False, True, "SlicerLayoutFourUpPlotTableView"),
        (False, True, True, "SlicerLayoutFourUpPlotTableView"),
        (False, False, False, "SlicerLayoutFourUpTableView"),
    ],
)
def test_slicer_layout_switches_only_when_a_view_is_missing(table, plot, with_plot, expected):
    from LungDDPMLogic.evaluation_nodes import layout_needed

    assert layout_needed(table, plot, with_plot) == expected


@pytest.mark.skipif(not conftest_slicer.slicer_core_available(), reason="slicer-core is not installed")
def test_slicer_segments_are_chosen_by_id_and_survive_renames(slicer_scene):
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import segment_choice as sc

    seg = slicer_scene.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Layout")
    segmentation = seg.GetSegmentation()
    lung = segmentation.AddEmptySegment("", "Right, lung", [1, 0, 0])  # a comma in the name (and ID)
    nodule = segmentation.AddEmptySegment("", "Nodule", [1, 1, 0])
    text = sc.encode_ids([lung])
    segmentation.GetSegment(lung).SetName("RL")  # renamed after choosing: the choice still holds
    assert sc.chosen_ids(seg, text, "") == ([lung], None)  # None: nodules are guessed from names
    assert sc.existing_ids(seg, text) == [lung]
    segmentation.RemoveSegment(lung)
    assert sc.existing_ids(seg, text) == []  # the picker shows nothing checked...
    with pytest.raises(mb.LayoutError, match="no longer in 'Layout'"):
        sc.chosen_ids(seg, text, "")  # ...and a run says why instead of using another segment
    with pytest.raises(mb.LayoutError, match="not readable"):
        sc.decode_ids("Left lung, Right lung")  # a name list from an old scene
    # terminology: a coded segment is recognised whatever its name
    sc.set_terminology(segmentation.GetSegment(nodule), "nodule")
    segmentation.GetSegment(nodule).SetName("finding A")
    other = segmentation.AddEmptySegment("", "structure 2", [0, 0, 1])
    sc.set_terminology(segmentation.GetSegment(other), "lung")
    assert mb.guess_segments(seg) == ([other], [nodule])


class SegmentOfSlicer58:
    """A real ``vtkSegment`` seen with the API of Slicer 5.6 and 5.8: their vtkSegment.h has no Get/Set/Has-
    Terminology (added in 5.10); the terminology entry is the ``TerminologyEntry`` tag there."""

    ABSENT = ("GetTerminology", "SetTerminology", "HasTerminology")

    def __init__(self, segment) -> None:
        self._segment = segment

    def __getattr__(self, name: str):
        if name in self.ABSENT:
            raise AttributeError(name)
        return getattr(self._segment, name)


@pytest.mark.skipif(not conftest_slicer.slicer_core_available(), reason="slicer-core is not installed")
def test_slicer_terminology_is_read_back_on_slicer_5_6_and_5_8_too(slicer_scene):
    """Codes written on 5.6/5.8 (the tag) are read there (they were written but never read back), and the two
    paths share one storage: a scene coded on 5.10 reads on 5.8 and the other way round."""
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import segment_choice as sc

    segmentation = slicer_scene.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Layout").GetSegmentation()
    old_lung, new_nodule, plain = (
        segmentation.GetSegment(segmentation.AddEmptySegment("", name, [1, 0, 0]))
        for name in ("structure 1", "structure 2", "structure 3")
    )
    assert not hasattr(SegmentOfSlicer58(old_lung), "GetTerminology")
    sc.set_terminology(SegmentOfSlicer58(old_lung), "lung")  # written as the tag, as 5.8 must
    assert mb.terminology_role(SegmentOfSlicer58(old_lung)) == "lung"  # read back as 5.8 must
    assert mb.terminology_entry(SegmentOfSlicer58(old_lung)) == sc.TERMINOLOGY["lung"] == old_lung.GetTerminology()
    sc.set_terminology(new_nodule, "nodule")  # 5.10's SetTerminology...
    assert mb.terminology_role(SegmentOfSlicer58(new_nodule)) == "nodule"  # ...read on 5.8
    assert mb.terminology_role(new_nodule) == "nodule" and mb.terminology_role(old_lung) == "lung"
    # a segment with Slicer's default entry ("Tissue") reads the same on both paths and has no role
    assert "^85756007^Tissue" in mb.terminology_entry(SegmentOfSlicer58(plain)) == plain.GetTerminology()
    assert mb.terminology_role(SegmentOfSlicer58(plain)) is None and mb.terminology_role(plain) is None
    plain.RemoveTag(plain.GetTerminologyEntryTagName())
    assert mb.terminology_entry(SegmentOfSlicer58(plain)) == "" == mb.terminology_entry(plain)


@pytest.mark.skipif(not conftest_slicer.slicer_core_available(), reason="slicer-core is not installed")
def test_slicer_outputs_follow_the_ct_parent_transform(slicer_scene):
    """Outputs copy the CT's voxel grid in local coordinates, so they must sit under the CT's parent transform."""
    from LungDDPMLogic import scene_outputs as so

    slicer = slicer_scene
    ct = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    slicer.util.updateVolumeFromArray(ct, np.zeros((4, 5, 6), np.int16))
    moved = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    ct.SetAndObserveTransformNodeID(moved.GetID())
    out = so.add_volume_like(ct, np.ones((4, 5, 6), np.int16), "CT synthetic 0")
    assert out.GetTransformNodeID() is None
    so.follow_parent_transform([out], ct)
    assert out.GetTransformNodeID() == moved.GetID()


def test_slicer_reload_drops_the_logic_and_engine_modules():
    """Slicer's Reload re-executes LungDDPM.py only; unload() makes the next import read the package files again.

    In a subprocess: dropping the engine's modules here would leave this test session with two copies of them.
    """
    code = (
        f"import sys; sys.path.insert(0, {str(conftest_slicer.MODULE_DIR)!r})\n"
        "import LungDDPMLogic, LungDDPMLogic.run_control as before, LungDDPMLib.errors as errors_before\n"
        "names = LungDDPMLogic.unload()\n"
        "assert 'LungDDPMLogic.run_control' in names and 'LungDDPMLib.errors' in names, names\n"
        "assert not any(n.split('.')[0] in ('LungDDPMLogic', 'LungDDPMLib') for n in sys.modules)\n"
        "import LungDDPMLogic.run_control as after, LungDDPMLib.errors as errors_after\n"
        "assert after is not before and after.TaskSlot is not before.TaskSlot\n"
        "assert errors_after.InputError is not errors_before.InputError\n"
        "print('reloaded')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "reloaded", done.stderr
