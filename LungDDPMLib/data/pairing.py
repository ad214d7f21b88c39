"""Pairing CT and layout files of a folder by name: the rule ``lungddpm train --data`` and batch synthesis share.

``case1.nii.gz`` in a CT folder pairs with ``case1.nii.gz`` in a layout folder (the published repositories' layout),
and ``case1_ct.nrrd`` with ``case1_layout.nrrd`` in one folder; names are compared case-insensitively, without the
extension and the role tag, so a user's own folder pairs without renaming.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import InputError
from .io import READ_SUFFIXES, PathLike, file_suffix, strip_suffix
from .validation import warn

CT_TAGS = ("ct", "image", "img", "volume", "scan")
LAYOUT_TAGS = ("layout", "label", "labels", "labelmap", "seg", "segmentation", "mask")
_TAG = re.compile(r"^(.*?)[_\-.]([A-Za-z]+)$")


def _key_and_tag(path: Path) -> Tuple[str, str]:
    stem = strip_suffix(path)
    m = _TAG.match(stem)
    if m and m.group(2).lower() in CT_TAGS + LAYOUT_TAGS:
        return m.group(1).lower(), m.group(2).lower()
    return stem.lower(), ""


def _images(folder: Path) -> List[Path]:
    if not folder.is_dir():
        raise InputError(f"folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and file_suffix(p) in READ_SUFFIXES)


def pair_files(
    ct_dir: PathLike, layout_dir: Optional[PathLike] = None, strict: bool = False
) -> List[Tuple[str, Path, Path]]:
    """Match CTs and layouts by name: ``case1.nii.gz`` with ``case1.nii.gz`` in another folder, or
    ``case1_ct.nrrd`` with ``case1_layout.nrrd`` (also ``_label``, ``_seg``, ``_mask``) in one folder.
    A plain label map is preferred over a ``.seg.nrrd`` with the same name. Files without a partner are ignored
    with a warning, or with ``strict`` refused (a dataset built from the folders must not silently lose a case)."""
    ct_dir = Path(ct_dir)
    cts: Dict[str, Path] = {}
    layouts: Dict[str, Path] = {}

    def collision(key: str, first: Path, second: Path) -> InputError:
        return InputError(
            f"{first} and {second} both pair as case {key!r} (names are matched case-insensitively, without "
            "extension and _ct/_layout tags); rename or move one of them"
        )

    def add_layout(key: str, path: Path) -> None:
        if key in layouts:
            seg = [file_suffix(p) == ".seg.nrrd" for p in (layouts[key], path)]
            if seg[0] == seg[1]:
                raise collision(key, layouts[key], path)
            if seg[0]:  # a plain label map wins over a .seg.nrrd of the same name
                layouts[key] = path
            return
        layouts[key] = path

    for path in _images(ct_dir):
        key, tag = _key_and_tag(path)
        if layout_dir is None and (tag in LAYOUT_TAGS or file_suffix(path) == ".seg.nrrd"):
            add_layout(key, path)
        elif key in cts:
            raise collision(key, cts[key], path)
        else:
            cts[key] = path
    if layout_dir is not None:
        for path in _images(Path(layout_dir)):
            add_layout(_key_and_tag(path)[0], path)
    names = sorted(set(cts) & set(layouts))
    for name in names:
        if cts[name].resolve() == layouts[name].resolve():
            raise InputError(
                f"{cts[name]} would be paired with itself as CT and layout (the same file); give the layouts their "
                "own folder, or name them case_ct / case_layout"
            )
    unmatched = sorted(set(cts) ^ set(layouts))
    if not names:
        raise InputError(
            f"no CT/layout pairs found in {ct_dir}"
            + (f" and {layout_dir}" if layout_dir else "")
            + "; name them alike (case1.nii.gz in both folders, or case1_ct.nrrd + case1_layout.nrrd)"
        )
    if unmatched and strict:
        alone = [str(cts.get(n) or layouts.get(n)) for n in unmatched]
        raise InputError(
            f"{len(unmatched)} file(s) have no partner: {', '.join(alone[:5])}"
            + (" ..." if len(alone) > 5 else "")
            + "; every CT needs a layout of the same name (and every layout a CT): add it, rename it or move it out"
        )
    if unmatched:
        warn(f"{len(unmatched)} file(s) without a partner are ignored: {unmatched[:10]}")
    return [(n, cts[n], layouts[n]) for n in names]
