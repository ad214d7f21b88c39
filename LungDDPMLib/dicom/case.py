"""One synthetic case as DICOM: ``<name>_dicom/`` (the marked CT series) and ``<name>_seg.dcm`` (its layout).

The call that ``synthesize --format dicom`` makes per sample, and that other commands (augment) and the Slicer
module can make with an image they synthesised; the JSON provenance sidecar stays the caller's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import SimpleITK as sitk

#: What the series folder and the SEG of an output name end with.
SERIES_SUFFIX, SEG_SUFFIX = "_dicom", "_seg.dcm"


def dicom_paths(name: Union[str, Path]) -> Tuple[Path, Path]:
    """The series folder and the SEG file of the output name ``name`` (a path without suffix)."""
    return Path(f"{name}{SERIES_SUFFIX}"), Path(f"{name}{SEG_SUFFIX}")


def write_dicom_case(
    image: sitk.Image,
    layout: sitk.Image,
    series_folder: Union[str, Path],
    seg_path: Union[str, Path],
    *,
    source: Optional[Sequence[Any]] = None,
    description: str,
    provenance: Optional[Dict[str, Any]] = None,
    study: str = "source",
    overwrite: bool = False,
) -> Tuple[Path, Path]:
    """Write the synthetic CT ``image`` as a marked series and ``layout`` (on its grid) as a SEG referencing it.

    ``source``: the headers of the real series the CT was made from (:func:`.source.read_source_headers`), or
    ``None``. The SEG is written after the series, so a SEG never references a series that is not there.

    Example:
        >>> folder, seg = dicom_paths("out/case0_synthetic")  # doctest: +SKIP
        >>> write_dicom_case(ct, layout, folder, seg, description="LungDDPM seed 0")  # doctest: +SKIP
    """
    from .seg import write_layout_seg
    from .synthetic_ct import write_synthetic_ct_series

    files = write_synthetic_ct_series(
        image,
        series_folder,
        source=source,
        description=description,
        provenance=provenance,
        study=study,
        overwrite=overwrite,
    )
    seg = write_layout_seg(layout, files, seg_path, description=f"SYNTHETIC layout: {description}", overwrite=overwrite)
    return Path(series_folder), seg
