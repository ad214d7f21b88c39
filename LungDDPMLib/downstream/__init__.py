"""Downstream evaluation: does synthetic data help a nodule-segmentation network? (Phantom setting, CPU-sized.)"""

from .experiment import DownstreamConfig, arm_name, run_downstream
from .metrics import case_metrics, detection, dice, mean_sd
from .segnet import SegNet3D, dice_bce_loss, normalize_ct

__all__ = [
    "DownstreamConfig",
    "SegNet3D",
    "arm_name",
    "case_metrics",
    "detection",
    "dice",
    "dice_bce_loss",
    "mean_sd",
    "normalize_ct",
    "run_downstream",
]
