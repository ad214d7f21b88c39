"""The sampler of the published Lung-DDPM+ ``sample.py``: DPM-Solver++ multistep, order 3, with its quirks.

What the authors' ``diffusion_model/dpm_solver.py`` runs (as called from ``trainer.p_sample_loop_dpm_solver``), and
therefore what this module reproduces, in float32 as there:

* a discrete VP schedule: ``log alpha`` of the cosine betas (computed in float64, cast once) tabulated at
  ``t_n = n / N`` (n = 1..N) and interpolated piecewise linearly in continuous time ``t`` (extrapolated past the ends);
* 50 time-uniform steps from ``t = 1`` to ``t = 1/N`` (and the same grid the other way for the inversion);
* data prediction ``x0 = (x - sigma_t eps) / alpha_t``, corrected by dynamic thresholding: ``s`` = the 0.995 quantile
  of ``|x0|`` (at least 1), ``x0 = clamp(x0, -s, s) / s``;
* the network fed ``(t - 1/N) * 1000``: a network trained on levels 0..N-1 (249 for the released file) sees values
  up to 996. This is the published code's time scale, reproduced on purpose (see docs/published-compatibility.md);
  our own recipe feeds the levels the network was trained on;
* first steps of lower order (1, then 2), then order 3; no lower order at the end (only for fewer than 10 steps).

The authors' solver also evaluates the network once more after each solve (with the channels swapped) and
discards the result; that changes nothing, so those two calls are not made here (100 network calls, not 102).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from ..diffusion.schedule import cosine_betas

#: ``eps(x_t, t_input, cond)``: the project's denoiser interface (the network sees ``cat([x_t, cond])``).
EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

STEPS = 50
ORDER = 3
THRESHOLD_QUANTILE = 0.995
THRESHOLD_MIN = 1.0


@dataclass
class DiscreteVP:
    """The published ``NoiseScheduleVP('discrete')``: ``log alpha_t`` interpolated over ``t_n = n / N``."""

    t_array: torch.Tensor
    log_alpha: torch.Tensor

    @classmethod
    def cosine(cls, timesteps: int) -> DiscreteVP:
        betas = cosine_betas(timesteps)  # float64, as the published numpy schedule
        log_alpha = (0.5 * torch.log(1.0 - betas).cumsum(0)).float()
        t_array = torch.linspace(0.0, 1.0, timesteps + 1)[1:]
        return cls(t_array, log_alpha)

    @property
    def total_n(self) -> int:
        return int(self.t_array.numel())

    def log_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Piecewise-linear ``log alpha`` at ``t``; the outermost segments extend past the table's ends."""
        xs, ys = self.t_array.to(t.device), self.log_alpha.to(t.device)
        k = (torch.searchsorted(xs, t.reshape(-1)) - 1).clamp(0, xs.numel() - 2)
        x0, x1, y0, y1 = xs[k], xs[k + 1], ys[k], ys[k + 1]
        return (y0 + (t.reshape(-1) - x0) * (y1 - y0) / (x1 - x0)).reshape(t.shape)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_mean(t))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_mean(t)))

    def lam(self, t: torch.Tensor) -> torch.Tensor:
        m = self.log_mean(t)
        return m - 0.5 * torch.log(1.0 - torch.exp(2.0 * m))


