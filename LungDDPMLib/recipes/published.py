"""The ``published`` recipe on SimpleITK images: settings for Lung-DDPM, the whole run for Lung-DDPM+."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch

from ..data.spatial import composite
from ..errors import SamplingCancelled
from .plus_case import plus_case
from .plus_solver import ORDER, STEPS

#: What the published Lung-DDPM recipe fixes (its ``sample.py`` order and sampler, the faithful AAS).
LUNGDDPM_SAMPLER = "ddpm"
LUNGDDPM_COMPAT_ORDER = "resize-then-scale"


def published_runtime(runtime: Any) -> Any:
    """The authors ran in float32: ``auto`` precision means fp32 here (an explicit ``bf16`` is kept)."""
    if runtime.precision == "auto":
        return dataclasses.replace(runtime, precision="fp32", channels_last=False)
    return runtime


def plus_description(size: int) -> Dict[str, Any]:
    return {
        "name": "published",
        "family": "lung-ddpm-plus",
        "crop": f"{size}^3 cube around a seeded random nodule voxel, start = voxel - {size // 2}, clipped inside",
        "scaling": "min-max per NIfTI-i index over the cube (MinMaxScaler on reshape(-1, last axis)), then * 2 - 1",
        "sampler": f"DPM-Solver++ multistep order {ORDER}, {STEPS} time-uniform steps, dynamic thresholding 0.995",
        "known_region": "nodule channel == -1 starts from the 50-step ODE inversion of the real crop; not pasted",
        "network_time": "(t - 1/N) * 1000, as the published wrapper",
        "insertion": "the whole cube replaces the CT (hard edge)",
        "network_calls_per_sample": 2 * STEPS,
    }


def run_plus(
    ct: sitk.Image,
    layout: sitk.Image,
    model: Any,
    seeds: Sequence[int],
    runtime: Any,
    callback: Optional[Callable[[int, int], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> Tuple[List[sitk.Image], List[Dict[str, Any]], float]:
    """Every seed through :func:`~.plus_case.plus_case`; returns images (CT pixel type), cubes, sampling seconds.

    ``callback(done, total)`` runs after every network call; ``should_stop`` is polled there (cancelling raises
    :class:`SamplingCancelled` and returns nothing).
    """
    from ..sampling.runtime import prepared_denoiser

    size = int(model.config.grid[0])
    ct_zyx = sitk.GetArrayFromImage(ct)
    lay_zyx = sitk.GetArrayFromImage(layout)
    device = next(model.parameters()).device
    total, done = 2 * STEPS * len(seeds), 0

    def after_call() -> None:
        nonlocal done
        done += 1
        if should_stop is not None and should_stop():
            raise SamplingCancelled("sampling was cancelled")
        if callback is not None:
            callback(done, total)

    images, cubes = [], []
    t0 = time.perf_counter()
    with torch.no_grad(), prepared_denoiser(model, published_runtime(runtime)) as eps:
        for seed in seeds:
            hu, cube = plus_case(
                ct_zyx, lay_zyx, eps, seed=int(seed), size=size, timesteps=model.num_timesteps,
                device=device, after_call=after_call,
            )  # fmt: skip
            if not np.isfinite(hu).all():
                from ..errors import NumericalError

                raise NumericalError(f"the model produced NaN or infinite values (seed {seed}); nothing was written")
            region = np.zeros(ct_zyx.shape, dtype=bool)
            region[cube.slices_zyx()] = True
            images.append(composite(ct, hu, region))
            cubes.append({"seed": int(seed), **cube.to_dict()})
    return images, cubes, time.perf_counter() - t0
