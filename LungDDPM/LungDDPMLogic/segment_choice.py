"""Which segments are lung and which are nodules: chosen by segment ID, guessed from names, coded by terminology.

Why IDs: the GUI stored the chosen segments by name, so renaming a segment in the Segment Editor silently broke
the next run (or matched another segment). The parameter node now stores segment IDs (a JSON list in a string
field, saved with the scene); names are only used to guess a first choice. Segments the module creates carry
standard terminology codes (SNOMED CT, as Slicer's terminology module uses them) so that other modules and DICOM
export know what they are, whatever their name.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional, Sequence, Tuple

from . import mrml_bridge as mb

#: Slicer terminology entries: context~category~type~type modifier~anatomic context~region~region modifier.
_CONTEXT = "Segmentation category and type - DICOM master list"
_ANATOMY = "Anatomic codes - DICOM master list"
TERMINOLOGY = {
    "lung": f"{_CONTEXT}~SCT^123037004^Anatomical Structure~SCT^{mb.SCT_LUNG}^Lung~^^~{_ANATOMY}~^^~^^",
    "nodule": (
        f"{_CONTEXT}~SCT^49755003^Morphologically Altered Structure~SCT^{mb.SCT_NODULE}^Nodule~^^~{_ANATOMY}~^^~^^"
    ),
}


def encode_ids(ids: Sequence[str]) -> str:
    """Segment IDs -> the parameter node's string (JSON: IDs may contain commas or spaces)."""
    return json.dumps(list(ids)) if ids else ""


def decode_ids(text: str) -> List[str]:
    """The parameter node's string -> segment IDs ('' means none chosen)."""
    if not text:
        return []
    try:
        ids = json.loads(text)
    except json.JSONDecodeError:
        raise mb.LayoutError(f"the stored segment choice {text!r} is not readable; choose the segments again") from None
    return [str(i) for i in ids] if isinstance(ids, list) else []


def chosen_ids(
    segmentation_node: Any, lung_text: str, nodule_text: str
) -> Tuple[Optional[List[str]], Optional[List[str]]]:
    """(lung IDs, nodule IDs) from the stored choice; None where nothing is chosen (the names are guessed then).

    A chosen segment that no longer exists (deleted after it was chosen) is an error that names it.
    """
    lungs, nodules = decode_ids(lung_text), decode_ids(nodule_text)
    if segmentation_node is not None:
        present = mb.segment_names(segmentation_node)
        gone = [i for i in lungs + nodules if i not in present]
        if gone:
            raise mb.LayoutError(
                f"segment(s) {gone} chosen earlier are no longer in '{segmentation_node.GetName()}'; "
                "check the lung and nodule segments again"
            )
    return (lungs or None), (nodules or None)


def existing_ids(segmentation_node: Any, text: str) -> List[str]:
    """The stored IDs that still exist (for the pickers; a deleted segment is simply not checked)."""
    if segmentation_node is None:
        return []
    present = mb.segment_names(segmentation_node)
    return [i for i in decode_ids(text) if i in present]


def set_terminology(segment: Any, role: str) -> None:
    """Code a segment as lung or nodule (Slicer's terminology entry tag)."""
    if role not in TERMINOLOGY:
        raise ValueError(f"unknown role {role!r}; use one of {sorted(TERMINOLOGY)}")
    if hasattr(segment, "SetTerminology"):  # Slicer >= 5.10; before, the entry is the tag (read: mb.terminology_entry)
        segment.SetTerminology(TERMINOLOGY[role])
    else:
        segment.SetTag(segment.GetTerminologyEntryTagName(), TERMINOLOGY[role])
