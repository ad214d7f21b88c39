"""MRML basics shared by the module's logic: label values, geometry, segment roles, CT volume checks.

The two sides built on these live apart: :mod:`.layout_builder` reads a layout from a segmentation (and adds no
node), :mod:`.scene_outputs` adds the outputs to the scene. Functions here only read the scene; they raise
:class:`LayoutError` (an ``InputError``) with an actionable message. Arrays are ``(K, J, I)`` as
``slicer.util.arrayFromVolume`` returns them, which is also SimpleITK's ``(z, y, x)``; geometry crosses to
SimpleITK through :func:`sitk_geometry` (Slicer is RAS, SimpleITK LPS).
"""

from __future__ import annotations

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
    """Boolean mask of the nodule voxels (any class) of a layout array.

    A range test: the nodule labels are 2..5 without a gap, and ``np.isin`` takes about 0.8 s on a 512 x 512 x 300
    layout where two comparisons take a fraction of that.
    """
    array = np.asarray(array)
    return (array >= NODULE_LABELS[0]) & (array <= NODULE_LABELS[-1])


def terminology_entry(segment: Any) -> str:
    """The segment's terminology entry (Slicer's '~'-separated string), or '' when it has none.

    Why two paths: ``vtkSegment.GetTerminology`` exists from Slicer 5.10 on; in 5.6 and 5.8 the entry is only the
    segment's ``TerminologyEntry`` tag (the same storage), read with ``GetTag(name, value)`` into a VTK string
    reference. Without the fallback, codes written on 5.6/5.8 were never read back there.
    """
    getter = getattr(segment, "GetTerminology", None)
    if getter is not None:
        return str(getter() or "")
    value = (getattr(vtk, "reference", None) or vtk.mutable)("")
    return str(value) if segment.GetTag(segment.GetTerminologyEntryTagName(), value) else ""


def terminology_role(segment: Any) -> Optional[str]:
    """'lung' or 'nodule' when the segment's terminology entry carries the SNOMED CT code for lung or nodule."""
    entry = terminology_entry(segment)
    for role, code in (("lung", SCT_LUNG), ("nodule", SCT_NODULE)):
        if f"^{code}^" in entry:
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
