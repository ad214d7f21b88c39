"""Sampling API: validated inputs, seeded per-sample noise, AAS, progress, cancel, device and precision.

This is the one entry point the CLI, the worker and the Slicer module call; the samplers themselves stay short.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..config import LABEL_BACKGROUND, LAYOUT_LABELS
from ..diffusion import DiffusionModel
from ..errors import InputError, SamplingCancelled
from .aas import AASBlender, AASConfig
from .density import DensityControl
from .eta import EtaEstimator
from .runtime import RuntimeOptions, prepared_denoiser, resolve_runtime
from .samplers import SAMPLERS, make_timesteps, sample_ddim, sample_ddpm, sample_dpmpp_2m

ArrayLike = Union[np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class SamplerConfig:
    """Which sampler, how many network evaluations, and its options.

    Attributes:
        name: ``dpm++`` (DPM-Solver++ 2M, default), ``ddim`` or ``ddpm`` (ancestral over all T levels, as published).
        steps: network evaluations; ``None`` takes the sampler's default (20, 50, T).
        eta: DDIM stochasticity (0 = deterministic).
        spacing: timestep spacing (``trailing``, ``linspace``, ``quadratic``); ``None`` takes the sampler's default.
        clip_x0: clamp x0 estimates to [-1, 1] as published.
        timesteps: explicit strictly descending levels, starting at T-1, instead of a spacing: a schedule tuned to a
            model (a bundled student's few-step one, chosen on validation phantoms); ``steps`` is then their count.
    """

    name: str = "dpm++"
    steps: Optional[int] = None
    eta: float = 0.0
    spacing: Optional[str] = None
    clip_x0: bool = True
    timesteps: Optional[Tuple[int, ...]] = None

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise InputError(f"unknown sampler {self.name!r}; choose one of {', '.join(SAMPLERS)}")
        if isinstance(self.eta, bool) or not isinstance(self.eta, (int, float)) or not 0.0 <= self.eta <= 1.0:
            raise InputError(f"eta must be a number in [0, 1], got {self.eta!r}")
        if self.eta and self.name != "ddim":
            raise InputError(f"eta applies to the ddim sampler only ({self.name} was chosen)")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)):
            raise InputError(f"steps must be an integer, got {self.steps!r}")
        if self.timesteps is not None:
            try:
                levels = tuple(self.timesteps)
            except TypeError:
                raise InputError(f"timesteps must be a list of integer levels, got {self.timesteps!r}") from None
            if self.spacing is not None:
                raise InputError("give either timesteps or a spacing, not both")
            if not levels or any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) for t in levels):
                raise InputError(f"timesteps must be a non-empty list of integer levels, got {self.timesteps!r}")
            if any(t < 0 for t in levels) or any(a <= b for a, b in zip(levels, levels[1:])):
                raise InputError(f"timesteps must be strictly descending levels from T-1 towards 0, got {levels}")
            if self.name == "ddpm":
                raise InputError("the DDPM sampler walks every level; explicit timesteps apply to ddim and dpm++")
            if self.steps is not None and self.steps != len(levels):
                raise InputError(f"steps={self.steps} disagrees with the {len(levels)} timesteps given")
            object.__setattr__(self, "timesteps", tuple(int(t) for t in levels))
            object.__setattr__(self, "steps", len(levels))


def check_top_level(levels: Sequence[int], num_timesteps: int) -> None:
    """Explicit levels must start at the model's top level T-1: sampling starts from pure noise, which is that
    level's distribution and no lower one's."""
    if levels[0] != num_timesteps - 1:
        raise InputError(
            f"timesteps {list(levels)} must start at this model's top level {num_timesteps - 1}, where sampling "
            "starts from pure noise"
        )


@dataclass(frozen=True)
class StepInfo:
    """Progress of one sampling call, passed to the callback after every network evaluation.

    ``eta_s`` is the estimated time left (see :class:`~LungDDPMLib.sampling.eta.EtaEstimator`: the median of
    recent step durations, not counting the first step, which carries warm-up and compilation).
    """

    step: int
    total: int
    level: int
    elapsed_s: float
    eta_s: float


def _as_tensor(name: str, value: ArrayLike) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, copy=True))
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    raise InputError(f"{name} must be a numpy array or torch tensor, got {type(value).__name__}")


def _validate_condition(model: DiffusionModel, condition: ArrayLike, shape: torch.Size) -> torch.Tensor:
    cond = _as_tensor("condition", condition).float()
    channels = len(model.config.unet.layout_channels)
    if tuple(cond.shape) != (channels, *shape):
        raise InputError(
            f"condition must have shape {(channels, *tuple(shape))} (one channel per model layout channel "
            f"{model.config.unet.layout_channels}, on the layout's grid), got {tuple(cond.shape)}"
        )
    if not torch.isfinite(cond).all() or float(cond.min()) < -1.0 or float(cond.max()) > 1.0:
        raise InputError("condition channels must be finite and within [-1, 1]")
    return cond


def _validate(
    model: DiffusionModel,
    layout: ArrayLike,
    reference: Optional[ArrayLike],
    known_mask: Optional[ArrayLike],
) -> tuple:
    lay = _as_tensor("layout", layout)
    if lay.dim() != 3:
        raise InputError(f"layout must be a 3D label volume (D, H, W), got shape {tuple(lay.shape)}")
    if lay.is_floating_point():
        if not torch.isfinite(lay).all():
            raise InputError("layout contains NaN or infinite values")
        if not torch.equal(lay, lay.round()):
            raise InputError("layout must hold integer labels (0 background, 1 lung, 2 nodule)")
    lay = lay.long()
    bad = sorted(set(torch.unique(lay).tolist()) - set(LAYOUT_LABELS))
    if bad:
        raise InputError(
            f"layout has labels {bad[:5]}; only 0 (background), 1 (lung), 2 (nodule) and 3-5 (solid, part-solid, "
            "ground-glass nodule) are allowed"
        )
    factor = model.config.unet.downsample_factor
    if any(s < factor or s % factor for s in lay.shape):
        raise InputError(f"layout shape {tuple(lay.shape)} must be divisible by {factor} on every axis for this model")
    ref = None
    if reference is not None:
        ref = _as_tensor("reference", reference).float()
        if ref.shape != lay.shape:
            raise InputError(f"reference shape {tuple(ref.shape)} differs from layout shape {tuple(lay.shape)}")
        if not torch.isfinite(ref).all():
            raise InputError("reference contains NaN or infinite values")
        lo, hi = float(ref.min()), float(ref.max())
        if lo < -1.001 or hi > 1.001:
            raise InputError(
                f"reference must be normalised to [-1, 1] (range found {lo:.3g}..{hi:.3g}); "
                "preprocess the CT first (HU values cannot be fed to the model directly)"
            )
    known = None
    if known_mask is not None:
        if ref is None:
            raise InputError("known_mask only makes sense with AAS: pass the reference CT too")
        known = _as_tensor("known_mask", known_mask)
        if known.shape != lay.shape:
            raise InputError(f"known_mask shape {tuple(known.shape)} differs from layout shape {tuple(lay.shape)}")
        if known.dtype != torch.bool and not torch.isin(known, torch.tensor([0, 1], dtype=known.dtype)).all():
            raise InputError("known_mask must be boolean (or hold only 0 and 1)")
        known = known.bool()
    return lay, ref, known


def _generators(seeds: Sequence[int], device: torch.device) -> List[torch.Generator]:
    gens = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
            raise InputError(f"seeds must be non-negative integers, got {seed!r}")
        gens.append(torch.Generator(device=device).manual_seed(int(seed)))
    return gens


@contextlib.contextmanager
def _eval_mode(model: DiffusionModel) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def sample(
    model: DiffusionModel,
    layout: ArrayLike,
    reference: Optional[ArrayLike] = None,
    *,
    sampler: Optional[SamplerConfig] = None,
    aas: Optional[AASConfig] = None,
    seeds: Union[int, Sequence[int]] = (0,),
    known_mask: Optional[ArrayLike] = None,
    condition: Optional[ArrayLike] = None,
    precision: Optional[str] = None,
    batch_size: Optional[int] = None,
    callback: Optional[Callable[[StepInfo], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    runtime: Optional[RuntimeOptions] = None,
    density: Optional[DensityControl] = None,
) -> torch.Tensor:
    """Generate one volume per seed for a layout, on the model's device.

    Args:
        model: a :class:`DiffusionModel` already on the device to use (it is not moved).
        layout: (D, H, W) labels 0/1/2-5 on the model grid (3-5: nodules of a stated class).
        reference: (D, H, W) real CT normalised to [-1, 1], needed for AAS.
        sampler: sampler settings (default DPM-Solver++ 2M, 20 steps).
        aas: AAS settings; default: on when a reference is given, off otherwise.
        seeds: one sample per seed; with the default ``batch_size`` a sample depends only on its seed, bit for bit
            (not on the other seeds of the call).
        known_mask: (D, H, W) voxels to keep from the reference; default ``layout == 0``, or with ``condition``
            the voxels where every channel is exactly -1 (the published rule).
        condition: (C, D, H, W) layout channels in [-1, 1] to feed the network instead of the channels made from
            ``layout`` (models trained on linearly resized channels get them from preprocessing; see
            :attr:`LungDDPMLib.data.pipeline.ModelInput.channels`).
        precision: ``fp32`` (default) or ``bf16`` (autocast for the network only); the same as
            ``runtime.precision``, kept for existing callers (giving both with different values is an error).
        batch_size: samples per network call; default 1 (all seeds step together, the network sees one at a
            time). More can be faster on a GPU, but then a sample equals the same seed sampled alone only up to
            rounding: convolution, linear and group-norm kernels choose their algorithm, and with it the order of
            their sums, by batch size (on a CPU: about 1e-5 of [-1, 1] in fp32, tens of HU in bf16 channels-last).
        callback: receives a :class:`StepInfo` after every network evaluation.
        should_stop: polled before every evaluation; returning True raises :class:`SamplingCancelled`.
        runtime: how the network runs (precision, channels-last, torch.compile, CUDA graphs); default fp32 eager.
        density: nodule density control (:mod:`LungDDPMLib.sampling.density`) applied to every clean-image estimate;
            built for this layout's grid.
    Returns:
        (N, D, H, W) float32 tensor on the CPU, values in [-1, 1] (AAS known voxels equal ``reference`` exactly).
    Example:
        >>> from LungDDPMLib.config import preset
        >>> m = DiffusionModel(preset("tiny"))
        >>> lay = torch.zeros(32, 32, 32, dtype=torch.long); lay[8:24, 8:24, 8:24] = 1
        >>> out = sample(m, lay, torch.zeros(32, 32, 32), sampler=SamplerConfig("ddim", steps=2))
        >>> out.shape, bool((out[0][lay == 0] == 0).all())
        (torch.Size([1, 32, 32, 32]), True)
    """
    sampler = sampler or SamplerConfig()
    lay, ref, known = _validate(model, layout, reference, known_mask)
    given_cond = _validate_condition(model, condition, lay.shape) if condition is not None else None
    if given_cond is not None and known is None:
        known = (given_cond == -1.0).all(dim=0)
    if aas is None:
        aas = AASConfig(enabled=ref is not None)
    if aas.enabled and ref is None:
        raise InputError("AAS needs the real reference CT: pass reference=..., or disable AAS")
    seeds = [seeds] if isinstance(seeds, (int, np.integer)) else list(seeds)
    if not seeds:
        raise InputError("seeds must name at least one sample")
    schedule = model.schedule
    defaults = SAMPLERS[sampler.name]
    steps = sampler.steps if sampler.steps is not None else (defaults["steps"] or schedule.num_timesteps)
    if sampler.name == "ddpm" and steps != schedule.num_timesteps:
        raise InputError(f"the DDPM sampler walks all {schedule.num_timesteps} levels; use ddim or dpm++ for fewer")
    if sampler.timesteps is not None:
        check_top_level(sampler.timesteps, schedule.num_timesteps)
        timesteps = list(sampler.timesteps)
    else:
        timesteps = make_timesteps(schedule, steps, sampler.spacing or str(defaults["spacing"]))
    device = next(model.parameters()).device
    runtime = resolve_runtime(runtime, precision)
    runtime.check_device(device)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    chunk = batch_size or len(seeds)  # samples that step together
    # Samples per network call: one unless asked, so that no kernel sees how many seeds share the call (the
    # solver's elementwise arithmetic is the same for a voxel whatever the batch). On our 2-core CPU batching
    # gains little: 4 per call was slower per sample (docs/benchmarks.md), 3 per call about 9% faster.
    per_call = batch_size or 1

    outputs = []
    total = len(timesteps) * math.ceil(len(seeds) / chunk)
    done = 0
    start = time.perf_counter()
    eta = EtaEstimator(total, start)
    with _eval_mode(model), prepared_denoiser(model, runtime) as eps:
        for first in range(0, len(seeds), chunk):
            gens = _generators(seeds[first : first + chunk], device)
            b = len(gens)
            shape = (1, 1, *lay.shape)

            def noise(gens: List[torch.Generator] = gens, shape: tuple = shape) -> torch.Tensor:
                return torch.cat([torch.randn(shape, generator=g, device=device) for g in gens])

            if given_cond is None:
                cond = model.condition(lay.to(device)[None].expand(b, -1, -1, -1))
            else:
                cond = given_cond.to(device)[None].expand(b, -1, -1, -1, -1)

            def eps_fn(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor = cond) -> torch.Tensor:
                if x.shape[0] <= per_call:
                    return eps(x, t, cond)
                parts = range(0, x.shape[0], per_call)
                return torch.cat([eps(x[j : j + per_call], t[j : j + per_call], cond[j : j + per_call]) for j in parts])

            if density:
                eps_fn = density.wrap(eps_fn)
            blender = None
            if aas.enabled:
                mask = known if known is not None else lay == LABEL_BACKGROUND
                blender = AASBlender(
                    schedule,
                    ref.to(device)[None, None].expand(b, 1, -1, -1, -1),
                    mask.to(device)[None, None].expand(b, 1, -1, -1, -1),
                    aas,
                    noise,
                )

            def hook(
                x: torch.Tensor, i: int, t_from: int, t_to: int, blender: Optional[AASBlender] = blender
            ) -> torch.Tensor:
                nonlocal done
                done += 1
                if blender is not None:
                    x = blender(x, i, t_from, t_to)
                if callback is not None:
                    now = time.perf_counter()
                    callback(StepInfo(done, total, t_from, now - start, eta.update(done, now)))
                if should_stop is not None and done < total and should_stop():
                    raise SamplingCancelled(done, total)
                return x

            if should_stop is not None and should_stop():
                raise SamplingCancelled(done, total)
            x = noise()
            if blender is not None:
                x = blender.start(x, timesteps[0])
            clip = sampler.clip_x0
            if sampler.name == "ddpm":
                x = sample_ddpm(eps_fn, x, schedule, noise=noise, hook=hook, clip_x0=clip)
            elif sampler.name == "ddim":
                x = sample_ddim(eps_fn, x, schedule, timesteps, noise=noise, hook=hook, eta=sampler.eta, clip_x0=clip)
            else:
                x = sample_dpmpp_2m(eps_fn, x, schedule, timesteps, noise=noise, hook=hook, clip_x0=clip)
            outputs.append(x[:, 0].float().cpu())
    return torch.cat(outputs)
