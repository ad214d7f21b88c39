"""Layouts: the lung/nodule label map that conditions synthesis, from whatever the user drew.

Users bring label maps with their own label values (left and right lung as 1 and 2, nodules as 3...), or
Slicer segmentations with named segments, often cropped to the drawn region or on another grid than the
CT. Everything is converted to one uint8 volume on the CT grid with the values of
:mod:`LungDDPMLib.config` (0 background, 1 lung, 2 nodule), and checked for the mistakes that would
silently ruin a synthesis: no lung, absent label values, a layout that misses the CT.

The converters live in :mod:`.labelmap` and :mod:`.layout_segments` and the automatic lung mask in
:mod:`.auto_lung`; this module puts them together (:func:`read_layout`) and is their public import path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..config import LABEL_BACKGROUND, LABEL_LUNG, LAYOUT_LABELS, NODULE_LABELS, is_nodule
from ..errors import InputError
from .auto_lung import AUTO_LUNG_HINT, AUTO_LUNG_MODES, auto_lung_mask, check_auto_lung_mode
from .io import Geometry, PathLike, file_suffix, read_image
from .labelmap import MAX_LABEL_VALUES, MAX_NODULE_MM3, _values, layout_from_labelmap
from .layout_segments import NODULE_WORDS, layout_from_segmentation
from .nodule_types import TypeTable, type_counts
from .segmentation import read_segmentation
from .validation import warn

#: A layout on another grid is resampled onto the CT only if their extents overlap at least this much
#: (intersection over union of the physical boxes); below it the two are likely not aligned (a shifted origin, a
#: crop) and the user must say ``resample=True`` (``--resample-layout``).
MIN_EXTENT_OVERLAP = 0.95
__all__ = [  # the converters and the automatic lung mask live in their own modules; this is their public home
    "AUTO_LUNG_MODES",
    "MAX_LABEL_VALUES",
    "MAX_NODULE_MM3",
    "MIN_EXTENT_OVERLAP",
    "NODULE_WORDS",
    "auto_lung_mask",
    "check_layout",
    "layout_from_labelmap",
    "layout_from_segmentation",
    "layout_grid_report",
    "layout_labels",
    "load_layout",
    "read_layout",
    "resample_to_reference",
]


def resample_to_reference(layout: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Put a layout on the CT grid (nearest neighbour); unchanged if it is already on it.

    Raises when the layout had foreground but none of it falls inside the CT, which means the two files
    are not in the same patient coordinate system.
    """
    if Geometry.of(layout).matches(Geometry.of(reference), tol=1e-5):
        out = sitk.Cast(layout, sitk.sitkUInt8)
        out.CopyInformation(reference)
        return out
    out = sitk.Resample(layout, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    if sitk.GetArrayViewFromImage(layout).any() and not sitk.GetArrayViewFromImage(out).any():
        raise InputError(
            "the layout does not overlap the CT: layout "
            + Geometry.of(layout).describe()
            + "; CT "
            + Geometry.of(reference).describe()
            + ". Check that both come from the same scan and that the "
            "layout was not saved in another coordinate system (e.g. RAS instead of LPS)"
        )
    return out


def layout_labels(layout: sitk.Image) -> np.ndarray:
    """The layout as uint8 labels, checked on the original values (a cast first would turn 257 into 1)."""
    raw = sitk.GetArrayFromImage(layout)
    bad = np.setdiff1d(np.unique(raw), LAYOUT_LABELS)
    if len(bad):
        shown = ", ".join(f"{v:g}" for v in bad[:8].tolist())
        raise InputError(
            f"the layout has values [{shown}]; a layout may only contain 0 (background), 1 (lung), 2 (nodule) and "
            "3-5 (solid, part-solid, ground-glass nodule). Convert it with layout_from_labelmap"
        )
    return raw.astype(np.uint8)


def check_layout(layout: sitk.Image, ct: Optional[sitk.Image] = None, auto_lung: str = "never") -> sitk.Image:
    """Validate a layout on the CT grid; may replace or add the lung with the automatic mask.

    ``auto_lung``: ``never`` (an empty lung is an error), ``if-missing`` (use the automatic mask when the
    layout has no lung) or ``always`` (lung from the CT, nodules from the layout). With the automatic mask, a voxel
    of the mask that the layout marks as a nodule stays a nodule.
    """
    check_auto_lung_mode(auto_lung)
    array = layout_labels(layout)
    has_lung = bool((array == LABEL_LUNG).any())
    if auto_lung == "always" or (auto_lung == "if-missing" and not has_lung):
        if ct is None:
            raise InputError("the automatic lung mask needs the CT")
        lung = sitk.GetArrayFromImage(auto_lung_mask(ct)) > 0
        array[~is_nodule(array) & lung] = LABEL_LUNG
        if auto_lung == "always":
            array[(array == LABEL_LUNG) & ~lung] = LABEL_BACKGROUND
        has_lung = bool(lung.any())
    if not has_lung:
        raise InputError(
            "the layout has no lung voxels (value 1); draw the lungs, give the right lung label values or segment "
            f"names, {AUTO_LUNG_HINT}"
        )
    nodules = is_nodule(array)
    if not nodules.any():
        warn("the layout has no nodule: the synthesis will show healthy lung")
    else:
        labels, n = ndi.label(nodules)
        lung = array == LABEL_LUNG
        outside = []
        for i, box in enumerate(ndi.find_objects(labels), start=1):
            grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
            touching = ndi.binary_dilation(labels[grown] == i) & lung[grown]
            if not touching.any():
                outside.append([int((s.start + s.stop) // 2) for s in box][::-1])
        if outside:
            warn(
                f"{len(outside)} of {n} nodule(s) lie outside the lung (centre voxel(s) x,y,z {outside}); "
                "they will be synthesised anyway"
            )
    out = Geometry.of(layout).image_from_array(array)
    return out


def layout_grid_report(layout: sitk.Image, reference: sitk.Image, resample: bool) -> Dict[str, object]:
    """How a layout's grid relates to the CT's: the difference and the overlap of their extents.

    Raises :class:`InputError` when the grids differ and overlap less than :data:`MIN_EXTENT_OVERLAP`, unless
    ``resample`` is given; a smaller difference is reported as a warning, because resampling a label map moves
    boundaries by up to half a voxel.
    """
    lay_geo, ct_geo = Geometry.of(layout), Geometry.of(reference)
    if lay_geo.matches(ct_geo, tol=1e-5):
        return {"resampled": False, "warnings": []}
    (a_lo, a_hi), (b_lo, b_hi) = lay_geo.physical_bounds(), ct_geo.physical_bounds()
    a_hi, b_hi = a_hi + np.asarray(lay_geo.spacing), b_hi + np.asarray(ct_geo.spacing)  # voxel extents, not centres
    inter = np.prod(np.clip(np.minimum(a_hi, b_hi) - np.maximum(a_lo, b_lo), 0, None))
    union = np.prod(a_hi - a_lo) + np.prod(b_hi - b_lo) - inter
    overlap = float(inter / union) if union > 0 else 0.0
    shift = float(np.linalg.norm(np.asarray(lay_geo.origin) - np.asarray(ct_geo.origin)))
    difference = f"layout {lay_geo.describe()}; CT {ct_geo.describe()}; origins {shift:.1f} mm apart"
    if overlap < MIN_EXTENT_OVERLAP and not resample:
        raise InputError(
            f"the layout is on another grid than the CT and their extents overlap only {overlap:.0%} "
            f"({difference}); if it is nevertheless aligned with the CT (e.g. cropped to the drawn region), pass "
            "--resample-layout (resample=True); otherwise fix its geometry"
        )
    message = f"the layout was resampled onto the CT grid (extents overlap {overlap:.0%}; {difference})"
    warn(message)
    return {"resampled": True, "extent_overlap": round(overlap, 4), "difference": difference, "warnings": [message]}


def _default_nodule_values(lung: Union[int, Sequence[int], None], ignore: Union[int, Sequence[int], None]) -> tuple:
    """2 and the typed values 3-5, less any value the user gave as lung or ignored."""
    taken = set(_values(lung) if lung is not None else ()) | set(_values(ignore) if ignore is not None else ())
    return tuple(v for v in NODULE_LABELS if v not in taken)


def read_layout(
    path: PathLike,
    reference: sitk.Image,
    lung_labels: Union[int, Sequence[int], None] = None,
    nodule_labels: Union[int, Sequence[int], None] = None,
    lung_segments: Union[str, Sequence[str], None] = None,
    nodule_segments: Union[str, Sequence[str], None] = None,
    auto_lung: str = "never",
    ignore_labels: Union[int, Sequence[int], None] = None,
    resample: bool = False,
    nodule_types: Union[TypeTable, str, Sequence[str], None] = None,
) -> Tuple[sitk.Image, Dict[str, object]]:
    """Read a layout (label map or ``.seg.nrrd``), convert, put it on ``reference``'s grid and check it.

    A ``.seg.nrrd`` (or any NRRD with Slicer segment entries) is read by segment names; anything else is a
    label map read with ``lung_labels`` (default 1), ``nodule_labels`` (default 2-5: a nodule, and the typed
    nodule values 3-5) and ``ignore_labels`` (background); ``nodule_types`` states nodule classes (see
    :func:`layout_from_labelmap` and :func:`layout_from_segmentation`). With ``auto_lung`` ``if-missing`` a layout
    without lung (only nodules) is completed with the lung found in the CT, with ``always`` the lung always comes
    from the CT (:func:`check_layout`). Returns the layout and a report for the
    provenance: whether it was resampled, the extent overlap, the geometry difference (see
    :func:`layout_grid_report`) and the nodules per class.
    """
    path = Path(path)
    check_auto_lung_mode(auto_lung)
    lung_needed = auto_lung == "never"  # otherwise a layout without lung is completed from the CT by check_layout
    image = read_image(path, allow_multicomponent=True)
    is_seg = any(k.startswith("Segment") and k.endswith("_Name") for k in image.GetMetaDataKeys())
    if is_seg:
        seg = read_segmentation(image)
        seg.path = str(path)
        layout = layout_from_segmentation(seg, lung_segments, nodule_segments, nodule_types, require_lung=lung_needed)
    else:
        if file_suffix(path) == ".seg.nrrd":
            raise InputError(f"{path} has no segment table (Segment<N>_Name); re-save it from Slicer")
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(
                f"the layout {path} must be a 3D label map, got a {image.GetDimension()}D image "
                f"with {image.GetNumberOfComponentsPerPixel()} component(s)"
            )
        layout = layout_from_labelmap(
            image,
            (LABEL_LUNG,) if lung_labels is None else lung_labels,
            _default_nodule_values(lung_labels, ignore_labels) if nodule_labels is None else nodule_labels,
            ignore_labels,
            nodule_types,
            require_lung=lung_needed,
        )
    report = layout_grid_report(layout, reference, resample)
    layout = check_layout(resample_to_reference(layout, reference), reference, auto_lung)
    report["nodule_types"] = type_counts(sitk.GetArrayViewFromImage(layout))
    return layout, report


def load_layout(path: PathLike, reference: sitk.Image, *args: object, **kwargs: object) -> sitk.Image:
    """:func:`read_layout` (same arguments) without the report."""
    return read_layout(path, reference, *args, **kwargs)[0]  # type: ignore[arg-type]
