"""The distillation loss as a module, so that the trainer (and DDP) call it exactly like the training loss."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..diffusion import DiffusionModel
from .targets import eps_target, loss_weight, step_levels


class DistillLoss(nn.Module):
    """Squared error between the student's noise prediction and the two-teacher-steps target.

    ``forward(ct, cond, index, noise)`` has the training loss's signature; ``index`` (B,) names each sample's student
    step (0 .. student steps - 1) instead of a noise level. Each sample is noised to its step's level from ``ct``
    with ``noise`` (the training data, exactly as the teacher saw it), the frozen teacher takes its two DDIM steps
    from there, and the per-sample loss is the (nodule-weighted, like training) mean over voxels of the weighted
    squared error; the batch loss is their mean.
    """

    def __init__(
        self,
        student: DiffusionModel,
        teacher: DiffusionModel,
        teacher_levels: Tuple[int, ...],
        clip_x0: bool,
        weighting: str,
        nodule_weight: float = 1.0,
        nodule_margin: int = 0,
    ) -> None:
        super().__init__()
        from ..training.loss import nodule_channel

        if nodule_weight != 1.0:
            nodule_channel(student)
        self.model = student
        # Not a submodule: the teacher is frozen, and DDP must neither broadcast nor reduce it.
        self.__dict__["teacher"] = teacher.eval().requires_grad_(False)
        self.teacher_levels = tuple(teacher_levels)
        self.clip_x0 = bool(clip_x0)
        self.weighting = weighting
        self.nodule_weight = float(nodule_weight)
        self.nodule_margin = int(nodule_margin)

    @property
    def student_steps(self) -> int:
        return len(self.teacher_levels) // 2

    def forward(self, ct: torch.Tensor, cond: torch.Tensor, index: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        from ..training.loss import nodule_weight_map

        schedule, host = self.model.schedule, self.model.schedule.host()
        steps = [step_levels(self.teacher_levels, int(i)) for i in index.tolist()]
        t = torch.tensor([s[0] for s in steps], device=ct.device, dtype=torch.long)
        z_t = schedule.q_sample(ct, t, noise)
        targets = []
        with torch.no_grad():
            for j, levels in enumerate(steps):  # each sample has its own levels; DDIM steps one level at a time
                c = cond[j : j + 1]

                def teacher_eps(x: torch.Tensor, level: torch.Tensor, c: torch.Tensor = c) -> torch.Tensor:
                    return self.teacher.eps(x, level, c).float()

                targets.append(eps_target(teacher_eps, z_t[j : j + 1].float(), schedule, levels, self.clip_x0))
        target = torch.cat(targets)
        pred = self.model.eps(z_t, t, cond).float()
        level_w = torch.tensor([loss_weight(host.alpha_bar(s[0]), self.weighting) for s in steps], device=ct.device)
        err = ((pred - target) ** 2).flatten(1)
        voxel_w: Optional[torch.Tensor] = None
        if self.nodule_weight != 1.0:
            voxel_w = nodule_weight_map(self.model, cond, self.nodule_weight, self.nodule_margin)
        if voxel_w is None:
            per_sample = err.mean(1)
        else:
            w = voxel_w.float().expand_as(pred).flatten(1)
            per_sample = (err * w).sum(1) / w.sum(1).clamp_min(1e-12)
        return (level_w * per_sample).mean()
