"""Training configuration: the published Lung-DDPM recipe as defaults, stored verbatim in every checkpoint.

A frozen, JSON-serialisable dataclass so that a checkpoint records exactly how it was trained, and a resumed run
can tell when it is being continued with different settings.

Example:
    >>> cfg = TrainConfig()
    >>> (cfg.lr, cfg.batch_size, cfg.grad_accum, cfg.ema_decay, cfg.ema_every, cfg.ema_start)
    (1e-05, 1, 2, 0.995, 10, 2000)
    >>> TrainConfig.from_json(cfg.to_json()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ..config import reject_unknown_fields
from ..device import PRECISIONS
from ..errors import InputError

OPTIMIZERS = ("adam", "adamw")
LOSSES = ("l1", "l2")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainConfig:
    """How to train a :class:`~LungDDPMLib.diffusion.DiffusionModel`; defaults are the published recipe.

    Attributes:
        lr: learning rate (published: Adam, 1e-5).
        optimizer: ``adam`` (published) or ``adamw`` (decoupled weight decay).
        weight_decay: weight decay (L2 for ``adam``, decoupled for ``adamw``); published: 0.
        betas: Adam moment coefficients.
        batch_size: volumes per micro-batch and per process (published: 1).
        grad_accum: micro-batches accumulated into one optimiser update (published: 2).
        max_steps: optimiser updates in a full run (published: 100,000).
        ema_decay: EMA decay (published: 0.995).
        ema_every: update the EMA after every this many optimiser updates (published: 10).
        ema_start: before this update index the EMA is a plain copy of the model (published: 2000).
        loss: ``l1`` (published) or ``l2`` on the predicted noise.
        nodule_weight: weight of the voxels in and near a nodule in each sample's loss (published: 1, every voxel
            alike). In a 48 mm nodule-centred patch a 10 mm nodule is about 1% of the voxels, so a uniform loss
            spends almost all of the model on the parenchyma around it, which ROI synthesis keeps from the real CT
            anyway; a weight above 1 moves the model's effort to the nodule's density, which is what it draws.
        nodule_weight_margin: voxels by which the nodule region of ``nodule_weight`` is dilated (its edge and the
            margin that ROI synthesis regenerates around it).
        precision: ``fp32`` (published) or ``bf16`` (autocast on CUDA only).
        grad_clip: maximum global gradient norm, or None for no clipping (published: none).
        checkpoint_every: write ``step-NNNNNNN.pt`` and ``last.pt`` after every this many updates.
        log_every: append a line to ``loss.jsonl`` after every this many updates.
        seed: owns every random choice (data order, noise levels, noise, dropout).
        num_workers: DataLoader worker processes (0 loads in the training process).
    """

    lr: float = 1e-5
    optimizer: str = "adam"
    weight_decay: float = 0.0
    betas: Tuple[float, float] = (0.9, 0.999)
    batch_size: int = 1
    grad_accum: int = 2
    max_steps: int = 100_000
    ema_decay: float = 0.995
    ema_every: int = 10
    ema_start: int = 2000
    loss: str = "l1"
    nodule_weight: float = 1.0
    nodule_weight_margin: int = 2
    precision: str = "fp32"
    grad_clip: Optional[float] = None
    checkpoint_every: int = 1000
    log_every: int = 100
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        if not _is_number(self.lr) or self.lr <= 0:
            raise InputError(f"lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise InputError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(_is_number(b) and 0.0 <= b < 1.0 for b in self.betas):
            raise InputError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        for name in ("batch_size", "grad_accum", "max_steps", "ema_every", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        if not _is_number(self.nodule_weight) or self.nodule_weight < 1.0:
            raise InputError(f"nodule_weight must be a number >= 1 (1: every voxel alike), got {self.nodule_weight!r}")
        for name in ("ema_start", "num_workers", "nodule_weight_margin"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise InputError(f"{name} must be an integer >= 0, got {value!r}")
        if not _is_number(self.ema_decay) or not 0.0 <= self.ema_decay < 1.0:
            raise InputError(f"ema_decay must lie in [0, 1), got {self.ema_decay!r}")
        if self.loss not in LOSSES:
            raise InputError(f"unknown loss {self.loss!r}; use one of {', '.join(LOSSES)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.grad_clip is not None and (not _is_number(self.grad_clip) or self.grad_clip <= 0):
            raise InputError(f"grad_clip must be None or a positive number, got {self.grad_clip!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}")

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error so typos do not pass silently."""
        reject_unknown_fields(cls, data, "training settings")
        values = dict(data)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"training configuration is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InputError("training configuration must be a JSON object")
        return cls.from_dict(data)

    def differences(self, other: TrainConfig) -> Dict[str, Tuple[Any, Any]]:
        """Fields whose values differ, as ``{name: (self, other)}`` (used to warn when a resume changes settings)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
