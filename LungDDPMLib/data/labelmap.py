"""Label maps as layouts: a user's label values (left and right lung as 1 and 2, nodules as 7...) mapped to the
layout values of :mod:`LungDDPMLib.config`, refusing every value that would silently mean something else."""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..config import LABEL_BACKGROUND, LABEL_LUNG, LABEL_NODULE, LABEL_OF_TYPE, NODULE_LABELS, TYPE_OF_LABEL
from ..errors import InputError
from .auto_lung import AUTO_LUNG_HINT
from .io import Geometry
from .masks import largest_component
from .nodule_types import ALL, TypeTable, parse_type_table
from .validation import warn

#: A label map with more distinct values than this is taken for an intensity image (a CT given as a layout).
MAX_LABEL_VALUES = 64


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
    *,
    require_lung: bool = True,
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
    :data:`MAX_LABEL_VALUES` distinct values (a CT given as a layout) and, unless ``require_lung`` is false, when no
    requested lung value is present; absent nodule values only warn, because a layout without nodules is a valid
    (healthy) synthesis. ``require_lung=False`` is for a lung that will come from the CT (the automatic lung mask,
    see :func:`~LungDDPMLib.data.layout.check_layout`): a layout of nodules alone is then complete.
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
    if require_lung and len(missing_lung) == len(lung_values):
        raise InputError(
            f"lung label value(s) {list(lung_values)} not found in the label map, which contains "
            f"{listing}; pass the right lung values (e.g. --lung-labels) {AUTO_LUNG_HINT}"
        )
    if missing_lung and len(missing_lung) < len(lung_values):
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
        largest = largest_component(array == value) * voxel
        if largest > MAX_NODULE_MM3:
            raise InputError(
                f"label value [{value}] covers a region of {largest / 1000:.0f} cm^3, far larger than a nodule (by "
                f"default 3, 4 and 5 mean solid, part-solid and ground-glass nodules); if it is lung, pass "
                f"--lung-labels 1,{value} (or --ignore-labels {value})"
            )
