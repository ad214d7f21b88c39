"""What a distillation run does: the student's step count, the teacher's, the rounds and the loss weighting.

A frozen, JSON-serialisable dataclass, stored in the run folder (``distill.json``) and, as its
:class:`~LungDDPMLib.sampling.distilled.DistillationRecord`, in the student, so that a resume can tell a changed
recipe and a student always says what it was distilled for.

Example:
    >>> cfg = DistillConfig(steps=4)
    >>> (cfg.teacher_steps, cfg.rounds, cfg.round_levels(1))
    (64, 4, (64, 32))
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Dict, Tuple

from ..config import reject_unknown_fields
from ..errors import InputError

#: Loss weightings (see :func:`LungDDPMLib.distillation.targets.loss_weight`).
WEIGHTINGS = ("eps", "snr-truncated")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DistillConfig:
    """Progressive distillation (Salimans & Ho 2022) of a DDIM teacher.

    Attributes:
        steps: DDIM steps of the final student.
        teacher_steps: DDIM steps of the original teacher; each round halves them, so ``teacher_steps / steps``
            must be a power of two >= 2.
        round_steps: optimiser updates per round.
        clip_x0: clamp x0 estimates to [-1, 1] in the teacher's steps and, recorded, in the student's sampler
            (as the published sampler does).
        weighting: ``eps`` (default: an unweighted error on the predicted noise, i.e. SNR-weighted on x0) or
            ``snr-truncated`` (the paper's max(SNR, 1) weight on the x0 error, which for a noise-predicting network
            weighs the top level about 1e7 times the others; see :func:`~.targets.loss_weight`).
        method: ``progressive``.
    """

    steps: int = 4
    teacher_steps: int = 64
    round_steps: int = 2000
    clip_x0: bool = True
    weighting: str = "eps"
    method: str = "progressive"

    def __post_init__(self) -> None:
        for name in ("steps", "teacher_steps", "round_steps"):
            value = getattr(self, name)
            if not _whole(value) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        ratio, rest = divmod(self.teacher_steps, self.steps)
        if rest or ratio < 2 or ratio & (ratio - 1):
            raise InputError(
                f"progressive distillation halves the teacher's {self.teacher_steps} steps each round, so --steps "
                f"must be {self.teacher_steps} divided by a power of two ({', '.join(map(str, self.allowed()))}); "
                f"got {self.steps}"
            )
        if not isinstance(self.clip_x0, bool):
            raise InputError(f"clip_x0 must be true or false, got {self.clip_x0!r}")
        if self.weighting not in WEIGHTINGS:
            raise InputError(f"unknown weighting {self.weighting!r}; use one of {', '.join(WEIGHTINGS)}")
        if self.method != "progressive":
            raise InputError(f"unknown distillation method {self.method!r}; only 'progressive' is implemented")

    def allowed(self) -> Tuple[int, ...]:
        """Student step counts this teacher can be halved to."""
        out, n = [], self.teacher_steps // 2
        while n >= 1 and n * 2 <= self.teacher_steps:
            out.append(n)
            if n % 2:
                break
            n //= 2
        return tuple(out)

    @property
    def rounds(self) -> int:
        return (self.teacher_steps // self.steps).bit_length() - 1

    def round_levels(self, index: int) -> Tuple[int, int]:
        """(teacher steps, student steps) of round ``index`` (1-based)."""
        if not 1 <= index <= self.rounds:
            raise InputError(f"round must lie in 1..{self.rounds}, got {index}")
        teacher = self.teacher_steps >> (index - 1)
        return teacher, teacher // 2

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> DistillConfig:
        reject_unknown_fields(cls, data, "distillation settings")
        return cls(**data)
