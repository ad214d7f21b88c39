"""Training a LungDDPM diffusion model: the published recipe, exact resume, EMA and multi-process (DDP) runs.

Example:
    >>> from LungDDPMLib.config import preset
    >>> from LungDDPMLib.diffusion import DiffusionModel
    >>> from LungDDPMLib.training import Trainer, TrainConfig, make_toy_pairs
    >>> cfg, data = TrainConfig(lr=1e-3, grad_accum=1, max_steps=2), make_toy_pairs(2, (32, 32, 32))
    >>> tr = Trainer(DiffusionModel(preset("tiny")), data, cfg, "run", device="cpu")  # doctest: +SKIP
    >>> tr.fit().step  # doctest: +SKIP
    2
"""

from .config import TrainConfig
from .datasets import (
    TOY_VALUES,
    InMemoryPairs,
    StreamSampler,
    check_item,
    dataset_augmentation,
    derive_seed,
    make_toy_pairs,
    toy_layout,
)
from .distributed import DistInfo, init_from_env, shutdown
from .ema import EMA
from .loss import LossModule, draw_noise, seeded_model
from .trainer import Trainer, TrainingDiverged, TrainResult

__all__ = [
    "EMA",
    "TOY_VALUES",
    "DistInfo",
    "InMemoryPairs",
    "LossModule",
    "StreamSampler",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "check_item",
    "dataset_augmentation",
    "derive_seed",
    "draw_noise",
    "init_from_env",
    "make_toy_pairs",
    "seeded_model",
    "shutdown",
    "toy_layout",
]
