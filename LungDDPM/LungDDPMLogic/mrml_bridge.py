"""MRML <-> arrays: layouts from segmentations, volumes from arrays, subject hierarchy and provenance.

Every function here either reads the scene or adds nodes to it, never both halfway: the reading functions raise
:class:`LayoutError` (an ``InputError``) with an actionable message before anything is created, so a bad input
adds no node. Arrays are ``(K, J, I)`` as ``slicer.util.arrayFromVolume`` returns them, which is also SimpleITK's
``(z, y, x)``; geometry crosses to SimpleITK through :func:`sitk_geometry` (Slicer is RAS, SimpleITK LPS).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk

from LungDDPMLib.errors import InputError

LABEL_LUNG, LABEL_NODULE = 1, 2
#: Layout label of a nodule of each density class; a nodule labelled :data:`LABEL_NODULE` has no stated class. The
#: same values as the engine's ``LungDDPMLib.config.LABEL_OF_TYPE`` (kept here like the labels above; a test checks).
LABEL_OF_TYPE = {"solid": 3, "part-solid": 4, "ground-glass": 5}
NODULE_TYPES = tuple(LABEL_OF_TYPE)
NODULE_LABELS = (LABEL_NODULE, *LABEL_OF_TYPE.values())
#: Where nodule segments of different classes overlap, the voxel gets the class painted last in this order: a stated
#: class wins over an unstated one, and the denser class wins (ground-glass < part-solid < solid), whatever the
#: order of the segments, like a solid component inside ground glass.
NODULE_PAINT_ORDER = (LABEL_NODULE, LABEL_OF_TYPE["ground-glass"], LABEL_OF_TYPE["part-solid"], LABEL_OF_TYPE["solid"])
NODULE_WORDS = ("nodule", "lesion", "tumor", "tumour", "mass")
ATTRIBUTE_PREFIX = "LungDDPM."
#: SNOMED CT codes of lung and nodule in Slicer terminology entries (see ``segment_choice.TERMINOLOGY``).
SCT_LUNG, SCT_NODULE = "39607008", "27925004"
#: LPS <-> RAS: flip the first two axes (its own inverse).
FLIP_LPS_RAS = np.diag([-1.0, -1.0, 1.0])


class LayoutError(InputError):
    """The segmentation or the volume cannot make a layout; the message says what to change."""


# --- geometry ---------------------------------------------------------------------------------------------


def ijk_to_ras(volume: Any) -> np.ndarray:
    """The volume's 4x4 IJK-to-RAS matrix as a numpy array."""
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def sitk_geometry(volume: Any) -> Dict[str, Tuple[float, ...]]:
    """Spacing, origin and direction of ``volume`` in SimpleITK's LPS convention (x, y, z order)."""
    m = ijk_to_ras(volume)
    spacing = np.asarray(volume.GetSpacing(), dtype=float)
    direction_ras = m[:3, :3] / spacing[None, :]
    return {
        "spacing": tuple(float(s) for s in spacing),
        "origin": tuple(float(v) for v in FLIP_LPS_RAS @ m[:3, 3]),
        "direction": tuple(float(v) for v in (FLIP_LPS_RAS @ direction_ras).ravel()),
    }


def shape_kji(volume: Any) -> Tuple[int, int, int]:
    image = volume.GetImageData()
    if image is None:
        raise LayoutError(f"the volume '{volume.GetName()}' has no voxels; load or select a CT volume")
    i, j, k = image.GetDimensions()
    return (k, j, i)


# --- segments -----------------------------------------------------------------------------------------------


def segment_names(segmentation_node: Any) -> Dict[str, str]:
    """Segment ID -> name, in the segmentation's order."""
    seg = segmentation_node.GetSegmentation()
    return {seg.GetNthSegmentID(n): seg.GetNthSegment(n).GetName() for n in range(seg.GetNumberOfSegments())}


def nodule_type_from_name(name: str) -> Optional[str]:
    """The density class a segment name states ("Nodule GGO" -> "ground-glass"), or None (the engine's rule)."""
    from LungDDPMLib.data.nodule_types import type_from_name

    return type_from_name(name)


