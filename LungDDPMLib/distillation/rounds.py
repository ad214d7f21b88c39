"""One round of progressive distillation: the training loop with the distillation loss.

A round is an ordinary :class:`~LungDDPMLib.training.Trainer` run - the same data order, per-step seeded draws,
EMA, atomic checkpoints every K updates, ``loss.jsonl``, divergence guard, signal handling and exact resume - in
which the noise level of each sample is replaced by the student step it trains and the loss by
:class:`~.loss.DistillLoss`. So everything that makes ``train`` resumable bit for bit holds for ``distill`` too.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Tuple, Union

import torch
from torch.utils.data import Dataset

from ..diffusion import DiffusionModel
from ..training import TrainConfig, Trainer
from ..training.loss import draw_noise
from .config import DistillConfig
from .loss import DistillLoss
from .targets import round_levels


class RoundTrainer(Trainer):
    """Trains a student (starting as a copy of ``teacher``) to do two of the teacher's DDIM steps in one.

    Args:
        teacher: the round's frozen teacher (never changed; the student starts from a copy of it).
        dataset, config, run_dir, device, resume: as for :class:`~LungDDPMLib.training.Trainer`.
        teacher_steps: the teacher's DDIM steps in this round (the student learns half as many).
        distill: the run's :class:`DistillConfig` (clipping and weighting).
    """

    def __init__(
        self,
        teacher: DiffusionModel,
        dataset: Dataset,
        config: TrainConfig,
        run_dir: Union[str, Path],
        *,
        teacher_steps: int,
        distill: DistillConfig,
        device: Union[str, torch.device, None] = "auto",
        resume: Union[bool, str] = False,
    ) -> None:
        super().__init__(teacher, dataset, config, run_dir, device=device, resume=resume)
        self.teacher_levels: Tuple[int, ...] = round_levels(self.model.schedule, teacher_steps)
        frozen = copy.deepcopy(teacher).to(self.device)
        self._loss_module = DistillLoss(
            self.model,
            frozen,
            self.teacher_levels,
            distill.clip_x0,
            distill.weighting,
            config.nodule_weight,
            config.nodule_weight_margin,
        )

    @property
    def student_steps(self) -> int:
        return len(self.teacher_levels) // 2

    def draw_noise(self, step_index: int, first: int, ct: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Student steps (uniform over 0 .. steps-1) and noise, drawn as the trainer draws levels and noise."""
        return draw_noise(self._noise_gen, self.config.seed, step_index, first, ct, self.student_steps)
