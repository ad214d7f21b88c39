"""The cosine noise schedule and the quantities derived from it.

All tables are computed once in float64 and cast to float32, exactly as the published model's 13 buffers were,
so that a loaded checkpoint and a freshly built model agree to the last bit. They are registered as buffers so
that they move with ``.to(device)``; nothing changes device behind the caller's back.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..config import ScheduleConfig
from ..errors import InputError

#: Buffer names of the published checkpoint, in its order.
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "posterior_mean_coef3",
)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Betas of the cosine schedule (Nichol & Dhariwal 2021) in float64, clipped at ``max_beta``."""
    x = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    abar = torch.cos((x + s) / (1 + s) * math.pi * 0.5) ** 2
    abar = abar / abar[0]
    return (1 - abar[1:] / abar[:-1]).clamp(0.0, max_beta)


def _tables(betas: torch.Tensor) -> dict:
    """All derived float64 tables, keyed by buffer name."""
    alphas = 1.0 - betas
    abar = torch.cumprod(alphas, dim=0)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    return {
        "betas": betas,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "sqrt_alphas_cumprod": abar.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - abar).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / abar).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1.0).sqrt(),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * abar_prev.sqrt() / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
        # Unused by our samplers (it multiplies a zero term in the original); kept for checkpoint compatibility.
        "posterior_mean_coef3": 1.0 - (1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
    }


class NoiseSchedule(nn.Module):
    """Forward process q(x_t | x_0) over ``T`` levels, t = 0 (least noise) .. T-1 (almost pure noise).

    "Level -1" denotes the clean image (alpha_bar = 1); samplers end there.
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    def __init__(self, config: Optional[ScheduleConfig] = None) -> None:
        super().__init__()
        self.config = config or ScheduleConfig()
        betas = cosine_betas(self.config.timesteps, self.config.cosine_s, self.config.max_beta)
        for name, table in _tables(betas).items():
            self.register_buffer(name, table.to(torch.float32))

    @property
    def num_timesteps(self) -> int:
        return self.config.timesteps

    def alpha_bar(self, level: int) -> float:
        """alpha_bar at one integer level as a Python float; level -1 is the clean image (alpha_bar = 1)."""
        return 1.0 if level < 0 else float(self.alphas_cumprod[level].double())

    def host(self) -> HostTables:
        """Python-float copies of the tables samplers read at every step, taken once per sampling call."""
        return HostTables(self)

    def check_timestep(self, t: torch.Tensor) -> None:
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise InputError(f"timesteps must lie in [0, {self.num_timesteps - 1}], got {t.tolist()}")

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise clean images to levels ``t`` (one per batch element): sqrt(abar) x0 + sqrt(1-abar) noise."""
        self.check_timestep(t)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        a = self.sqrt_alphas_cumprod[t].view(shape).to(x0.dtype)
        s = self.sqrt_one_minus_alphas_cumprod[t].view(shape).to(x0.dtype)
        return a * x0 + s * noise


class HostTables:
    """The schedule as Python floats (float64 copies of the float32 buffers, so values are unchanged).

    Samplers read a few scalars per step; reading them from device tensors would synchronise a GPU every step.
    """

    def __init__(self, schedule: NoiseSchedule) -> None:
        def table(name: str) -> list:
            return getattr(schedule, name).detach().double().cpu().tolist()

        self.alphas_cumprod = table("alphas_cumprod")
        self.sqrt_alphas_cumprod = table("sqrt_alphas_cumprod")
        self.sqrt_one_minus_alphas_cumprod = table("sqrt_one_minus_alphas_cumprod")
        self.posterior_mean_coef1 = table("posterior_mean_coef1")
        self.posterior_mean_coef2 = table("posterior_mean_coef2")
        self.posterior_log_variance_clipped = table("posterior_log_variance_clipped")

    def alpha_bar(self, level: int) -> float:
        """alpha_bar at one level; level -1 is the clean image (alpha_bar = 1)."""
        return 1.0 if level < 0 else self.alphas_cumprod[level]
