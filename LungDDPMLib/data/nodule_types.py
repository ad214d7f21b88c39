"""Nodule density classes in layouts: how users say them and how a layout carries them.

A layout marks each nodule voxel with a label value: 2 for a nodule of unstated type, 3 solid, 4 part-solid,
5 ground-glass (:data:`LungDDPMLib.config.LABEL_OF_TYPE`). Keeping the class in the one label volume means every
step that moves a layout (resampling, cropping, flipping, caching, Slicer label maps) carries it for free, and a
model that knows no types (the published two-channel models) simply sees "nodule" for all of them.

Users state classes in three ways, all mapped here:

* a label map whose nodules have the values 3/4/5 (what this package writes, e.g. the phantom's layouts);
* a type table beside a label map: ``{label value: type}``, on the command line ``--nodule-type 3=ground-glass``
  or ``--nodule-type ground-glass`` for every nodule;
* Slicer segment names: "nodule GGO", "part-solid nodule", "solid nodule" (see :func:`type_from_name`).
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk

from ..config import LABEL_NODULE, LABEL_OF_TYPE, NODULE_TYPES, TYPE_OF_LABEL, is_nodule
from ..errors import InputError

#: Key of a type table entry that applies to every nodule.
ALL = "all"
#: Words (lower case) in a segment name that state a density class; checked in this order, because "part-solid"
#: and "non-solid" contain "solid".
_NAME_WORDS = (
    ("ground-glass", ("ground-glass", "ground glass", "groundglass", "ggo", "ggn", "non-solid", "nonsolid", "pure gg")),
    ("part-solid", ("part-solid", "part solid", "partsolid", "partly solid", "partially solid", "semi-solid", "mixed")),
    ("solid", ("solid",)),
)
#: Aliases accepted where a type is typed by hand.
_ALIASES = {
    "solid": "solid",
    "part-solid": "part-solid",
    "partsolid": "part-solid",
    "part_solid": "part-solid",
    "ground-glass": "ground-glass",
    "groundglass": "ground-glass",
    "ground_glass": "ground-glass",
    "ggo": "ground-glass",
    "ggn": "ground-glass",
    "gg": "ground-glass",
}
TypeTable = Dict[Union[int, str], str]


def canonical_type(name: str) -> str:
    """``"GGO"`` -> ``"ground-glass"``; an unknown name is an :class:`InputError` that lists the classes."""
    key = str(name).strip().lower().replace(" ", "-")
    if key not in _ALIASES:
        raise InputError(f"unknown nodule type {name!r}; choose one of {', '.join(NODULE_TYPES)} (or GGO)")
    return _ALIASES[key]


def type_from_name(name: str) -> Optional[str]:
    """The density class a segment name states ("Nodule GGO" -> ground-glass), or ``None`` if it states none."""
    text = " " + re.sub(r"[_]+", " ", name.strip().lower()) + " "
    for kind, words in _NAME_WORDS:
        for word in words:
            if re.search(r"(?<![a-z])" + re.escape(word) + r"(?![a-z])", text):
                return kind
    return None


def names_a_type(name: str) -> bool:
    """A segment named only by its class ("GGO", "ground glass") is a nodule too."""
    return type_from_name(name) is not None


def parse_type_table(specs: Union[str, Iterable[str], Mapping, None]) -> TypeTable:
    """``["3=ground-glass", "4=solid"]``, ``"ground-glass"`` (every nodule) or a mapping -> ``{key: type}``.

    Keys are label values (int) or segment names (str); the key :data:`ALL` applies to every nodule.
    """
    if specs is None:
        return {}
    if isinstance(specs, Mapping):
        items = list(specs.items())
    else:
        entries = [specs] if isinstance(specs, str) else list(specs)
        items = []
        for entry in entries:
            for part in str(entry).split(","):
                part = part.strip()
                if not part:
                    continue
                key, sep, value = part.rpartition("=")
                items.append((key.strip() if sep else ALL, value))
    table: TypeTable = {}
    for key, value in items:
        kind = canonical_type(value)
        if isinstance(key, str) and key.strip().lstrip("-").isdigit():
            key = int(key)
        if key in table and table[key] != kind:
            raise InputError(f"nodule {key!r} is given two types, {table[key]} and {kind}")
        table[key] = kind
    if ALL in table and len(table) > 1:
        raise InputError("give either one type for every nodule or a type per nodule label, not both")
    return table


def check_model_types(counts: Mapping[str, int], model_types: Sequence[str]) -> None:
    """Refuse nodule classes that a type-aware model was not trained on, naming the ones it knows."""
    unknown = sorted(k for k, n in counts.items() if n and k in NODULE_TYPES and k not in model_types)
    if unknown:
        raise InputError(
            f"the layout has {', '.join(unknown)} nodule(s), but this model was trained only on "
            f"{', '.join(model_types)} nodules; change those nodules' type or use another model"
        )


def type_counts(labels: np.ndarray) -> Dict[str, int]:
    """Number of nodules (connected components) per class; ``nodule`` counts those of unstated type."""
    from .masks import count_components, mask_box

    out = {"nodule": 0, **{k: 0 for k in NODULE_TYPES}}
    labels = np.asarray(labels)
    box = mask_box(is_nodule(labels))
    if box is None:
        return out
    inside = labels[box]  # every nodule lies in this box, so its components are the whole volume's
    for value, kind in [(LABEL_NODULE, "nodule"), *TYPE_OF_LABEL.items()]:
        out[kind] = count_components(inside == value)
    return out


def type_report(labels: np.ndarray, model_types: Sequence[str] = ()) -> Dict[str, object]:
    """What a synthesis did with the layout's nodule classes, for the provenance.

    ``model_types`` empty: the model is not conditioned on type, so stated classes are ignored (reported so). For a
    type-aware model, classes it was not trained on are refused and untyped nodules are drawn as its first class.
    """
    counts = type_counts(labels)
    typed = sum(counts[k] for k in NODULE_TYPES)
    report: Dict[str, object] = {"nodules": counts}
    if not model_types:
        report["used"] = False
        if typed:
            report["note"] = (
                f"the model is not conditioned on nodule type: the {typed} typed nodule(s) were drawn as plain nodules"
            )
        return report
    check_model_types(counts, model_types)
    report["used"] = True
    if counts["nodule"]:
        report["note"] = f"{counts['nodule']} nodule(s) of unstated type were drawn as {model_types[0]}"
    return report


def retype(labels: np.ndarray, kind: Optional[str], where: Optional[np.ndarray] = None) -> np.ndarray:
    """A copy of ``labels`` whose nodule voxels (within ``where``) have class ``kind`` (``None``: untyped)."""
    out = labels.copy()
    mask = is_nodule(out) if where is None else (is_nodule(out) & where)
    out[mask] = LABEL_NODULE if kind is None else LABEL_OF_TYPE[canonical_type(kind)]
    return out


def retype_image(layout: sitk.Image, kind: Optional[str]) -> sitk.Image:
    """:func:`retype` for a layout image (same geometry): e.g. ``retype_image(layout, None)`` withholds the classes."""
    out = sitk.GetImageFromArray(retype(sitk.GetArrayFromImage(layout), kind))
    out.CopyInformation(layout)
    return out
