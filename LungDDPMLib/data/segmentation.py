"""3D Slicer segmentation files (``.seg.nrrd``): read segments by name, write a layout Slicer can load.

Slicer stores a segmentation as NRRD with header keys ``Segment<N>_Name``, ``Segment<N>_LabelValue``,
``Segment<N>_Layer`` and ``Segment<N>_ID``. Non-overlapping segments share one 3D label volume; overlapping
ones are split into layers, stored as a 4D volume whose first axis is the layer (SimpleITK reads that as a
multi-component image). Both forms are read here. Segments are found by name, case-insensitively, because
that is what users see in Slicer's Segment Editor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..config import LABEL_LUNG, LABEL_NODULE, LABEL_OF_TYPE
from ..errors import InputError
from .io import PathLike, read_image, write_image

_KEY = re.compile(r"^Segment(\d+)_(\w+)$")
#: Default segments written for a layout: label value -> (name, RGB colour in 0..1).
LAYOUT_SEGMENTS: Dict[int, Tuple[str, Tuple[float, float, float]]] = {
    LABEL_LUNG: ("lung", (0.77, 0.48, 0.38)),
    LABEL_NODULE: ("nodule", (0.95, 0.85, 0.25)),
}
#: Segments of typed nodules, written only when the layout has such nodules; the names state the class the way
#: :func:`LungDDPMLib.data.nodule_types.type_from_name` reads it back.
TYPED_SEGMENTS: Dict[int, Tuple[str, Tuple[float, float, float]]] = {
    LABEL_OF_TYPE["solid"]: ("nodule solid", (0.95, 0.55, 0.2)),
    LABEL_OF_TYPE["part-solid"]: ("nodule part-solid", (0.9, 0.75, 0.45)),
    LABEL_OF_TYPE["ground-glass"]: ("nodule ground-glass", (0.6, 0.85, 0.95)),
}


@dataclass(frozen=True)
class SegmentInfo:
    index: int
    name: str
    segment_id: str
    layer: int
    label_value: int


@dataclass
class Segmentation:
    """A loaded ``.seg.nrrd``: the segment table and one 3D label array per layer (z, y, x)."""

    segments: List[SegmentInfo]
    layers: List[np.ndarray]
    reference: sitk.Image  # 3D image carrying the geometry of the layers
    path: str = ""

    @property
    def names(self) -> List[str]:
        return [s.name for s in self.segments]

    def find(self, name: str) -> Optional[SegmentInfo]:
        key = name.strip().lower()
        for seg in self.segments:
            if seg.name.strip().lower() == key or seg.segment_id.strip().lower() == key:
                return seg
        return None

    def mask(self, segment: SegmentInfo) -> np.ndarray:
        """Boolean ``(z, y, x)`` mask of one segment."""
        if segment.layer >= len(self.layers):
            raise InputError(
                f"segment {segment.name!r} in {self.path} refers to layer {segment.layer}, but the "
                f"file has {len(self.layers)} layer(s); the file is inconsistent, re-export it"
            )
        return self.layers[segment.layer] == segment.label_value


def _geometry_3d(image: sitk.Image) -> sitk.Image:
    """A 3D reference image with the spatial part of a 3D, vector or 4D image's geometry."""
    ref = sitk.Image([int(v) for v in image.GetSize()[:3]], sitk.sitkUInt8)
    if image.GetDimension() == 4:
        d = np.asarray(image.GetDirection()).reshape(4, 4)
        ref.SetSpacing(image.GetSpacing()[:3])
        ref.SetOrigin(image.GetOrigin()[:3])
        ref.SetDirection(tuple(d[:3, :3].ravel()))
    else:
        ref.SetSpacing(image.GetSpacing())
        ref.SetOrigin(image.GetOrigin())
        ref.SetDirection(image.GetDirection())
    return ref


