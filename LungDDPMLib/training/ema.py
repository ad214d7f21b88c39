"""Exponential moving average of the model weights, on the published schedule.

The published trainer updates the EMA after every ``every``-th optimiser update; before update index ``start`` it
simply copies the model (so the EMA does not average in the random initialisation), afterwards it blends
``ema = decay * ema + (1 - decay) * model`` over the parameters. The EMA weights are what sampling uses and what
:func:`~LungDDPMLib.checkpoint.load_checkpoint` loads by default.

Update indices are 0-based like the published loop (the first optimiser update has index 0), so
``EMA.update(model, step)`` takes the number of updates done (1-based) and works on ``step - 1``.
"""

from __future__ import annotations

import copy
from typing import Any, Dict

import torch

from ..diffusion import DiffusionModel
from ..errors import InputError


class EMA:
    """A frozen copy of a :class:`DiffusionModel` that trails the trained one.

    Example:
        >>> from LungDDPMLib.config import preset
        >>> ema = EMA(DiffusionModel(preset("tiny")), decay=0.995, every=10, start=2000)
        >>> ema.update(DiffusionModel(preset("tiny")), step=1)
        'copy'
        >>> ema.update(DiffusionModel(preset("tiny")), step=2)
        'skip'
    """

    def __init__(self, model: DiffusionModel, *, decay: float, every: int, start: int) -> None:
        if not 0.0 <= decay < 1.0 or every < 1 or start < 0:
            raise InputError(f"EMA needs 0 <= decay < 1, every >= 1, start >= 0; got {decay}, {every}, {start}")
        self.decay = float(decay)
        self.every = int(every)
        self.start = int(start)
        self.updates = 0
        self.copies = 0
        self.model = copy.deepcopy(model)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def due(self, step: int) -> bool:
        """Whether the update after optimiser update number ``step`` (1-based) touches the EMA."""
        return (step - 1) % self.every == 0

    @torch.no_grad()
    def update(self, model: DiffusionModel, step: int) -> str:
        """Apply the published rule after update number ``step`` (1-based); says ``skip``, ``copy`` or ``average``."""
        assert step >= 1, "EMA.update takes the 1-based number of optimiser updates done"
        index = step - 1
        if index % self.every:
            return "skip"
        if index < self.start:
            self.model.load_state_dict(model.state_dict())
            self.copies += 1
            return "copy"
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)
        self.updates += 1
        return "average"

    def state_dict(self) -> Dict[str, Any]:
        """Bookkeeping only (plain numbers); the weights travel as the checkpoint's ``ema`` state dict."""
        return {
            "decay": self.decay,
            "every": self.every,
            "start": self.start,
            "updates": self.updates,
            "copies": self.copies,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))
        self.copies = int(state.get("copies", 0))
