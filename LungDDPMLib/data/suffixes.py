"""Image file names: the suffixes LungDDPM reads and writes, and a name without its (possibly double) suffix.

Shared by reading (:mod:`.io`), writing (:mod:`.writing`), pairing files by name (:mod:`.datasets`) and matching
outputs to inputs, so that ``a.nii.gz`` and ``b.seg.nrrd`` mean the same everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

PathLike = Union[str, Path]
READ_SUFFIXES = (".seg.nrrd", ".nrrd", ".nhdr", ".nii.gz", ".nii", ".mha", ".mhd")
WRITE_SUFFIXES = (".seg.nrrd", ".nrrd", ".nii.gz", ".nii", ".mha")


def file_suffix(path: PathLike) -> str:
    """The recognised (possibly double) suffix of ``path`` in lower case, or its last suffix."""
    name = Path(path).name.lower()
    for suffix in READ_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def strip_suffix(path: PathLike) -> str:
    """File name without its image suffix (``a.nii.gz`` -> ``a``, ``b.seg.nrrd`` -> ``b``)."""
    name = Path(path).name
    suffix = file_suffix(name)
    return name[: len(name) - len(suffix)] if suffix and name.lower().endswith(suffix) else name
