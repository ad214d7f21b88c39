"""Which synthetic CT belongs to which real CT and layout, for ``lungddpm evaluate``.

Users hand over files or folders in whatever shape their runs left them, so matching is by name first and
by simple structure second:

1. by case key: ``case7.nrrd``, ``case7_ct.nrrd``, ``case7_layout.seg.nrrd`` and the worker's outputs
   ``case7_synthetic.nrrd`` / ``case7_synthetic_2.nrrd`` all have the key ``case7``;
2. one real CT: every synthetic CT is a sample of it (several samples of one layout, as the worker writes);
3. as many real as synthetic CTs: paired in sorted order (the report says so).

Anything else has no pairing: set metrics (FID/MMD) still apply, paired metrics do not, and the report says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from ..data.io import READ_SUFFIXES, file_suffix, strip_suffix
from ..errors import InputError

PathLike = Union[str, Path]
_TAGS = re.compile(r"[_\-.](ct|image|img|volume|scan|layout|label|labels|labelmap|seg|segmentation|mask|real)$")
_LAYOUT_TAGS = ("layout", "label", "labels", "labelmap", "seg", "segmentation", "mask")
_SAMPLE = re.compile(r"[_\-.](synthetic|synth|sample|fake)([_\-.]?\d+)?$")


def case_key(path: PathLike) -> str:
    """The case name shared by a real CT, its layout and its synthetic samples (lower case)."""
    stem = strip_suffix(Path(path)).lower()
    stem = _SAMPLE.sub("", stem)
    return _TAGS.sub("", stem)


def _is_layout_name(path: Path) -> bool:
    m = _TAGS.search(strip_suffix(path).lower())
    return file_suffix(path) == ".seg.nrrd" or (m is not None and m.group(1) in _LAYOUT_TAGS)


def _role_files(files: List[Path], what: str) -> List[Path]:
    """In a folder holding CTs and layouts side by side (as ``lungddpm phantom`` writes), keep the role's files."""
    layouts = [f for f in files if _is_layout_name(f)]
    if what == "layout":
        plain = [f for f in layouts if file_suffix(f) != ".seg.nrrd"]
        keys = {case_key(f) for f in plain}  # a label map wins over a .seg.nrrd of the same case
        return (plain + [f for f in layouts if f not in plain and case_key(f) not in keys]) or files
    return [f for f in files if f not in layouts]


def expand(paths: Sequence[PathLike], what: str) -> List[Path]:
    """Files named directly, plus the image files inside named folders (DICOM folders stay one volume)."""
    out: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(
                f for f in p.iterdir() if f.is_file() and not f.name.startswith(".") and file_suffix(f) in READ_SUFFIXES
            )
            files = _role_files(files, what)
            if files:
                out.extend(files)
            elif any(f.suffix.lower() == ".dcm" for f in p.iterdir()):
                out.append(p)  # a DICOM series folder is one volume
            else:
                raise InputError(f"{what} folder {p} contains no image files ({', '.join(READ_SUFFIXES)} or DICOM)")
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{what} not found: {p}")
    if not out:
        raise InputError(f"no {what} files given")
    return out


@dataclass
class Pairing:
    """Synthetic volumes matched to a real CT and (optionally) a layout; ``how`` says by which rule."""

    pairs: List[Dict[str, Optional[Path]]] = field(default_factory=list)
    how: str = "none"
    note: str = ""


def layout_for(key: str, real: Path, layouts: List[Path], real_keys: Sequence[str] = ()) -> Optional[Path]:
    """The layout of one real CT: by case name, or a single layout shared by all when its name is no case's."""
    if not layouts:
        return None
    by_key = {case_key(p): p for p in layouts}
    if len(layouts) == 1 and (key in by_key or not set(by_key) & set(real_keys)):
        return layouts[0]
    if key in by_key:
        return by_key[key]
    raise InputError(
        f"no layout matches the real CT {real.name} (case key {key!r}); name them alike "
        "(case1_ct.nrrd with case1_layout.nrrd) or pass a single layout"
    )


def match(real: List[Path], synthetic: List[Path], layouts: Optional[List[Path]] = None) -> Pairing:
    """Match synthetic files to real ones (see the module docstring for the rules)."""
    layouts = layouts or []
    if len(layouts) > 1 and len({case_key(p) for p in layouts}) < len(layouts):
        raise InputError("two layouts have the same case name; give each real CT its own layout name")
    real_by_key: Dict[str, Path] = {}
    for p in real:
        real_by_key.setdefault(case_key(p), p)
    keyed = [case_key(s) for s in synthetic]
    keys = list(real_by_key)
    named = [k in real_by_key for k in keyed]
    if len(real_by_key) == len(real) and all(named):
        pairing = Pairing(how="by case name")
        for s, k in zip(synthetic, keyed):
            pairing.pairs.append(
                {"real": real_by_key[k], "synthetic": s, "layout": layout_for(k, real_by_key[k], layouts, keys)}
            )
        return pairing
    if len(real) > 1 and any(named):  # some names match: guessing the others would pair the wrong files
        stray = [s.name for s, ok in zip(synthetic, named) if not ok]
        raise InputError(
            f"{len(stray)} synthetic file(s) match no real CT by case name ({', '.join(stray[:5])}); name each after "
            "its real case (case1_ct.nrrd -> case1_synthetic.nrrd) or leave them out"
        )
    if len(real) == 1:
        r = real[0]
        others = [s for s, k in zip(synthetic, keyed) if k != case_key(r)]
        tagged = [s.name for s in others if _SAMPLE.search(strip_suffix(s).lower())]
        if tagged:  # named as samples of another case: pairing them with this CT would be silently wrong
            raise InputError(
                f"synthetic file(s) {', '.join(tagged[:5])} are named after another case than the only real CT "
                f"{r.name} (case {case_key(r)!r}); give their real CTs too, or leave them out"
            )
        names = ", ".join(s.name for s in others[:5])
        note = (
            f"{len(others)} synthetic file(s) do not carry the real CT's name ({names}); taken as samples of {r.name}"
            if others
            else ""
        )
        pairing = Pairing(how="all samples of one real CT", note=note)
        lay = layout_for(case_key(r), r, layouts, keys)
        pairing.pairs = [{"real": r, "synthetic": s, "layout": lay} for s in synthetic]
        return pairing
    if len(real) == len(synthetic):
        pairing = Pairing(
            how="sorted order", note="names do not match; real and synthetic files paired in sorted order"
        )
        for r, s in zip(sorted(real), sorted(synthetic)):
            pairing.pairs.append({"real": r, "synthetic": s, "layout": layout_for(case_key(r), r, layouts, keys)})
        return pairing
    return Pairing(
        how="none",
        note=(
            f"{len(real)} real and {len(synthetic)} synthetic files with no matching names: only set metrics apply "
            "(name synthetic files after their real case, e.g. case1_synthetic.nrrd, for paired metrics)"
        ),
    )
