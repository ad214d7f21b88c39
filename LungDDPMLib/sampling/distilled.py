"""What a distilled checkpoint says about itself, and the sampler it is to be run with.

A student of ``lungddpm distill`` is an ordinary checkpoint (same architecture, same format) whose provenance holds
a ``distillation`` record: the teacher's sha256, the method, the step count it was distilled for and the sampler
those steps are meant for. A student only reproduces its teacher with that sampler (DDIM over its own ``trailing``
levels): any other sampler or step count is allowed, but it runs the network at levels it was not distilled for, so
callers warn. A student may also carry ``levels``: a shorter DDIM schedule chosen for it after distillation, on
validation phantoms, which then becomes its default (its distilled-for steps stay one ``--steps`` away, without a
warning). Everything that picks a sampler for a checkpoint (the worker, hence ``synthesize`` and the Slicer
module) goes through :func:`sampler_for`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..errors import CheckpointError, InputError
from .api import SamplerConfig, check_top_level

#: The provenance key of the record.
DISTILLATION_KEY = "distillation"
#: Methods ``lungddpm distill`` knows.
METHODS = ("progressive",)


@dataclass(frozen=True)
class DistillationRecord:
    """The ``distillation`` block of a student's provenance.

    Attributes:
        method: ``progressive`` (Salimans & Ho 2022).
        steps: network evaluations the student was distilled for.
        sampler: the sampler those steps are for (``ddim``, deterministic).
        spacing: its timestep spacing (``trailing``: every round's levels are every other level of the last).
        clip_x0: whether the teacher's and the student's x0 estimates are clamped to [-1, 1] (as published).
        teacher_steps: DDIM steps of the original teacher that the first round halved.
        teacher_sha256: sha256 of the teacher checkpoint file.
        teacher_path: where the teacher was read from (informational).
        rounds: halvings done (teacher_steps / steps = 2 ** rounds).
        round_steps: optimiser updates per round.
        weighting: the loss weighting (see :mod:`LungDDPMLib.distillation.targets`).
        levels: the DDIM levels the student runs at by default, when a schedule was tuned for it after distillation
            (``lungddpm export --levels``); None: its distilled-for ``steps`` with ``spacing``.
    """

    method: str
    steps: int
    sampler: str
    spacing: str
    clip_x0: bool
    teacher_steps: int
    teacher_sha256: str
    teacher_path: str = ""
    rounds: int = 0
    round_steps: int = 0
    weighting: str = ""
    levels: Optional[Tuple[int, ...]] = None

    def __post_init__(self) -> None:
        if self.levels is not None:  # checked and stored as a tuple however it was given (JSON gives a list)
            object.__setattr__(self, "levels", SamplerConfig(self.sampler, timesteps=self.levels).timesteps)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_provenance(
        cls, provenance: Mapping[str, Any], where: str = "checkpoint", num_timesteps: Optional[int] = None
    ) -> Optional[DistillationRecord]:
        """The record in a checkpoint's provenance, None for an ordinary (undistilled) model; with ``num_timesteps``
        (the model's T) its tuned levels are checked against the model too.

        Raises:
            CheckpointError: the record is there but damaged (a student must never silently run as a teacher).
        """
        block = provenance.get(DISTILLATION_KEY) if isinstance(provenance, Mapping) else None
        if block is None:
            return None
        try:
            record = cls(**block)
            if record.levels is not None and num_timesteps is not None:
                check_top_level(record.levels, num_timesteps)
        except (TypeError, InputError) as exc:
            raise CheckpointError(f"{where} has a damaged distillation record: {exc}") from None
        ok = (
            record.method in METHODS
            and isinstance(record.steps, int)
            and record.steps >= 1
            and record.sampler == "ddim"
            and isinstance(record.clip_x0, bool)
        )
        if not ok:
            raise CheckpointError(f"{where} has a damaged distillation record: {block!r}")
        return record

    def tuned(self, levels: Sequence[int], num_timesteps: int) -> DistillationRecord:
        """This record with ``levels`` as the student's default schedule (checked against its T levels)."""
        record = replace(self, levels=levels)  # __post_init__ checks and normalises them
        check_top_level(record.levels, num_timesteps)
        return record

    def sampler_config(self) -> SamplerConfig:
        """The sampler the student is to be run with: its tuned levels if it has them, else its distilled-for ones."""
        if self.levels is not None:
            return SamplerConfig(self.sampler, timesteps=self.levels, clip_x0=self.clip_x0)
        return self.distilled_config()

    def distilled_config(self) -> SamplerConfig:
        """The sampler and steps the student was distilled for."""
        return SamplerConfig(self.sampler, steps=self.steps, spacing=self.spacing, clip_x0=self.clip_x0)


def sampler_for(
    record: Optional[DistillationRecord],
    name: Optional[str] = None,
    steps: Optional[int] = None,
    eta: float = 0.0,
) -> Tuple[SamplerConfig, Optional[str]]:
    """The sampler to run a checkpoint with, and a warning when a distilled one is asked for another.

    ``name``/``steps`` None mean "the model's default": DPM-Solver++ 20 for an ordinary model, the recorded sampler
    and steps for a student. Asking a student for its own sampler with other steps, or for another sampler, is
    allowed; the warning says what the student was distilled for.

    Example:
        >>> rec = DistillationRecord("progressive", 4, "ddim", "trailing", True, 64, "ab" * 32)
        >>> cfg, warning = sampler_for(rec)
        >>> (cfg.name, cfg.steps, cfg.spacing, warning)
        ('ddim', 4, 'trailing', None)
    """
    if record is None:
        return SamplerConfig(name or "dpm++", steps=steps, eta=eta), None
    chosen = name or record.sampler
    default = record.sampler_config()
    n = steps if steps is not None else (default.steps if chosen == record.sampler else None)
    own = None  # one of the student's own schedules: the default (tuned) one, else the distilled-for one
    if chosen == record.sampler:
        own = default if n == default.steps else record.distilled_config() if n == record.steps else None
    if own is not None and not eta:
        return own, None
    if own is not None:  # the same levels with stochasticity added
        config = replace(own, eta=eta, steps=None if own.timesteps is not None else own.steps)
    else:
        spacing = record.spacing if chosen == record.sampler else None
        config = SamplerConfig(chosen, steps=n, eta=eta, spacing=spacing, clip_x0=record.clip_x0)
    asked = f"{chosen} with {n if n is not None else 'its default'} steps" + (f" and eta {eta}" if eta else "")
    tuned = f", and tuned to levels {list(record.levels)}" if record.levels is not None else ""
    warning = (
        f"this model is a student distilled for {record.sampler} with {record.steps} steps ({record.spacing} "
        f"spacing{tuned}); it was asked for {asked}, at which it was not distilled and may draw worse images. Leave "
        "the sampler and steps unset to use its own."
    )
    return config, warning
