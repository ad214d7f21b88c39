"""Outputs into the scene: volumes on the CT's grid, the run's subject-hierarchy folder, provenance attributes.

Every function here adds or removes nodes; :func:`remove_folder` undoes a run's folder with everything in it, so a
failed load leaves the scene as it was. Arrays are ``(K, J, I)``; geometry from SimpleITK (LPS) is converted to
Slicer's RAS.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk

from .mrml_bridge import ATTRIBUTE_PREFIX, FLIP_LPS_RAS, LayoutError, shape_kji


def add_volume_like(reference: Any, array: np.ndarray, name: str, labelmap: bool = False) -> Any:
    """A new scalar (or label map) volume node with exactly ``reference``'s geometry holding ``array``.

    A scalar volume is shown like ``reference`` (its display node's content, window/level included) with automatic
    window/level off: that computes a histogram of every voxel on each display change, about a second for a
    512 x 512 x 300 CT on Slicer's main thread, and a synthetic CT is best compared at its input's window anyway.
    """
    if tuple(array.shape) != shape_kji(reference):
        raise LayoutError(f"array of shape {array.shape} does not fit '{reference.GetName()}' {shape_kji(reference)}")
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = slicer.mrmlScene.AddNewNodeByClass(cls, name)
    node.CopyOrientation(reference)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    look = None if labelmap else reference.GetDisplayNode()
    if look is None or not look.IsA("vtkMRMLScalarVolumeDisplayNode"):
        node.CreateDefaultDisplayNodes()
        return node
    display = slicer.mrmlScene.AddNewNodeByClass(look.GetClassName())
    was_modifying = display.StartModify()  # else the copied automatic flag computes levels once (0.3 s) first
    display.CopyContent(look)
    display.SetAutoWindowLevel(0)
    display.EndModify(was_modifying)
    node.SetAndObserveDisplayNodeID(display.GetID())
    return node


# --- the layout's colours -----------------------------------------------------------------------------------

#: Value of the ``LungDDPM.role`` attribute of the scene's colour table for layouts (one, shared by every run).
LAYOUT_COLORS_ROLE = "layout colors"
LAYOUT_COLORS_NAME = "LungDDPM layout"


def layout_colors() -> List[Tuple[int, str, Tuple[float, float, float, float]]]:
    """(label, name, RGBA) of each layout label: 0 background (transparent), 1 lung, 2 nodule, 3-5 nodule classes.

    The names and colours are those of the segments the engine writes (``LungDDPMLib.data.segmentation``), so a
    layout turned into a segmentation in Slicer gets segment names that the module reads back as the same classes.
    """
    from LungDDPMLib.data.segmentation import LAYOUT_SEGMENTS, TYPED_SEGMENTS

    entries = [(0, "background", (0.0, 0.0, 0.0, 0.0))]
    for label, (name, rgb) in sorted({**LAYOUT_SEGMENTS, **TYPED_SEGMENTS}.items()):
        entries.append((int(label), name, (*(float(c) for c in rgb), 1.0)))
    return entries


def layout_color_table() -> Tuple[Any, bool]:
    """The scene's colour table for layout label maps, and whether it was created now (found by its attribute).

    Why: a label map gets Slicer's generic colour table, whose names for 1-5 mean other anatomy; the layout's
    lung and nodule classes then show unnamed in arbitrary colours. Visible to editors because Slicer does not
    save a hidden node that has a storage node.
    """
    scene = slicer.mrmlScene
    tables = scene.GetNodesByClass("vtkMRMLColorTableNode")
    for n in range(tables.GetNumberOfItems()):
        table = tables.GetItemAsObject(n)
        if table.GetAttribute(ATTRIBUTE_PREFIX + "role") == LAYOUT_COLORS_ROLE:
            return table, False
    entries = layout_colors()
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", LAYOUT_COLORS_NAME)
    table.SetTypeToUser()
    table.SetHideFromEditors(False)
    table.SetNumberOfColors(max(label for label, _, _ in entries) + 1)
    table.SetNamesInitialised(True)  # no generated names for unused entries
    for label, name, rgba in entries:
        table.SetColor(label, name, *rgba)
    table.SetAttribute(ATTRIBUTE_PREFIX + "role", LAYOUT_COLORS_ROLE)
    return table, True


def show_with_layout_colors(labelmap: Any) -> Optional[Any]:
    """Colour and name a layout label map's labels by class; returns the colour table if it was created now."""
    table, created = layout_color_table()
    labelmap.CreateDefaultDisplayNodes()
    labelmap.GetDisplayNode().SetAndObserveColorNodeID(table.GetID())
    return table if created else None


# --- subject hierarchy and provenance -----------------------------------------------------------------------


def sh_item(node: Any) -> int:
    """The node's subject-hierarchy item, created under the scene when missing (headless scenes add none)."""
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(sh.GetSceneItemID(), node)
    return item


def create_run_folder(input_node: Any, name: str) -> int:
    """A folder item for one run, next to ``input_node`` (same parent) in the subject hierarchy."""
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    parent = sh.GetItemParent(sh_item(input_node)) or sh.GetSceneItemID()
    return sh.CreateFolderItem(parent, name)


def place_in_folder(nodes: Sequence[Any], folder: int) -> None:
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    for node in nodes:
        sh.SetItemParent(sh_item(node), folder)


def follow_parent_transform(nodes: Sequence[Any], reference: Any) -> None:
    """Put ``nodes`` under ``reference``'s parent transform: they copy its voxel grid in local coordinates, so
    without the same transform they would not overlay a CT that the user has registered or moved."""
    transform_id = reference.GetTransformNodeID()
    for node in nodes:
        node.SetAndObserveTransformNodeID(transform_id)


def remove_folder(folder: int) -> None:
    """Remove a run folder with every node in it and their display and storage nodes (undoes a failed load).

    The display and storage nodes are removed explicitly: removing a data node does not always take them along
    (it does not in a scene without Slicer's application logic), and orphans would stay in the scene.
    """
    if not folder:
        return
    scene = slicer.mrmlScene
    sh = scene.GetSubjectHierarchyNode()
    children = vtk.vtkIdList()
    sh.GetItemChildren(folder, children, True)
    for n in range(children.GetNumberOfIds()):
        node = sh.GetItemDataNode(children.GetId(n))
        if node is None:
            continue
        helpers = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())] if hasattr(
            node, "GetNumberOfDisplayNodes") else []  # fmt: skip
        if hasattr(node, "GetStorageNode"):
            helpers.append(node.GetStorageNode())
        for helper in helpers:
            if helper is not None:
                scene.RemoveNode(helper)
    sh.RemoveItem(folder, True, True)


