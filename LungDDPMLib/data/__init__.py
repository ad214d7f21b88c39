"""Data layer: CT/layout I/O, layouts, normalisation, spatial transforms and their inverse.

Training datasets live in :mod:`LungDDPMLib.data.datasets` (imported on demand, it pulls in torch).
"""

from .io import Geometry, read_ct, read_dicom_series, read_image, write_image
from .layout import (
    auto_lung_mask,
    check_layout,
    layout_from_labelmap,
    layout_from_segmentation,
    load_layout,
    resample_to_reference,
)
from .normalize import DEFAULT_HU_WINDOW, NormRecord
from .pipeline import ModelInput, PreprocessRecord, postprocess, preprocess, to_native_hu
from .segmentation import read_segmentation, write_segmentation
from .validation import DataWarning, check_ct_intensities

__all__ = [
    "DEFAULT_HU_WINDOW",
    "DataWarning",
    "Geometry",
    "ModelInput",
    "NormRecord",
    "PreprocessRecord",
    "auto_lung_mask",
    "check_ct_intensities",
    "check_layout",
    "layout_from_labelmap",
    "layout_from_segmentation",
    "load_layout",
    "postprocess",
    "preprocess",
    "read_ct",
    "read_dicom_series",
    "read_image",
    "read_segmentation",
    "resample_to_reference",
    "to_native_hu",
    "write_image",
    "write_segmentation",
]
