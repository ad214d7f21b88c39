"""Progressive distillation (Salimans & Ho 2022): a few-step DDIM student of any LungDDPM model.

Example:
    >>> from LungDDPMLib.distillation import DistillConfig, distill
    >>> distill("teacher.pt", dataset, DistillConfig(steps=4), TrainConfig(), "run", "student.pt")  # doctest: +SKIP
"""

from .config import WEIGHTINGS, DistillConfig
from .loss import DistillLoss
from .rounds import RoundTrainer
from .run import DistillResult, distill, round_dir, write_student
from .targets import eps_target, loss_weight, round_levels, step_levels, teacher_two_steps, x0_target

__all__ = [
    "WEIGHTINGS",
    "DistillConfig",
    "DistillLoss",
    "DistillResult",
    "RoundTrainer",
    "distill",
    "eps_target",
    "loss_weight",
    "round_dir",
    "round_levels",
    "step_levels",
    "teacher_two_steps",
    "write_student",
    "x0_target",
]
