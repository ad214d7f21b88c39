"""Layouts: the lung/nodule label map that conditions synthesis, from whatever the user drew.

Users bring label maps with their own label values (left and right lung as 1 and 2, nodules as 3...), or
Slicer segmentations with named segments, often cropped to the drawn region or on another grid than the
CT. Everything is converted to one uint8 volume on the CT grid with the values of
:mod:`LungDDPMLib.config` (0 background, 1 lung, 2 nodule), and checked for the mistakes that would
silently ruin a synthesis: no lung, absent label values, a layout that misses the CT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..config import (
    LABEL_BACKGROUND,
    LABEL_LUNG,
    LABEL_NODULE,
    LABEL_OF_TYPE,
    LAYOUT_LABELS,
    NODULE_LABELS,
    TYPE_OF_LABEL,
    is_nodule,
)
from ..errors import InputError
from .io import Geometry, PathLike, file_suffix, read_image
from .nodule_types import ALL, TypeTable, names_a_type, parse_type_table, type_counts, type_from_name
from .segmentation import Segmentation, read_segmentation, segment_names
from .validation import warn

AUTO_LUNG_MODES = ("never", "if-missing", "always")
NODULE_WORDS = ("nodule", "lesion", "tumor", "tumour", "mass")
#: A label map with more distinct values than this is taken for an intensity image (a CT given as a layout).
MAX_LABEL_VALUES = 64
#: A layout on another grid is resampled onto the CT only if their extents overlap at least this much
#: (intersection over union of the physical boxes); below it the two are likely not aligned (a shifted origin, a
#: crop) and the user must say ``resample=True`` (``--resample-layout``).
MIN_EXTENT_OVERLAP = 0.95


def _values(values: Union[int, Iterable[int]]) -> Tuple[int, ...]:
    if isinstance(values, (int, np.integer)):
        return (int(values),)
    out = tuple(int(v) for v in values)
    return out


def layout_from_labelmap(
    labels: sitk.Image,
    lung_values: Union[int, Sequence[int]] = (1,),
    nodule_values: Union[int, Sequence[int]] = NODULE_LABELS,
    ignore_values: Union[int, Sequence[int], None] = None,
    nodule_types: Union[TypeTable, str, Sequence[str], None] = None,
) -> sitk.Image:
    """Map a label map's values to the layout values (several lung or nodule values are merged).

    ``nodule_types`` states nodule density classes: ``{label value: type}`` or ``{"all": type}`` (see
    :func:`~LungDDPMLib.data.nodule_types.parse_type_table`). Without it, the nodule values 3, 4 and 5 keep their
    standard classes (solid, part-solid, ground-glass; what this package writes) and every other nodule value is a
    nodule of unstated type. A table entry for a value that is not a nodule value, or not in the label map, is an
    error (it would otherwise silently change nothing).

    Every value must be background (0), lung, nodule or explicitly ignored (``ignore_values``, read as
    background): a value that fits none is refused rather than silently dropped (a right lung labelled 3 would
    otherwise vanish). Raises :class:`InputError` for that, for an image with more than
    :data:`MAX_LABEL_VALUES` distinct values (a CT given as a layout) and when no requested lung value is present;
    absent nodule values only warn, because a layout without nodules is a valid (healthy) synthesis.
    """
    lung_values, nodule_values = _values(lung_values), _values(nodule_values)
    ignore = _values(ignore_values) if ignore_values is not None else ()
    overlap = set(lung_values) & set(nodule_values)
    if overlap:
        raise InputError(
            f"label value(s) {sorted(overlap)} are given both as lung and as nodule; each value can be only one of them"
        )
    if LABEL_BACKGROUND in lung_values or LABEL_BACKGROUND in nodule_values:
        raise InputError("label value 0 is background and cannot be a lung or nodule value")
    array = sitk.GetArrayViewFromImage(labels)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):
            raise InputError(
                "the label map has non-integer values; is it a CT or a probability map? "
                "Threshold it or give a label map with integer values"
            )
        array = array.astype(np.int64)
    distinct = np.unique(array)
    if len(distinct) > MAX_LABEL_VALUES:
        raise InputError(
            f"the layout has {len(distinct)} distinct values ({distinct.min()}..{distinct.max()}), far more than a "
            "label map; is it a CT or another intensity image? Give the lung/nodule label map"
        )
    present = set(distinct.tolist())
    listing = ", ".join(str(v) for v in sorted(present)[:20])
    unknown = sorted(present - {LABEL_BACKGROUND, *lung_values, *nodule_values, *ignore})
    if unknown:
        raise InputError(
            f"the label map has value(s) {unknown[:10]} that are neither background (0), lung {list(lung_values)} "
            f"nor nodule {list(nodule_values)} (it contains {listing}); map them, e.g. --lung-labels "
            f"{','.join(str(v) for v in [*lung_values, unknown[0]])}, or --nodule-labels / --ignore-labels"
        )
    missing_lung = [v for v in lung_values if v not in present]
    if len(missing_lung) == len(lung_values):
        raise InputError(
            f"lung label value(s) {list(lung_values)} not found in the label map, which contains "
            f"{listing}; pass the right lung values (e.g. --lung-labels) or use the automatic "
            "lung mask"
        )
    if missing_lung:
        warn(f"lung label value(s) {missing_lung} not found (the label map contains {listing}); using the others")
    missing_nodule = [v for v in nodule_values if v not in present]
    if nodule_values and len(missing_nodule) == len(nodule_values):
        warn(
            f"nodule label value(s) {list(nodule_values)} not found (the label map contains {listing}); "
            "the synthesis will have no nodule"
        )
    table = parse_type_table(nodule_types)
    for key in table:
        if key == ALL:
            continue
        if not isinstance(key, int) or key not in nodule_values:
            raise InputError(
                f"the nodule type table names label {key!r}, which is not a nodule label value "
                f"(nodule values: {list(nodule_values)}); give the nodule's value in the label map"
            )
        if key not in present:
            raise InputError(
                f"the nodule type table names nodule label {key}, which is not in the label map (it contains "
                f"{listing}); remove the entry or give the right value"
            )
    if not table:
        _check_typed_values_are_nodules(
            labels, array, [v for v in nodule_values if v in TYPE_OF_LABEL and v in present]
        )
    out = np.zeros(array.shape, dtype=np.uint8)
    out[np.isin(array, lung_values)] = LABEL_LUNG
    for value in nodule_values:
        if ALL in table:
            kind: Optional[str] = table[ALL]
        elif table:
            kind = table.get(value)
        else:
            kind = TYPE_OF_LABEL.get(value)
        out[array == value] = LABEL_OF_TYPE[kind] if kind else LABEL_NODULE
    return Geometry.of(labels).image_from_array(out)


#: A region of one of the typed nodule values (3-5) larger than this is not a nodule (the largest graded nodule,
#: 30 mm, is 14 cm^3): in a user's label map those values most likely mean lungs or lobes.
MAX_NODULE_MM3 = 65_000.0


def _check_typed_values_are_nodules(labels: sitk.Image, array: np.ndarray, values: Sequence[int]) -> None:
    """Values 3-5 mean typed nodules by default; refuse that reading where their regions are far too big for nodules
    (a right lung labelled 3 would otherwise become a solid "nodule")."""
    voxel = float(np.prod(labels.GetSpacing()))
    for value in values:
        components, n = ndi.label(array == value)
        largest = float(np.bincount(components.ravel())[1:].max()) * voxel if n else 0.0
        if largest > MAX_NODULE_MM3:
            raise InputError(
                f"label value [{value}] covers a region of {largest / 1000:.0f} cm^3, far larger than a nodule (by "
                f"default 3, 4 and 5 mean solid, part-solid and ground-glass nodules); if it is lung, pass "
                f"--lung-labels 1,{value} (or --ignore-labels {value})"
            )


def _match(seg: Segmentation, names: Tuple[str, ...], default_test) -> list:
    if names:
        found, missing = [], []
        for name in names:
            s = seg.find(name)
            (found if s is not None else missing).append(s if s is not None else name)
        if missing:
            raise InputError(
                f"segment(s) {missing} not found in {seg.path or 'the segmentation'}; it has "
                f"{seg.names} (names are matched case-insensitively)"
            )
        return found
    return [s for s in seg.segments if default_test(s.name.strip().lower())]


def layout_from_segmentation(
    seg: Union[Segmentation, PathLike],
    lung_names: Union[str, Sequence[str], None] = None,
    nodule_names: Union[str, Sequence[str], None] = None,
    nodule_types: Union[TypeTable, str, Sequence[str], None] = None,
) -> sitk.Image:
    """Build a layout from named segments of a Slicer segmentation.

    Without explicit names, every segment whose name contains "lung" (and no nodule word) is lung, and
    every segment named like a nodule ("nodule", "lesion", "tumor", "mass") or by a density class ("GGO") is a
    nodule. A nodule's class comes from ``nodule_types`` (``{segment name: type}`` or ``{"all": type}``) or else
    from its name ("nodule GGO", "part-solid nodule", "solid nodule"); other nodules have no stated class.
    """
    seg = seg if isinstance(seg, Segmentation) else read_segmentation(seg)
    named_nodule = lambda n: any(w in n for w in NODULE_WORDS) or names_a_type(n)  # noqa: E731
    lungs = _match(seg, segment_names(lung_names), lambda n: "lung" in n and not named_nodule(n))
    nodules = _match(seg, segment_names(nodule_names), named_nodule)
    table = parse_type_table(nodule_types)
    by_name = {s.name.strip().lower(): s for s in nodules}
    for key in table:
        if key != ALL and str(key).strip().lower() not in by_name:
            raise InputError(
                f"the nodule type table names segment {key!r}, which is not a nodule segment of "
                f"{seg.path or 'the segmentation'} (nodule segments: {[s.name for s in nodules]})"
            )
    lowered = {str(k).strip().lower(): v for k, v in table.items()}
    if not lungs:
        raise InputError(
            f"no lung segment in {seg.path or 'the segmentation'} (segments: {seg.names}); name "
            "the lung segment(s) 'lung', pass their names, or use the automatic lung mask"
        )
    if not nodules:
        warn(
            f"no nodule segment in {seg.path or 'the segmentation'} (segments: {seg.names}); "
            "the synthesis will have no nodule"
        )
    out = np.zeros(seg.layers[0].shape, dtype=np.uint8)
    for s in lungs:
        out[seg.mask(s)] = LABEL_LUNG
    kinds = [lowered.get(ALL) or lowered.get(s.name.strip().lower()) or type_from_name(s.name) for s in nodules]
    # Where nodule segments overlap, a stated class wins over none and a denser class over a lighter one (the rule
    # the Slicer module applies too): paint in rising order of that priority.
    rank = {None: 0, "ground-glass": 1, "part-solid": 2, "solid": 3}
    for s, kind in sorted(zip(nodules, kinds), key=lambda sk: rank[sk[1]]):
        out[seg.mask(s)] = LABEL_OF_TYPE[kind] if kind else LABEL_NODULE
    return Geometry.of(seg.reference).image_from_array(out)


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


def auto_lung_mask(ct: sitk.Image, threshold: float = -400.0) -> sitk.Image:
    """Lung mask from a CT: air-like voxels not connected to the air around the body, the one or two
    largest such components, holes (vessels, nodules) filled slice by slice. Good enough to condition
    synthesis; the trachea and main bronchi may be included. Assumes axial slices along the array's
    first axis, as in any CT series."""
    hu = sitk.GetArrayViewFromImage(ct)
    air = hu < threshold
    labels, n = ndi.label(air)
    if n == 0:
        raise InputError(
            f"the CT has no voxels below {threshold} HU, so no lung can be found automatically; "
            "draw the lungs in the layout"
        )
    # Air outside the body touches the in-plane borders; the lungs do not, although the trachea may leave
    # the volume through its top or bottom face, so those faces do not count.
    border = np.unique(np.concatenate([labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()]))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    sizes[border] = 0
    if sizes.max() == 0:
        raise InputError(
            "no enclosed air region (lung) found in the CT; it may be cropped through the body "
            "or not contain the lungs; draw the lungs in the layout"
        )
    order = np.argsort(sizes)[::-1]
    keep = [order[0]] + [i for i in order[1:2] if sizes[i] > 0.2 * sizes[order[0]]]
    mask = np.isin(labels, keep)
    for k in range(mask.shape[0]):
        if mask[k].any():
            mask[k] = ndi.binary_fill_holes(mask[k])
    out = Geometry.of(ct).image_from_array(mask.astype(np.uint8) * LABEL_LUNG)
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
    layout has no lung) or ``always`` (lung from the CT, nodules from the layout).
    """
    if auto_lung not in AUTO_LUNG_MODES:
        raise InputError(f"unknown auto_lung mode {auto_lung!r}; choose one of {', '.join(AUTO_LUNG_MODES)}")
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
            "the layout has no lung voxels (value 1); draw the lungs, give the right lung label "
            "values or segment names, or use the automatic lung mask (auto_lung='if-missing')"
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
    :func:`layout_from_labelmap` and :func:`layout_from_segmentation`). Returns the layout and a report for the
    provenance: whether it was resampled, the extent overlap, the geometry difference (see
    :func:`layout_grid_report`) and the nodules per class.
    """
    path = Path(path)
    image = read_image(path, allow_multicomponent=True)
    is_seg = any(k.startswith("Segment") and k.endswith("_Name") for k in image.GetMetaDataKeys())
    if is_seg:
        seg = read_segmentation(image)
        seg.path = str(path)
        layout = layout_from_segmentation(seg, lung_segments, nodule_segments, nodule_types)
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
            (1,) if lung_labels is None else lung_labels,
            _default_nodule_values(lung_labels, ignore_labels) if nodule_labels is None else nodule_labels,
            ignore_labels,
            nodule_types,
        )
    report = layout_grid_report(layout, reference, resample)
    layout = check_layout(resample_to_reference(layout, reference), reference, auto_lung)
    report["nodule_types"] = type_counts(sitk.GetArrayViewFromImage(layout))
    return layout, report


def load_layout(path: PathLike, reference: sitk.Image, *args: object, **kwargs: object) -> sitk.Image:
    """:func:`read_layout` (same arguments) without the report."""
    return read_layout(path, reference, *args, **kwargs)[0]  # type: ignore[arg-type]
