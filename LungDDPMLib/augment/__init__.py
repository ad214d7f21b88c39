"""Training data from real cases: synthetic variants with new nodules, written as files or as an nnU-Net dataset.

``lungddpm augment`` is built from these parts: :mod:`.options` (the run's settings), :mod:`.shapes` (a nodule
rasterised on a case's own grid), :mod:`.placement` (where it may go), :mod:`.plan` (the whole run decided before
any sampling, with seeds and identity), :mod:`.folds` (cross-validation without leakage), :mod:`.writers` (output
formats, with the hook for DICOM) and :mod:`.run` (the driver).
"""

from __future__ import annotations

from .options import AugmentSettings
from .plan import CaseInput, variant_seed
from .run import Augmenter, cases_from_folders
from .writers import OutputWriter, register_writer

__all__ = [
    "AugmentSettings",
    "Augmenter",
    "CaseInput",
    "OutputWriter",
    "cases_from_folders",
    "register_writer",
    "variant_seed",
]