def is_nodule_name(name: str) -> bool:
    """A nodule word in the name ("Nodule 1", "lesion"), or a name that states a density class ("GGO")."""
    low = name.strip().lower()
    return any(w in low for w in NODULE_WORDS) or nodule_type_from_name(name) is not None


def nodule_label(name: str) -> int:
    """The layout label of a nodule segment called ``name``: its class's label, or :data:`LABEL_NODULE`."""
    kind = nodule_type_from_name(name)
    return LABEL_OF_TYPE[kind] if kind else LABEL_NODULE


def is_nodule_label(array: np.ndarray) -> np.ndarray:
    """Boolean mask of the nodule voxels (any class) of a layout array."""
    return np.isin(array, NODULE_LABELS)


def terminology_role(segment: Any) -> Optional[str]:
    """'lung' or 'nodule' when the segment's terminology entry carries the SNOMED CT code for lung or nodule."""
    entry = segment.GetTerminology() if hasattr(segment, "GetTerminology") else ""
    for role, code in (("lung", SCT_LUNG), ("nodule", SCT_NODULE)):
        if f"^{code}^" in (entry or ""):
            return role
    return None


def guess_segments(segmentation_node: Any) -> Tuple[List[str], List[str]]:
    """(lung IDs, nodule IDs) guessed from terminology codes, else from segment names (case-insensitively).

    Lung: coded as lung, or the name contains "lung" and no nodule word ("Left lung", "LUNG_R"). Nodule: coded as
    nodule, or the name contains "nodule", "lesion", "tumor", "tumour" or "mass" ("Nodule 1", "lung nodule"), or
    states a density class ("GGO", "part-solid", see :func:`nodule_type_from_name`).
    """
    lungs, nodules = [], []
    seg = segmentation_node.GetSegmentation()
    for sid, name in segment_names(segmentation_node).items():
        role = terminology_role(seg.GetSegment(sid))
        if role == "nodule" or (role is None and is_nodule_name(name)):
            nodules.append(sid)
        elif role == "lung" or (role is None and "lung" in name.lower()):
            lungs.append(sid)
    return lungs, nodules


def segment_ids_from_names(segmentation_node: Any, names: Sequence[str]) -> List[str]:
    """Segment IDs for ``names`` (matched case-insensitively, surrounding spaces ignored)."""
    by_name: Dict[str, str] = {}
    for sid, name in segment_names(segmentation_node).items():
        by_name.setdefault(name.strip().lower(), sid)
    ids, missing = [], []
    for name in names:
        sid = by_name.get(name.strip().lower())
        (ids.append(sid) if sid else missing.append(name))
    if missing:
        raise LayoutError(
            f"segment(s) {missing} not found in '{segmentation_node.GetName()}', which has "
            f"{list(segment_names(segmentation_node).values())}; choose existing segments"
        )
    return ids


