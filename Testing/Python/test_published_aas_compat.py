"""The published Lung-DDPM sampler with AAS, written out here independently (the authors' ``GaussianDiffusion``
schedule buffers and ``p_sample_loop`` with ``blend_from``), against this project's sampler step by step. The
input pipeline's side is in ``test_published_compat.py``.
"""

from __future__ import annotations

import math
from typing import Dict, List

import numpy as np
import pytest
import torch
from test_published_compat import published_known  # the published known-region mask, defined once

from LungDDPMLib.config import ScheduleConfig, preset
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.sampling import AASConfig, SamplerConfig
from LungDDPMLib.sampling.aas import AASBlender
from LungDDPMLib.sampling.samplers import sample_ddpm


def published_schedule(T: int) -> Dict[str, torch.Tensor]:
    """``cosine_beta_schedule`` and the buffers ``GaussianDiffusion`` registers (float64 math, float32 buffers)."""
    steps = T + 1
    x = np.linspace(0, steps, steps)
    ac = np.cos(((x / steps) + 0.008) / (1 + 0.008) * np.pi * 0.5) ** 2
    ac = ac / ac[0]
    betas = np.clip(1 - (ac[1:] / ac[:-1]), 0, 0.999)
    alphas_cumprod = np.cumprod(1.0 - betas)
    prev = np.append(1.0, alphas_cumprod[:-1])
    post_var = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return {
        "sqrt_ab": f(np.sqrt(alphas_cumprod)),
        "sqrt_1mab": f(np.sqrt(1.0 - alphas_cumprod)),
        "sqrt_recip_ab": f(np.sqrt(1.0 / alphas_cumprod)),
        "sqrt_recipm1_ab": f(np.sqrt(1.0 / alphas_cumprod - 1)),
        "log_var": f(np.log(np.maximum(post_var, 1e-20))),
        "coef1": f(betas * np.sqrt(prev) / (1.0 - alphas_cumprod)),
        "coef2": f((1.0 - prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod)),
    }


def published_loop(eps_fn, img, x_start, cond, blend_from: int, draws: List[torch.Tensor], T: int):
    """``p_sample_loop_lung_ddpm`` with its noise taken, in its order, from ``draws`` (noise it multiplies by
    zero or never uses is not taken). Returns the state after every step."""
    s = published_schedule(T)
    draws = list(draws)
    states = []
    mask = published_known(cond)[None, None]
    for i in reversed(range(T)):
        recon = s["sqrt_recip_ab"][i] * img - s["sqrt_recipm1_ab"][i] * eps_fn(img, i)
        recon = recon.clamp(-1.0, 1.0)
        mean = s["coef1"][i] * recon + s["coef2"][i] * img
        noise = draws.pop(0) if i > 0 else torch.zeros_like(img)
        img = mean + float(i > 0) * (0.5 * s["log_var"][i]).exp() * noise
        if i <= blend_from:
            x_noisy = s["sqrt_ab"][i] * x_start + s["sqrt_1mab"][i] * draws.pop(0)
            img = torch.where(mask, x_noisy, img)
        states.append(img)
    assert not draws
    return states


#: A short schedule keeps the step-by-step runs fast; the published code takes --timesteps too (default 250).
T_TEST = 50


def small_model() -> DiffusionModel:
    torch.manual_seed(0)
    return DiffusionModel(preset("tiny", grid=(8, 8, 8), schedule=ScheduleConfig(timesteps=T_TEST))).eval()


@pytest.mark.parametrize("blend_from", [0, 20, T_TEST - 1])
def test_faithful_aas_with_blend_from_is_the_published_sampler_step_by_step(blend_from):
    model = small_model()
    gen = torch.Generator().manual_seed(blend_from)
    cond = torch.full((2, 8, 8, 8), -1.0)
    cond[0, 1:7, 2:7, 1:6] = 1.0
    cond[0, 1:2, 2:7, 1:6] = 0.3  # fractional boundary: generated, as published (not exactly -1)
    cond[1, 3:5, 3:5, 2:4] = 1.0
    x_start = torch.rand(1, 1, 8, 8, 8, generator=gen) * 2 - 1
    draws: List[torch.Tensor] = []

    def noise() -> torch.Tensor:
        draws.append(torch.randn(1, 1, 8, 8, 8, generator=gen))
        return draws[-1]

    def eps_fn(x: torch.Tensor, t) -> torch.Tensor:
        t = torch.full((1,), int(t), dtype=torch.long) if not isinstance(t, torch.Tensor) else t
        with torch.no_grad():
            return model.eps(x, t, cond[None])

    ours: List[torch.Tensor] = []
    blender = AASBlender(
        model.schedule,
        x_start,
        published_known(cond)[None, None],
        AASConfig(faithful=True, blend_from=blend_from),
        noise,
    )

    def hook(x, i, t_from, t_to):
        ours.append(blender(x, i, t_from, t_to))
        return ours[-1]

    x_T = noise()
    final = sample_ddpm(eps_fn, blender.start(x_T, T_TEST - 1), model.schedule, noise=noise, hook=hook)
    theirs = published_loop(eps_fn, x_T, x_start, cond, blend_from, draws[1:], T_TEST)
    assert len(ours) == len(theirs) == T_TEST
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.allclose(a, b, atol=1e-4, rtol=0), f"step {step} differs by {float((a - b).abs().max())}"
    assert torch.equal(final, ours[-1])


@pytest.mark.parametrize("blend_from", [None, 30, 0])
def test_blend_from_means_the_same_for_the_corrected_aas(blend_from):
    """Corrected AAS: blending after every step that starts at a level <= blend_from, and the exact reference
    after the last step when that step blends."""
    model = small_model()
    lay = torch.zeros(8, 8, 8, dtype=torch.long)
    lay[1:7, 2:7, 1:6] = 1
    ref = torch.linspace(-1, 1, 8**3).reshape(8, 8, 8)
    from LungDDPMLib.sampling import sample

    levels: List[int] = []
    real_call = AASBlender.__call__

    def spy(self, x, i, t_from, t_to):
        out = real_call(self, x, i, t_from, t_to)
        if not torch.equal(out, x):
            levels.append(t_from)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AASBlender, "__call__", spy)
        out = sample(model, lay, ref, sampler=SamplerConfig("ddpm"), aas=AASConfig(blend_from=blend_from))
    bound = T_TEST - 1 if blend_from is None else blend_from
    assert levels == list(range(bound, -1, -1))
    assert torch.equal(out[0][lay == 0], ref[lay == 0])
    assert math.isfinite(float(out.abs().max()))