def read_segmentation(path: Union[PathLike, sitk.Image]) -> Segmentation:
    """Read a Slicer ``.seg.nrrd`` (3D label or 4D layered form)."""
    image = path if isinstance(path, sitk.Image) else read_image(path, allow_multicomponent=True)
    where = "" if isinstance(path, sitk.Image) else str(path)
    fields: Dict[int, Dict[str, str]] = {}
    for key in image.GetMetaDataKeys():
        m = _KEY.match(key)
        if m:
            fields.setdefault(int(m.group(1)), {})[m.group(2)] = image.GetMetaData(key).strip()
    if not any("Name" in f for f in fields.values()):
        raise InputError(
            f"{where or 'the image'} has no Segment<N>_Name entries, so it is not a Slicer "
            "segmentation; load it as a label map and give the lung and nodule label values"
        )
    segments = []
    for index in sorted(fields):
        f = fields[index]
        try:
            segments.append(
                SegmentInfo(
                    index,
                    f.get("Name", f"Segment_{index}"),
                    f.get("ID", f"Segment_{index}"),
                    int(f.get("Layer", 0)),
                    int(f.get("LabelValue", 1)),
                )
            )
        except ValueError:
            raise InputError(f"segment {index} in {where} has a non-integer layer or label value: {f}") from None
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 4:
        layers = [array[i] for i in range(array.shape[0])]  # (t, z, y, x)
    elif image.GetNumberOfComponentsPerPixel() > 1:
        layers = [array[..., i] for i in range(array.shape[-1])]  # (z, y, x, layer)
    elif image.GetDimension() == 3:
        layers = [array]
    else:
        raise InputError(f"{where} is a {image.GetDimension()}D segmentation; a 3D volume is required")
    return Segmentation(segments, layers, _geometry_3d(image), where)


def write_segmentation(
    layout: sitk.Image,
    path: PathLike,
    segments: Optional[Dict[int, Tuple[str, Tuple[float, float, float]]]] = None,
) -> Path:
    """Write a label map as a one-layer Slicer segmentation (3D label volume plus segment table).

    Every listed label value becomes a segment, even if empty, so the file always has the same segments; by default
    lung and nodule, plus a segment per nodule class the layout has (:data:`TYPED_SEGMENTS`).
    """
    if not str(path).lower().endswith(".seg.nrrd"):
        raise InputError(f"a Slicer segmentation must be written as .seg.nrrd, got {path}")
    array = sitk.GetArrayViewFromImage(layout)
    if segments is None:
        present = set(np.unique(array).tolist())
        segments = {**LAYOUT_SEGMENTS, **{v: seg for v, seg in TYPED_SEGMENTS.items() if v in present}}
    out = sitk.Cast(layout, sitk.sitkUInt8)
    out.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    out.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    out.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    for index, (value, (name, colour)) in enumerate(sorted(segments.items())):
        where = np.nonzero(array == value)
        if len(where[0]):
            # Slicer's extent is (i_min i_max j_min j_max k_min k_max) with i along x.
            z, y, x = (np.asarray(w) for w in where)
            extent = f"{x.min()} {x.max()} {y.min()} {y.max()} {z.min()} {z.max()}"
        else:
            extent = "0 -1 0 -1 0 -1"
        prefix = f"Segment{index}_"
        out.SetMetaData(prefix + "ID", name)
        out.SetMetaData(prefix + "Name", name)
        out.SetMetaData(prefix + "NameAutoGenerated", "0")
        out.SetMetaData(prefix + "Color", " ".join(f"{c:.3f}" for c in colour))
        out.SetMetaData(prefix + "ColorAutoGenerated", "0")
        out.SetMetaData(prefix + "LabelValue", str(int(value)))
        out.SetMetaData(prefix + "Layer", "0")
        out.SetMetaData(prefix + "Extent", extent)
        out.SetMetaData(prefix + "Tags", "Segmentation.Status:completed|")
    return write_image(out, path)


def segment_names(names: Union[str, Sequence[str], None]) -> Tuple[str, ...]:
    """Normalise a name or list of names given on a command line or in Python."""
    if names is None:
        return ()
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    return tuple(n.strip() for n in names if n.strip())
