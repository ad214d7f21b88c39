"""Evaluation of synthetic CTs (layout fidelity now; image-quality metrics and FID/MMD with the evaluation issue)."""

from .fidelity import boundary_shell, layout_fidelity, seam_score

__all__ = ["boundary_shell", "layout_fidelity", "seam_score"]