def set_provenance(node: Any, provenance: Dict[str, Any], seed: Optional[int] = None) -> None:
    """Record provenance as node attributes: the headline values, and the full record as JSON."""
    model = provenance.get("model") or {}
    aas = provenance.get("aas") or {}
    types = provenance.get("nodule_types") or {}
    values = {
        "model": model.get("path", ""),
        "model.sha256": model.get("sha256", ""),
        "model.preset": model.get("preset", ""),
        "sampler": provenance.get("sampler", ""),
        "steps": provenance.get("steps", ""),
        "seed": seed if seed is not None else (provenance.get("seeds") or [""])[0],
        "aas": aas.get("enabled", ""),
        "aas.blend_from": aas.get("blend_from", ""),
        "precision": provenance.get("precision", ""),
        "time_s": (provenance.get("timing_s") or {}).get("case", ""),
        "nodule_types.used": types.get("used", ""),  # whether the model drew the layout's nodule classes
        "nodule_types.note": types.get("note", ""),
        "provenance": json.dumps(provenance, default=str),
    }
    for key, value in values.items():
        node.SetAttribute(ATTRIBUTE_PREFIX + key, "" if value is None else str(value))


def add_volume_from_sitk(image: Any, name: str, labelmap: bool = False) -> Any:
    """A volume node from a SimpleITK image (LPS geometry converted to Slicer's RAS), e.g. a phantom."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    direction_ras = FLIP_LPS_RAS @ np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, direction_ras[r, c] * spacing[c])
        matrix.SetElement(r, 3, float((FLIP_LPS_RAS @ np.asarray(image.GetOrigin(), dtype=float))[r]))
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = slicer.mrmlScene.AddNewNodeByClass(cls, name)
    node.SetIJKToRASMatrix(matrix)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.CreateDefaultDisplayNodes()
    return node
