"""Slicer segmentations as layouts: segments chosen by name (or by the words users name them with), nodule classes
from a table or from the segment names, overlaps resolved by one stated rule."""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..config import LABEL_LUNG, LABEL_NODULE, LABEL_OF_TYPE
from ..errors import InputError
from .auto_lung import AUTO_LUNG_HINT
from .io import Geometry, PathLike
from .nodule_types import ALL, TypeTable, names_a_type, parse_type_table, type_from_name
from .segmentation import Segmentation, read_segmentation, segment_names
from .validation import warn

NODULE_WORDS = ("nodule", "lesion", "tumor", "tumour", "mass")


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
    *,
    require_lung: bool = True,
) -> sitk.Image:
    """Build a layout from named segments of a Slicer segmentation.

    Without explicit names, every segment whose name contains "lung" (and no nodule word) is lung, and
    every segment named like a nodule ("nodule", "lesion", "tumor", "mass") or by a density class ("GGO") is a
    nodule. A nodule's class comes from ``nodule_types`` (``{segment name: type}`` or ``{"all": type}``) or else
    from its name ("nodule GGO", "part-solid nodule", "solid nodule"); other nodules have no stated class. Without
    a lung segment it raises :class:`InputError`, unless ``require_lung`` is false (the lung will come from the CT,
    see :func:`~LungDDPMLib.data.layout.check_layout`).
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
    if not lungs and require_lung:
        raise InputError(
            f"no lung segment in {seg.path or 'the segmentation'} (segments: {seg.names}); name the lung "
            f"segment(s) 'lung', pass their names (--lung-segments) {AUTO_LUNG_HINT}"
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
