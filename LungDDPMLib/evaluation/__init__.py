"""Evaluation of synthetic CTs: layout fidelity, paired image-quality metrics and set metrics (FID, MMD, diversity)."""

from .features import FeatureExtractor, RadiomicExtractor, extract_features, make_extractor
from .fidelity import boundary_shell, layout_fidelity, seam_score
from .paired import paired_metrics, region_masks, ssim_map
from .resnet3d import Med3DExtractor, Med3DResNet50
from .set_metrics import (
    diversity,
    fid_is_reliable,
    frechet_distance,
    median_pairwise_distance,
    mmd_unbiased,
    set_metrics,
    standardize,
)

__all__ = [
    "FeatureExtractor",
    "Med3DExtractor",
    "Med3DResNet50",
    "RadiomicExtractor",
    "boundary_shell",
    "diversity",
    "extract_features",
    "fid_is_reliable",
    "frechet_distance",
    "layout_fidelity",
    "make_extractor",
    "median_pairwise_distance",
    "mmd_unbiased",
    "paired_metrics",
    "region_masks",
    "seam_score",
    "set_metrics",
    "ssim_map",
    "standardize",
]
