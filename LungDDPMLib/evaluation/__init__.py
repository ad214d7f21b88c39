"""Evaluation of synthetic CTs: layout fidelity and paired image-quality metrics (set metrics come next)."""

from .fidelity import boundary_shell, layout_fidelity, seam_score
from .paired import paired_metrics, region_masks, ssim_map

__all__ = ["boundary_shell", "layout_fidelity", "paired_metrics", "region_masks", "seam_score", "ssim_map"]
