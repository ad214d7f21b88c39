"""The cosine schedule equals the published buffers; q_sample and x0 prediction are consistent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from LungDDPMLib.config import ScheduleConfig
from LungDDPMLib.diffusion import SCHEDULE_BUFFERS, NoiseSchedule
from LungDDPMLib.errors import InputError


def numpy_reference(T: int = 250, s: float = 0.008) -> dict:
    """Independent float64 computation of the published tables, straight from the definitions."""
    x = np.linspace(0, T, T + 1)
    abar = np.cos(((x / T) + s) / (1 + s) * np.pi * 0.5) ** 2
    abar = abar / abar[0]
    betas = np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)
    alphas = 1 - betas
    ac = np.cumprod(alphas)
    prev = np.append(1.0, ac[:-1])
    pv = betas * (1 - prev) / (1 - ac)
    return {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - ac),
        "log_one_minus_alphas_cumprod": np.log(1 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1 / ac - 1),
        "posterior_variance": pv,
        "posterior_log_variance_clipped": np.log(np.maximum(pv, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(prev) / (1 - ac),
        "posterior_mean_coef2": (1 - prev) * np.sqrt(alphas) / (1 - ac),
        "posterior_mean_coef3": 1 - (1 - prev) * np.sqrt(alphas) / (1 - ac),
    }


def test_buffers_equal_float64_definition_cast_once() -> None:
    sched = NoiseSchedule()
    ref = numpy_reference()
    assert set(ref) == set(SCHEDULE_BUFFERS)
    for name in SCHEDULE_BUFFERS:
        ours = getattr(sched, name)
        assert ours.dtype == torch.float32 and ours.shape == (250,)
        expected = torch.from_numpy(ref[name]).to(torch.float32)
        assert torch.equal(ours, expected), name


def test_published_schedule_numbers() -> None:
    s = NoiseSchedule()
    assert float(s.betas[0]) == pytest.approx(1.943e-4, rel=1e-3)
    assert float(s.betas[-1]) == pytest.approx(0.999)
    assert float(s.alphas_cumprod[0]) == pytest.approx(0.999806, abs=1e-6)
    assert float(s.alphas_cumprod[-1]) == pytest.approx(3.89e-8, rel=1e-2)
    expected = [0.9936, 0.8949, 0.4876, 0.09044, 0.003144]
    got = s.alphas_cumprod[[10, 50, 125, 200, 240]].tolist()
    assert got == pytest.approx(expected, rel=2e-3)


def test_schedule_buffers_move_with_the_module() -> None:
    s = NoiseSchedule().to(torch.float64)
    assert s.betas.dtype == torch.float64


def test_q_sample_noises_to_the_right_level() -> None:
    s = NoiseSchedule()
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 1, 4, 4, 4, generator=g) * 1.8 - 0.9
    eps = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 100, 200])
    xt = s.q_sample(x0, t, eps)
    assert s.alpha_bar(-1) == 1.0 and s.alpha_bar(100) == float(s.alphas_cumprod[100].double())
    assert float(xt[0].sub(x0[0]).abs().max()) < 0.1  # level 0 barely noised
    a = math.sqrt(float(s.alphas_cumprod[100]))
    torch.testing.assert_close(xt[1], a * x0[1] + math.sqrt(1 - a * a) * eps[1], atol=1e-5, rtol=0)


def test_timesteps_outside_range_are_rejected() -> None:
    s = NoiseSchedule()
    with pytest.raises(InputError, match=r"\[0, 249\]"):
        s.q_sample(torch.zeros(1, 1, 2, 2, 2), torch.tensor([250]), torch.zeros(1, 1, 2, 2, 2))


def test_other_lengths_are_configurable() -> None:
    assert NoiseSchedule(ScheduleConfig(timesteps=1000)).betas.shape == (1000,)
    with pytest.raises(InputError):
        ScheduleConfig(timesteps=1)
