"""Early stopping on separate validation phantoms: when to stop, and the fixed validation set it is judged on.

Every network of the powered design trains until its loss on the *validation* phantoms stops improving: every
``eval_every`` steps it is scored on one fixed set of validation patches (drawn once, seeded, the same for every arm
and seed: half centred on nodules, half on lung, as in training), and training stops when ``patience`` evaluations
in a row have not improved the best loss by more than ``min_delta``, or at ``max_steps``. The weights of the best
evaluation are kept. The test phantoms are never looked at for any of this.

Patches rather than whole-volume inference: a patch set scores both halves of the task (the nodule patches the
overlap, the lung patches with their vessels the false positives) at a fraction of the cost of a sliding window,
so the curve can be sampled often. Its pooled Dice is recorded beside the loss.

Example:
    >>> stop = EarlyStopping(patience=2)
    >>> [stop.update(step, loss) for step, loss in [(100, 0.9), (200, 0.7), (300, 0.8), (400, 0.75)]]
    [False, False, False, True]
    >>> stop.best_step, stop.best
    (200, 0.7)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .data import Case, Patch, draw_batch


@dataclass
class EarlyStopping:
    """Track a validation loss (lower is better) and say when to stop.

    Attributes:
        patience: evaluations without improvement after which :meth:`update` returns True.
        min_delta: an improvement must lower the best loss by more than this.
        best, best_step: the best loss so far and the step it was measured at.
        curve: every ``(step, loss)`` seen.
    """

    patience: int
    min_delta: float = 0.0
    best: float = float("inf")
    best_step: Optional[int] = None
    waited: int = 0
    curve: List[Tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1 evaluation, got {self.patience}")

    def update(self, step: int, loss: float) -> bool:
        """Record ``loss`` at ``step``; True when training should stop now (``improved`` says whether it was best)."""
        self.curve.append((int(step), float(loss)))
        self.improved = bool(np.isfinite(loss) and loss < self.best - self.min_delta)
        if self.improved:
            self.best, self.best_step, self.waited = float(loss), int(step), 0
            return False
        self.waited += 1
        return self.waited >= self.patience


def validation_set(
    cases: Sequence[Case], count: int, patch: Patch, positive_fraction: float, seed: int
) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` fixed (image, target) patches from the validation phantoms, drawn like training patches."""
    return draw_batch([cases], [1.0], count, patch, positive_fraction, np.random.default_rng([seed, 31]))[:2]


@torch.inference_mode()
def validation_score(
    net: nn.Module,
    patches: Tuple[np.ndarray, np.ndarray],
    loss_fn: Callable,
    device: torch.device,
    batch: int = 8,
) -> Dict[str, float]:
    """Mean loss over the validation patches (batch-weighted) and the pooled Dice of their thresholded output."""
    was_training = net.training
    net.eval()
    images, targets = patches
    losses, inter, total = [], 0.0, 0.0
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i : i + batch]).to(device)
        y = torch.from_numpy(targets[i : i + batch]).to(device)
        logits = net(x)
        losses.append(float(loss_fn(logits, y)) * len(x))
        pred = (logits > 0).float()
        inter += float((pred * y).sum())
        total += float(pred.sum() + y.sum())
    net.train(was_training)
    return {"loss": sum(losses) / len(images), "dice": 2 * inter / total if total else 1.0}
