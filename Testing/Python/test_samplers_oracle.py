"""Samplers against analytic oracles.

For data x0 ~ N(mu, s^2) independently per voxel, x_t = a x0 + sigma eps has the exact noise predictor
E[eps | x_t] = sigma (x_t - a mu) / (a^2 s^2 + sigma^2). With it every sampler is a linear map of Gaussian noise,
so its output distribution and the exact probability-flow ODE solution are known in closed form.
"""

from __future__ import annotations

import math
from typing import Callable, List

import pytest
import torch

from LungDDPMLib.diffusion import NoiseSchedule
from LungDDPMLib.sampling.samplers import make_timesteps, sample_ddim, sample_ddpm, sample_dpmpp_2m

SCHED = NoiseSchedule()
ABAR = SCHED.alphas_cumprod.double()


def oracle(mu: float, s: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = ABAR[t].view(-1, 1, 1, 1, 1)
        return ((1 - ab).sqrt() * (x.double() - ab.sqrt() * mu) / (ab * s * s + 1 - ab)).float()

    return eps_fn


def identity_hook(x: torch.Tensor, i: int, t_from: int, t_to: int) -> torch.Tensor:
    return x


def setup(seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, 32, 32, 32, generator=g)
    return x, (lambda: torch.randn(x.shape, generator=g))


def abar(t: int) -> float:
    return 1.0 if t < 0 else float(ABAR[t])


def ddpm_chain_std(mu: float, s: float) -> float:
    """Exact output std of the published ancestral sampler with the exact denoiser (a linear Gaussian chain)."""
    var = 1.0
    for t in range(SCHED.num_timesteps - 1, -1, -1):
        a = math.sqrt(abar(t))
        k = a * s * s / (abar(t) * s * s + 1 - abar(t))
        c = float(SCHED.posterior_mean_coef1[t].double()) * k + float(SCHED.posterior_mean_coef2[t].double())
        pv = math.exp(float(SCHED.posterior_log_variance_clipped[t].double())) if t > 0 else 0.0
        var = c * c * var + pv
    return math.sqrt(var)


def ddim_chain_std(mu: float, s: float, timesteps: List[int], eta: float = 0.0) -> float:
    """Exact output std of DDIM with the exact denoiser: each step is linear in x plus independent noise."""
    var = 1.0
    for i, t in enumerate(timesteps):
        nxt = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        a_t, a_s = abar(t), abar(nxt)
        k = math.sqrt(a_t) * s * s / (a_t * s * s + 1 - a_t)
        sig2 = eta**2 * (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
        c = math.sqrt(a_s) * k + math.sqrt(max(1 - a_s - sig2, 0.0)) / math.sqrt(1 - a_t) * (1 - math.sqrt(a_t) * k)
        var = c * c * var + sig2
    return math.sqrt(var)


def pf_ode_solution(x_T: torch.Tensor, mu: float, s: float) -> torch.Tensor:
    """Exact probability-flow ODE map from level T-1 to clean data: z = (x - a mu)/std(x_T) is invariant."""
    a_T = abar(SCHED.num_timesteps - 1)
    return mu + s * (x_T.double() - math.sqrt(a_T) * mu) / math.sqrt(a_T * s * s + 1 - a_T)


MU, S = 0.1, 0.25  # keeps the data inside [-1, 1], where the published x0 clamp is inactive


def test_ddpm_250_matches_its_exact_output_distribution() -> None:
    x, noise = setup()
    out = sample_ddpm(oracle(MU, S), x, SCHED, noise=noise, hook=identity_hook)
    expected_std = ddpm_chain_std(MU, S)
    assert out.mean().item() == pytest.approx(MU, abs=3e-3)
    assert out.std().item() == pytest.approx(expected_std, rel=1e-2)
    # The published sampler uses the x0 point estimate in the posterior, which shrinks the spread by a few %.
    assert out.std().item() == pytest.approx(S, rel=0.04)


@pytest.mark.parametrize("spacing,tol", [("trailing", 0.06), ("quadratic", 0.03)])
def test_ddim_50_matches_exact_map_and_data_statistics(spacing: str, tol: float) -> None:
    x, noise = setup(1)
    ts = make_timesteps(SCHED, 50, spacing)
    out = sample_ddim(oracle(MU, S), x, SCHED, ts, noise=noise, hook=identity_hook, eta=0.0)
    assert out.mean().item() == pytest.approx(MU, abs=3e-3)
    assert out.std().item() == pytest.approx(ddim_chain_std(MU, S, ts), rel=1e-2)
    assert out.std().item() == pytest.approx(S, rel=tol)


def test_ddim_with_eta_one_is_stochastic_and_still_right() -> None:
    x, noise = setup(2)
    ts = make_timesteps(SCHED, 50, "quadratic")
    out = sample_ddim(oracle(MU, S), x, SCHED, ts, noise=noise, hook=identity_hook, eta=1.0)
    det = sample_ddim(oracle(MU, S), x, SCHED, ts, noise=noise, hook=identity_hook, eta=0.0)
    assert out.mean().item() == pytest.approx(MU, abs=3e-3)
    assert out.std().item() == pytest.approx(ddim_chain_std(MU, S, ts, eta=1.0), rel=1e-2)
    # Ancestral steps with the x0 point estimate shrink the spread, more so with few steps (like DDPM).
    assert out.std().item() == pytest.approx(S, rel=0.07)
    assert (out - det).abs().mean() > 0.05


@pytest.mark.parametrize("mu,s", [(0.1, 0.25), (0.0, 0.1), (-0.2, 0.15)])
def test_dpmpp_20_steps_follows_the_probability_flow_ode(mu: float, s: float) -> None:
    x, noise = setup(3)
    exact = pf_ode_solution(x, mu, s)
    out = sample_dpmpp_2m(
        oracle(mu, s), x, SCHED, make_timesteps(SCHED, 20, "quadratic"), noise=noise, hook=identity_hook
    )
    rmse = (out.double() - exact).pow(2).mean().sqrt().item()
    assert rmse < 5e-3
    assert out.mean().item() == pytest.approx(mu, abs=3e-3)
    assert out.std().item() == pytest.approx(s, rel=0.03)


def test_dpmpp_converges_with_more_steps_and_is_second_order_better_than_ddim() -> None:
    x, noise = setup(4)
    exact = pf_ode_solution(x, MU, S)

    def err(fn: Callable, k: int) -> float:
        out = fn(oracle(MU, S), x, SCHED, make_timesteps(SCHED, k, "quadratic"), noise=noise, hook=identity_hook)
        return (out.double() - exact).pow(2).mean().sqrt().item()

    assert err(sample_dpmpp_2m, 50) < err(sample_dpmpp_2m, 20) < err(sample_dpmpp_2m, 10)
    assert err(sample_dpmpp_2m, 20) < 0.5 * err(sample_ddim, 20)
