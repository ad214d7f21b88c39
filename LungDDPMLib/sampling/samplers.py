"""Samplers: each a short loop over one epsilon predictor.

Every sampler takes

* ``eps_fn(x, t) -> eps``: the denoiser, with ``t`` a (B,) long tensor of levels (0..T-1), returning float32;
* ``x``: the starting noise at level ``timesteps[0]``;
* ``noise()``: fresh standard-normal noise shaped like ``x``, drawn from the caller's seeded generators (never
  from the global RNG, so runs are reproducible);
* ``hook(x, i, t_from, t_to) -> x``: called after every step, which went from level ``t_from`` to ``t_to``
  (``-1`` = clean); Anatomically Aware Sampling and progress/cancel live there, not in the samplers.

Solver arithmetic is float32 with coefficients computed in float64, whatever precision the network runs in.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch

from ..diffusion.schedule import NoiseSchedule
from ..errors import InputError

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseFn = Callable[[], torch.Tensor]
StepHook = Callable[[torch.Tensor, int, int, int], torch.Tensor]

SPACINGS = ("trailing", "linspace", "quadratic")


def make_timesteps(schedule: NoiseSchedule, steps: int, spacing: str = "trailing") -> List[int]:
    """Descending integer levels at which the denoiser is evaluated.

    * ``trailing``: ``round(T - j*T/K) - 1`` - starts at T-1 and keeps equal gaps (the DDIM fix of
      "Common Diffusion Noise Schedules and Sample Steps are Flawed"); the last level is T/K - 1.
    * ``linspace``: evenly spaced from T-1 down to 0 inclusive.
    * ``quadratic``: ``(T-1) * (1 - j/(K-1))**2`` - denser at low noise and ending at level 0, DPM-Solver's
      "time_quadratic"; on the Gaussian oracle it is 3x more accurate than trailing for DPM-Solver++ at 20 steps.
    With ``steps == T`` both give T-1, ..., 0. (Log-SNR spacing is not offered: the clipped cosine schedule's
    log-SNR plunges over its last few levels, so log-SNR-uniform steps would crowd there.)
    """
    T = schedule.num_timesteps
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise InputError(f"steps must be an integer between 1 and {T} (the model's timesteps), got {steps!r}")
    steps = int(steps)
    if spacing == "trailing":
        ts = [round(T - j * T / steps) - 1 for j in range(steps)]
    elif spacing == "linspace":
        ts = np.round(np.linspace(T - 1, 0, steps)).astype(int).tolist() if steps > 1 else [T - 1]
    elif spacing == "quadratic":
        raw = [(T - 1) * (1 - j / (steps - 1)) ** 2 for j in range(steps)] if steps > 1 else [T - 1]
        ts = [0] * steps
        ts[0] = T - 1
        for j in range(steps - 1, 0, -1):  # from the low end up, so that levels stay distinct
            ts[j] = round(raw[j]) if j == steps - 1 else max(round(raw[j]), ts[j + 1] + 1)
    else:
        raise InputError(f"unknown timestep spacing {spacing!r}; use one of {', '.join(SPACINGS)}")
    assert all(a > b for a, b in zip(ts, ts[1:])), ts  # steps <= T keeps the rounded levels distinct
    return [int(t) for t in ts]


def _levels(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


def _x0(x: torch.Tensor, eps: torch.Tensor, abar: float, clip: bool) -> torch.Tensor:
    x0 = (x - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar)
    return x0.clamp(-1.0, 1.0) if clip else x0


@torch.no_grad()
def sample_ddpm(
    eps_fn: EpsFn,
    x: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    noise: NoiseFn,
    hook: StepHook,
    clip_x0: bool = True,
) -> torch.Tensor:
    """Ancestral DDPM over all T levels with the posterior variance (beta tilde): the published reference."""
    T = schedule.num_timesteps
    host = schedule.host()
    for i, t in enumerate(range(T - 1, -1, -1)):
        x0 = _x0(x, eps_fn(x, _levels(x, t)), host.alpha_bar(t), clip_x0)
        mean = host.posterior_mean_coef1[t] * x0 + host.posterior_mean_coef2[t] * x
        std = math.exp(0.5 * host.posterior_log_variance_clipped[t]) if t > 0 else 0.0
        x = mean + std * noise() if t > 0 else mean
        x = hook(x, i, t, t - 1)
    return x


@torch.no_grad()
def sample_ddim(
    eps_fn: EpsFn,
    x: torch.Tensor,
    schedule: NoiseSchedule,
    timesteps: Sequence[int],
    *,
    noise: NoiseFn,
    hook: StepHook,
    eta: float = 0.0,
    clip_x0: bool = True,
    end: int = -1,
) -> torch.Tensor:
    """DDIM (Song et al. 2021) over the given levels, ending at level ``end`` (default -1: the clean image);
    ``eta=1`` is DDPM-like. Progressive distillation runs two teacher steps that end at a noisy level."""
    if timesteps and not -1 <= end < timesteps[-1]:
        raise InputError(f"DDIM must end below its last level {timesteps[-1]} (at -1 or more), got end={end}")
    host = schedule.host()
    for i, t in enumerate(timesteps):
        s = timesteps[i + 1] if i + 1 < len(timesteps) else end
        a_t, a_s = host.alpha_bar(t), host.alpha_bar(s)
        x0 = _x0(x, eps_fn(x, _levels(x, t)), a_t, clip_x0)
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)  # consistent with the clipped x0
        sigma = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        x = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * noise()
        x = hook(x, i, t, s)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    eps_fn: EpsFn,
    x: torch.Tensor,
    schedule: NoiseSchedule,
    timesteps: Sequence[int],
    *,
    noise: NoiseFn,
    hook: StepHook,
    clip_x0: bool = True,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): second-order multistep in data prediction, deterministic.

    Steps between consecutive levels use the x0 predictions of the last two evaluations (first order on the
    first step); the final evaluation's x0 prediction is the output, like DDPM's last step.
    """
    del noise  # deterministic; the argument keeps all samplers call-compatible
    prev_x0 = None
    prev_lam = 0.0
    host = schedule.host()
    for i, t in enumerate(timesteps):
        a_t = host.alpha_bar(t)
        x0 = _x0(x, eps_fn(x, _levels(x, t)), a_t, clip_x0)
        if i + 1 == len(timesteps):
            x = hook(x0, i, t, -1)
            break
        s = timesteps[i + 1]
        a_s = host.alpha_bar(s)
        lam_t = 0.5 * math.log(a_t / (1 - a_t))
        lam_s = 0.5 * math.log(a_s / (1 - a_s))
        h = lam_s - lam_t
        d = x0
        if prev_x0 is not None:
            r = (lam_t - prev_lam) / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
        x = math.sqrt((1 - a_s) / (1 - a_t)) * x - math.sqrt(a_s) * math.expm1(-h) * d
        prev_x0, prev_lam = x0, lam_t
        x = hook(x, i, t, s)
    return x


#: Sampler names accepted by the API and the CLI, with their default step count and spacing.
SAMPLERS: Dict[str, Dict[str, object]] = {
    "ddpm": {"steps": None, "spacing": "trailing"},
    "ddim": {"steps": 50, "spacing": "trailing"},
    "dpm++": {"steps": 20, "spacing": "quadratic"},
}