def split_names(text: str) -> List[str]:
    """'Left lung, Right lung' -> ['Left lung', 'Right lung'] (the GUI's comma-separated fields)."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _segment_on_grid(segmentation_node: Any, segment_id: str, volume: Any) -> np.ndarray:
    """Binary mask of one segment on the volume's grid (segments drawn on another grid are resampled).

    Like ``slicer.util.arrayFromSegmentBinaryLabelmap``, through a temporary label map node; here that node is
    removed with its display, storage and color nodes, so reading a layout leaves the scene exactly as it was.
    """
    scene = slicer.mrmlScene
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    temp = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__LungDDPM_temp__")
    before = {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}
    try:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation_node, ids, temp, volume)
        if not ok:
            raise LayoutError(f"cannot export segment '{segment_id}' onto the grid of '{volume.GetName()}'")
        mask = np.array(slicer.util.arrayFromVolume(temp), copy=True) > 0
    finally:
        added = [scene.GetNthNode(n) for n in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in before and not node.GetSingletonTag():
                scene.RemoveNode(node)
        scene.RemoveNode(temp)
    return mask


def _segment_has_voxels(segmentation_node: Any, segment_id: str) -> bool:
    try:
        return bool(np.asarray(slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentation_node, segment_id)).any())
    except Exception:
        return False


@dataclass
class Layout:
    """A layout on the CT grid and how it was made (for messages, provenance and tests)."""

    array: np.ndarray  # uint8 (K, J, I): 0 background, 1 lung, 2 nodule, 3 solid, 4 part-solid, 5 ground-glass
    lung_ids: List[str]
    nodule_ids: List[str]
    auto_lung: bool = False
    warnings: List[str] = field(default_factory=list)
    #: Nodule segment ID -> its label in :attr:`array` (2 for a nodule whose name states no class).
    nodule_labels: Dict[str, int] = field(default_factory=dict)


def layout_from_segmentation(
    segmentation_node: Any,
    volume: Any,
    lung_ids: Optional[Sequence[str]] = None,
    nodule_ids: Optional[Sequence[str]] = None,
    auto_lung: bool = False,
) -> Layout:
    """Segmentation + reference CT -> layout array on the CT grid (nodules drawn over lung win).

    A nodule segment whose name states a density class ("nodule GGO", "Nodule 3 part-solid", "solid nodule") gets
    that class's label (3 solid, 4 part-solid, 5 ground-glass), any other nodule segment label 2. Where nodule
    segments of different classes overlap, the denser class wins (:data:`NODULE_PAINT_ORDER`; a warning says so).
    ``lung_ids``/``nodule_ids`` default to :func:`guess_segments`. With ``auto_lung`` an empty or missing lung
    is replaced by the engine's automatic lung mask computed from the CT. An empty nodule segment is allowed
    (a healthy synthesis, with a warning); an empty lung is not.
    """
    if segmentation_node is None:
        raise LayoutError("select a segmentation that holds the lung and nodule segments")
    if volume is None:
        raise LayoutError("select the reference CT volume")
    shape = shape_kji(volume)
    guessed_lungs, guessed_nodules = guess_segments(segmentation_node)
    lung_ids = list(guessed_lungs if lung_ids is None else lung_ids)
    nodule_ids = list(guessed_nodules if nodule_ids is None else nodule_ids)
    overlap = set(lung_ids) & set(nodule_ids)
    if overlap:
        raise LayoutError(f"segment(s) {sorted(overlap)} are chosen both as lung and as nodule; pick one role each")
    names = segment_names(segmentation_node)
    unknown = [s for s in lung_ids + nodule_ids if s not in names]
    if unknown:
        raise LayoutError(f"segment(s) {unknown} are not in '{segmentation_node.GetName()}'")
    if not lung_ids and not auto_lung:
        raise LayoutError(
            f"no lung segment in '{segmentation_node.GetName()}' (segments: {list(names.values())}); name a "
            "segment 'lung', choose the lung segments, or tick 'make the lung mask automatically'"
        )
    out = np.zeros(shape, dtype=np.uint8)
    warnings: List[str] = []
    labels = {sid: nodule_label(names[sid]) for sid in nodule_ids}
    # nodules in paint order (the stable sort keeps the segments' order within a class): the denser class wins
    ordered_nodules = sorted(nodule_ids, key=lambda sid: NODULE_PAINT_ORDER.index(labels[sid]))
    for role, sid in [("lung", s) for s in lung_ids] + [("nodule", s) for s in ordered_nodules]:
        value = LABEL_LUNG if role == "lung" else labels[sid]
        mask = _segment_on_grid(segmentation_node, sid, volume)
        if mask.shape != shape:
            raise LayoutError(f"segment '{names[sid]}' exported with shape {mask.shape}, expected {shape}")
        if not mask.any():
            if _segment_has_voxels(segmentation_node, sid):
                raise LayoutError(
                    f"the {role} segment '{names[sid]}' does not overlap the volume '{volume.GetName()}'; "
                    "check that the segmentation was drawn on this CT (same patient coordinates)"
                )
            if role == "lung" and not auto_lung:
                raise LayoutError(
                    f"The lung segment '{names[sid]}' is empty; paint the lungs or tick "
                    "'make the lung mask automatically'"
                )
            warnings.append(f"The {role} segment '{names[sid]}' is empty")
        if role == "nodule":
            warnings.extend(_overlap_warnings(out, mask, value, names[sid]))
        out[mask] = value
    if not is_nodule_label(out).any():
        warnings.append("the layout has no nodule: the synthesis will show healthy lung")
    used_auto = False
    if not (out == LABEL_LUNG).any():
        if not auto_lung:
            raise LayoutError("the layout has no lung voxels; paint the lungs or use the automatic lung mask")
        out = _add_auto_lung(out, volume)
        used_auto = True
    return Layout(out, lung_ids, nodule_ids, used_auto, warnings, labels)


def _class_name(label: int) -> str:
    kind = next((kind for kind, value in LABEL_OF_TYPE.items() if value == label), None)
    return f"{kind} nodule" if kind else "nodule of unstated type"


def _overlap_warnings(layout: np.ndarray, mask: np.ndarray, label: int, name: str) -> List[str]:
    """Warnings for nodule voxels of another class that the nodule ``mask`` (class ``label``) is painted over."""
    under = layout[mask]
    out = []
    for other in NODULE_LABELS:
        n = int(np.count_nonzero(under == other)) if other != label else 0
        if n:
            out.append(
                f"the nodule segment '{name}' overlaps a {_class_name(other)} in {n} voxel(s); there the layout "
                f"has a {_class_name(label)} (a stated class wins over none, a denser class over a lighter one)"
            )
    return out


def _add_auto_lung(layout: np.ndarray, volume: Any) -> np.ndarray:
    """Lung from the CT's air-like enclosed regions (the engine's automatic mask); nodules are kept."""
    import SimpleITK as sitk

    from LungDDPMLib.data.layout import auto_lung_mask

    ct = sitk.GetImageFromArray(np.ascontiguousarray(volume_array(volume)))
    try:
        lung = sitk.GetArrayFromImage(auto_lung_mask(ct)) > 0
    except InputError as exc:
        raise LayoutError(str(exc)) from None
    out = layout.copy()
    out[lung & ~is_nodule_label(out)] = LABEL_LUNG
    return out


# --- volumes ------------------------------------------------------------------------------------------------


def volume_array(volume: Any) -> np.ndarray:
    """A copy of the volume's voxels (``arrayFromVolume`` returns a view into the node's image data)."""
    return np.array(slicer.util.arrayFromVolume(volume), copy=True)


def check_ct_volume(volume: Any) -> None:
    """Raise :class:`LayoutError` unless the volume looks like a 3D CT in Hounsfield units."""
    from LungDDPMLib.data.validation import check_ct_intensities

    if volume is None or volume.GetImageData() is None:
        raise LayoutError("select the reference CT volume (it has no voxels)")
    if volume.IsA("vtkMRMLLabelMapVolumeNode"):
        raise LayoutError(f"'{volume.GetName()}' is a label map; select the CT volume as reference")
    if volume.GetImageData().GetNumberOfScalarComponents() != 1:
        raise LayoutError(f"'{volume.GetName()}' has several components per voxel; select a grayscale CT")
    if min(shape_kji(volume)) < 2:
        raise LayoutError(f"'{volume.GetName()}' has size {shape_kji(volume)[::-1]}; it must be a 3D volume")
    try:
        check_ct_intensities(slicer.util.arrayFromVolume(volume), f"the volume '{volume.GetName()}'")
    except InputError as exc:
        raise LayoutError(str(exc)) from None


def add_volume_like(reference: Any, array: np.ndarray, name: str, labelmap: bool = False) -> Any:
    """A new scalar (or label map) volume node with exactly ``reference``'s geometry holding ``array``."""
    if tuple(array.shape) != shape_kji(reference):
        raise LayoutError(f"array of shape {array.shape} does not fit '{reference.GetName()}' {shape_kji(reference)}")
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = slicer.mrmlScene.AddNewNodeByClass(cls, name)
    node.CopyOrientation(reference)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.CreateDefaultDisplayNodes()
    if not labelmap and reference.GetDisplayNode() is not None and node.GetDisplayNode() is not None:
        node.GetDisplayNode().CopyContent(reference.GetDisplayNode())
    return node


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
