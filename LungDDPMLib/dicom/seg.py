"""The layout beside its synthetic CT series, as a DICOM Segmentation (highdicom) that references that series.

One BINARY segment per label value present: 1 lung, 2 nodule, 3 solid, 4 part-solid, 5 ground-glass nodule.
Coded as a radiologist's viewer expects (PS3.16): lung is category (SCT, 91723000, "Anatomical Structure", CID 7150)
and type (SCT, 39607008, "Lung"); every nodule is category (SCT, 49755003, "Morphologically Abnormal Structure") and
type (SCT, 27925004, "Nodule", CID 7194) in the anatomic region lung, its density class in the segment label.
The masks are the truth by construction (the synthetic CT was drawn from them), so the algorithm type is AUTOMATIC
with LungDDPM as the algorithm.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..config import LABEL_LUNG, LABEL_NODULE, LABEL_OF_TYPE
from ..errors import InputError
from .synthetic_ct import check_orthonormal, right_handed, slice_geometry
from .uids import new_uid, require_dicom

#: Segment label of each layout value, in segment-number order.
SEGMENT_LABELS = {
    LABEL_LUNG: "lung",
    LABEL_NODULE: "nodule",
    **{value: f"{kind} nodule" for kind, value in LABEL_OF_TYPE.items()},
}


def _codes(value: int) -> Tuple[Any, Any, list]:
    from pydicom.sr.codedict import codes

    if value == LABEL_LUNG:
        return codes.SCT.AnatomicalStructure, codes.SCT.Lung, []
    return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Nodule, [codes.SCT.Lung]


def _frames(layout: sitk.Image, ct: Sequence[Any]) -> np.ndarray:
    """The layout's slice index of each CT dataset, checking that the layout lies exactly on the series' grid."""
    orientation, positions, _ = slice_geometry(layout)
    spacing = layout.GetSpacing()
    where = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in ct])
    index = []
    for ds, p in zip(ct, where):
        dist = np.linalg.norm(np.asarray(positions) - p, axis=1)
        k = int(np.argmin(dist))
        same_plane = np.allclose([float(v) for v in ds.ImageOrientationPatient], orientation, atol=1e-4)
        same_pixels = np.allclose([float(v) for v in ds.PixelSpacing], [spacing[1], spacing[0]], rtol=1e-4)
        same_size = (int(ds.Rows), int(ds.Columns)) == (layout.GetSize()[1], layout.GetSize()[0])
        if dist[k] > max(1e-3, 0.05 * min(spacing)) or not (same_plane and same_pixels and same_size):
            raise InputError("the layout is not on the synthetic series' grid; a SEG must match its source images")
        index.append(k)
    if sorted(index) != list(range(len(positions))):
        raise InputError(f"the CT series has {len(ct)} slices for the layout's {len(positions)}: not the same grid")
    return np.asarray(index)


def write_layout_seg(
    layout: sitk.Image,
    ct_files: Sequence[Union[str, Path]],
    out_path: Union[str, Path],
    *,
    description: str = "SYNTHETIC layout (LungDDPM)",
    series_number: int = 1001,
    overwrite: bool = False,
) -> Path:
    """Write ``layout`` (labels 0-5 on the series' grid) as a DICOM SEG referencing the CT files ``ct_files``.

    The file is written under a hidden temporary name beside ``out_path`` and renamed at the end.

    Raises:
        InputError: label values other than 0-5, a layout without any segment, a layout off the series' grid, an
            existing ``out_path`` without ``overwrite``, an unwritable place.

    Example:
        >>> write_layout_seg(layout, files, "out/case_seg.dcm")  # doctest: +SKIP
    """
    require_dicom()
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from .. import __version__

    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise InputError(f"{out_path} already exists; move it or choose another output name (nothing was written)")
    check_orthonormal(layout, "the layout")
    layout = right_handed(layout)
    labels = sitk.GetArrayFromImage(layout)
    values = sorted(int(v) for v in np.unique(labels) if v != 0)
    unknown = [v for v in values if v not in SEGMENT_LABELS]
    if unknown:
        raise InputError(f"the layout has label values {unknown}; a layout holds 0 and {sorted(SEGMENT_LABELS)}")
    if not values:
        raise InputError("the layout is empty (all 0): a DICOM SEG needs at least one segment")
    try:
        ct = [pydicom.dcmread(str(f)) for f in ct_files]
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise InputError(f"cannot read the CT series for the SEG: {exc}") from None
    order = _frames(layout, ct)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="LungDDPM layout", family=codes.cid7162.ArtificialIntelligence, version=__version__
    )
    segments: List[Any] = []
    for number, value in enumerate(values, start=1):
        category, kind, regions = _codes(value)
        segments.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=SEGMENT_LABELS[value],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                anatomic_regions=regions or None,
            )
        )
    masks = np.stack([labels[order] == v for v in values], axis=-1)  # (frames in ct order, rows, cols, segments)
    seg = hd.seg.Segmentation(
        source_images=ct,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=new_uid(),
        series_number=series_number,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer="LungDDPM",
        manufacturer_model_name="LungDDPM",
        software_versions=__version__,
        device_serial_number="0",
        series_description=description[:64],
        content_label="LAYOUT",
        content_description="the layout the synthetic CT was drawn from",
        content_qualification=hd.ContentQualificationValues.RESEARCH,
        omit_empty_frames=False,
    )
    tmp = out_path.with_name(f".{out_path.stem}.{os.getpid()}.partial.dcm")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        seg.save_as(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
    except OSError as exc:
        raise InputError(f"cannot write {out_path}: {exc.strerror or exc}; choose a writable output folder") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return out_path
