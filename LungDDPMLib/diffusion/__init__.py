"""The forward noising process, the training loss and the model wrapper that checkpoints are made of."""

from .model import DiffusionModel
from .schedule import SCHEDULE_BUFFERS, NoiseSchedule, cosine_betas

__all__ = ["SCHEDULE_BUFFERS", "DiffusionModel", "NoiseSchedule", "cosine_betas"]