def dynamic_threshold(x0: torch.Tensor) -> torch.Tensor:
    """Clamp to the 0.995 quantile of ``|x0|`` (never below 1) and rescale into [-1, 1], per sample."""
    s = torch.quantile(x0.abs().reshape(x0.shape[0], -1), THRESHOLD_QUANTILE, dim=1)
    s = torch.clamp(s, min=THRESHOLD_MIN).reshape(-1, *([1] * (x0.dim() - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


class PlusSolver:
    """One solve of the published ODE between two times, given the network and the condition."""

    def __init__(self, eps: EpsFn, vp: DiscreteVP, cond: torch.Tensor, after_call: Optional[Callable] = None) -> None:
        self.eps, self.vp, self.cond = eps, vp, cond
        self.after_call = after_call or (lambda: None)

    def network_time(self, t: torch.Tensor) -> torch.Tensor:
        """The published wrapper's time scale: ``(t - 1/N) * 1000`` (not the level ``t N - 1``)."""
        return (t - 1.0 / self.vp.total_n) * 1000.0

    def x0(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = self.eps(x, self.network_time(t).expand(x.shape[0]), self.cond)[:, 0:1]
        self.after_call()
        return dynamic_threshold((x - self.vp.sigma(t) * eps) / self.vp.alpha(t))

    def update(
        self, x: torch.Tensor, models: List[torch.Tensor], times: List[torch.Tensor], t: torch.Tensor, order: int
    ) -> torch.Tensor:
        """Multistep DPM-Solver++ of ``order`` (1, 2 or 3) from ``times[-1]`` to ``t`` (solver type ``dpmsolver``)."""
        vp = self.vp
        s0 = times[-1]
        lam_t, lam0 = vp.lam(t), vp.lam(s0)
        h = lam_t - lam0
        ratio = vp.sigma(t) / vp.sigma(s0)
        a_t = torch.exp(vp.log_mean(t))
        phi1 = torch.expm1(-h)
        m0 = models[-1]
        if order == 1:
            return ratio * x - a_t * phi1 * m0
        lam1 = vp.lam(times[-2])
        r0 = (lam0 - lam1) / h
        d1_0 = (m0 - models[-2]) / r0
        if order == 2:
            return ratio * x - (a_t * phi1) * m0 - 0.5 * (a_t * phi1) * d1_0
        lam2 = vp.lam(times[-3])
        r1 = (lam1 - lam2) / h
        d1_1 = (models[-2] - models[-3]) / r1
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi2 = phi1 / h + 1.0
        phi3 = phi2 / h - 0.5
        return ratio * x - (a_t * phi1) * m0 + (a_t * phi2) * d1 - (a_t * phi3) * d2

    def solve(self, x: torch.Tensor, t_from: float, t_to: float, steps: int = STEPS, order: int = ORDER):
        """Integrate from ``t_from`` to ``t_to`` over ``steps`` time-uniform steps (``steps`` network calls)."""
        grid = torch.linspace(t_from, t_to, steps + 1).to(x.device)
        times = [grid[0]]
        models = [self.x0(x, grid[0])]
        for step in range(1, steps + 1):
            t = grid[step]
            # Lower orders while the history fills up; lower orders at the end only for fewer than 10 steps.
            use = step if step < order else (min(order, steps + 1 - step) if steps < 10 else order)
            x = self.update(x, models, times, t, use)
            if step == steps:
                break  # no evaluation after the last step
            times = [*times, t][-order:]
            models = [*models, self.x0(x, t)][-order:]
        return x


def sample_plus(
    eps: EpsFn,
    noise: torch.Tensor,
    real: torch.Tensor,
    cond: torch.Tensor,
    timesteps: int,
    after_call: Optional[Callable] = None,
    steps: int = STEPS,
) -> torch.Tensor:
    """The published inpainting run: invert the real crop to ``t = 1``, start there where the nodule channel is -1
    (and from ``noise`` in the nodule), and solve back to ``t = 1/N``. Nothing is pasted afterwards.

    Args:
        eps: the network as ``eps(x_t, t_input, cond)`` (float32 out).
        noise: (B, 1, D, H, W) initial noise; real: the real crop in [-1, 1], same shape; cond: (B, 1, D, H, W).
        timesteps: N of the schedule (250 for the released file).
    Returns:
        The sample at ``t = 1/N`` in the network's units (about [-1, 1], not clamped: as published).
    """
    vp = DiscreteVP.cosine(timesteps)
    solver = PlusSolver(eps, vp, cond, after_call)
    t_min = 1.0 / vp.total_n
    inverted = solver.solve(real.float(), t_min, 1.0, steps)
    x = torch.where(cond == -1.0, inverted, noise.float())
    return solver.solve(x, 1.0, t_min, steps)
