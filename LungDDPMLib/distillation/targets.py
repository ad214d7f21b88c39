"""The progressive-distillation target, in the terms of our noise-predicting network.

One student step from level t must land where two teacher DDIM steps (t -> t', t' -> t'') land. DDIM with an x0
estimate x goes from z_t to ``alpha_s x + sigma_s (z_t - alpha_t x) / sigma_t``, which is affine in x, so the one
x0 estimate that lands on the teacher's z_t'' is (Salimans & Ho 2022, Algorithm 2)::

    x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)

Our network predicts noise, so the student is trained towards the noise that gives that x0,
``eps~ = (z_t - alpha_t x~) / sigma_t``: a student that predicts eps~ runs the very DDIM sampler (and the AAS hook
after each step) that the teacher runs, with half the steps. alpha and sigma are sqrt(alpha_bar) and
sqrt(1 - alpha_bar); level -1 is the clean image (alpha 1, sigma 0), where x~ is the teacher's output itself.
"""

from __future__ import annotations

import math
from typing import Callable, Tuple

import torch

from ..diffusion.schedule import NoiseSchedule
from ..errors import InputError
from ..sampling.samplers import sample_ddim

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _no_noise() -> torch.Tensor:
    raise AssertionError("deterministic DDIM (eta 0) draws no noise")


def _keep(x: torch.Tensor, i: int, t_from: int, t_to: int) -> torch.Tensor:
    return x


def teacher_two_steps(
    eps_fn: EpsFn, z_t: torch.Tensor, schedule: NoiseSchedule, levels: Tuple[int, int, int], clip_x0: bool
) -> torch.Tensor:
    """The teacher's two DDIM steps t -> t' -> t'' (``levels``; t'' = -1 is the clean image), by the sampler itself."""
    t, mid, end = levels
    if not t > mid > end >= -1:
        raise InputError(f"two teacher steps need descending levels t > t' > t'' >= -1, got {levels}")
    return sample_ddim(eps_fn, z_t, schedule, [t, mid], noise=_no_noise, hook=_keep, clip_x0=clip_x0, end=end)


def x0_target(z_t: torch.Tensor, z_end: torch.Tensor, abar_t: float, abar_end: float) -> torch.Tensor:
    """The x0 estimate with which one DDIM step from ``z_t`` (level t) lands on ``z_end`` (level t'')."""
    a_t, s_t = math.sqrt(abar_t), math.sqrt(1.0 - abar_t)
    a_e, s_e = math.sqrt(abar_end), math.sqrt(1.0 - abar_end)
    ratio = s_e / s_t
    denominator = a_e - ratio * a_t
    if denominator <= 0.0:  # alpha/sigma grows as the level falls, so this is positive for t'' < t
        raise InputError(f"no DDIM step from alpha_bar {abar_t} reaches alpha_bar {abar_end}")
    return (z_end - ratio * z_t) / denominator


def eps_for_x0(z_t: torch.Tensor, x0: torch.Tensor, abar_t: float) -> torch.Tensor:
    """The noise prediction whose x0 estimate at level t is ``x0``."""
    return (z_t - math.sqrt(abar_t) * x0) / math.sqrt(1.0 - abar_t)


def eps_target(
    teacher: EpsFn, z_t: torch.Tensor, schedule: NoiseSchedule, levels: Tuple[int, int, int], clip_x0: bool
) -> torch.Tensor:
    """The student's training target at level ``levels[0]``: the noise prediction that does two teacher steps in one."""
    host = schedule.host()
    z_end = teacher_two_steps(teacher, z_t, schedule, levels, clip_x0)
    abar_t, abar_end = host.alpha_bar(levels[0]), host.alpha_bar(levels[2])
    return eps_for_x0(z_t, x0_target(z_t, z_end, abar_t, abar_end), abar_t)


def loss_weight(abar_t: float, weighting: str) -> float:
    """Weight of a squared noise-prediction error at a level with ``abar_t``.

    * ``eps`` (default): 1, the training loss's own weighting (the x0 error weighted by SNR). Every student step
      gets a share of the updates; the top step's x0 estimate stays as rough as the teacher's own.
    * ``snr-truncated``: the paper's max(SNR, 1) weight on the x0 error. An x0 error is sigma/alpha times the noise
      error, so on the noise it is max(1, 1/SNR). The paper pairs it with a v- or x0-predicting network; with our
      noise-predicting one and the clipped cosine schedule the top level (alpha_bar(T-1) ~ 4e-8) weighs ~2.5e7, and
      on the bundled ROI model the first update's loss was 1.7e5 at the top step against 3e-4 at the others, so Adam
      spends the run on the one step whose x0 a noise predictor cannot pin down (it would need the noise to 1e-4).
    """
    if weighting == "eps":
        return 1.0
    if weighting == "snr-truncated":
        return max(1.0, (1.0 - abar_t) / abar_t)
    raise InputError(f"unknown weighting {weighting!r}")


def round_levels(schedule: NoiseSchedule, teacher_steps: int) -> Tuple[int, ...]:
    """The teacher's ``trailing`` DDIM levels of a round; the student's are every other one of them.

    ``trailing`` levels nest: those of K/2 steps are those of K steps at even positions (both are
    ``round(T - j T / K) - 1`` of the same fractions), so every round's student runs at its teacher's even levels
    and the final student's sampler is plain ``ddim`` with ``trailing`` spacing.
    """
    from ..sampling.samplers import make_timesteps

    levels = tuple(make_timesteps(schedule, teacher_steps, "trailing"))
    half = tuple(make_timesteps(schedule, teacher_steps // 2, "trailing"))
    assert levels[::2] == half, (levels, half)
    return levels


def step_levels(levels: Tuple[int, ...], index: int) -> Tuple[int, int, int]:
    """(t, t', t'') of student step ``index``: teacher levels 2i and 2i+1 and the next even one (or -1: clean)."""
    end = levels[2 * index + 2] if 2 * index + 2 < len(levels) else -1
    return levels[2 * index], levels[2 * index + 1], end
