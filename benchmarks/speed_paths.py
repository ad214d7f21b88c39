"""What a path of benchmarks/sampling_speed.py is, and how one is measured: time, memory, ETA and quality.

Kept apart from the script's command line and report so that each file holds one idea; see the script's help
for what the numbers mean.
"""

from __future__ import annotations

import gc
import os
import re
import resource
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
import torch

from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.errors import InputError, SamplingCancelled
from LungDDPMLib.evaluation import paired_metrics
from LungDDPMLib.phantom import make_phantom
from LungDDPMLib.sampling import RuntimeOptions, SamplerConfig, StepInfo, prepared_denoiser
from LungDDPMLib.synthesis import synthesize_case

PATH_RE = re.compile(r"^(ddpm|ddim|dpm\+\+)(\d+)((?:\+[a-z0-9]+)*)$")
SSIM_MARGIN = 8  # voxels kept around the layout's box: more than the SSIM window's radius (5)


@dataclass(frozen=True)
class PathSpec:
    """One way of sampling: the sampler, how the network runs, the attention formulation and the batch."""

    name: str
    sampler: SamplerConfig
    runtime: RuntimeOptions
    reference_attention: bool = False
    batch: int = 1


def parse_path(name: str) -> PathSpec:
    m = PATH_RE.match(name)
    if not m:
        raise InputError(f"cannot read path {name!r}; e.g. ddpm250, dpm++20, dpm++20+bf16+cl+compile, ddim50+batch4")
    sampler = SamplerConfig(m.group(1), steps=None if m.group(1) == "ddpm" else int(m.group(2)))
    if m.group(1) == "ddpm" and int(m.group(2)) != 250:
        raise InputError(f"{name}: the DDPM sampler walks all 250 levels; write ddpm250")
    opts = [o for o in m.group(3).split("+") if o]
    batch = [int(o[5:]) for o in opts if re.fullmatch(r"batch\d+", o)]
    unknown = set(opts) - {"bf16", "cl", "compile", "autotune", "graphs", "refattn"} - {f"batch{b}" for b in batch}
    if unknown or (batch and batch[0] < 1):
        raise InputError(f"{name}: unknown options {sorted(unknown) or batch}")
    runtime = RuntimeOptions(
        precision="bf16" if "bf16" in opts else "fp32",
        channels_last="cl" in opts,
        compile="compile" in opts or "autotune" in opts,
        compile_mode="max-autotune" if "autotune" in opts else "default",
        cuda_graphs="graphs" in opts,
    )
    return PathSpec(name, sampler, runtime, "refattn" in opts, batch[0] if batch else 1)


def default_paths(steps: List[int], k: int) -> List[str]:
    fast = f"dpm++{k}"
    chain = [f"{fast}+bf16", f"{fast}+bf16+cl", f"{fast}+bf16+cl+compile", f"{fast}+bf16+cl+compile+graphs"]
    single = [f"{fast}+cl", f"{fast}+compile", f"{fast}+graphs", f"{fast}+refattn", f"{fast}+batch4"]
    return ["ddpm250", *dict.fromkeys(f"dpm++{s}" for s in [*steps, k]), *chain, *single]


# ----------------------------------------------------------------------------------------------- measurement


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def current_rss_mb() -> Optional[float]:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


class PeakMemory:
    """Peak CPU RSS growth (sampled every 10 ms) and CUDA max allocated over a ``with`` block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.result: Dict[str, Optional[float]] = {}

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        self.base, self.maxrss0 = current_rss_mb(), max_rss_mb()
        self.peak = self.base
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self) -> None:
        while not self.stop.wait(0.01):
            now = current_rss_mb()
            if now is not None and self.peak is not None:
                self.peak = max(self.peak, now)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        grown = None if self.base is None else max(self.peak or 0.0, current_rss_mb() or 0.0) - self.base
        self.result = {
            "cpu_rss_peak_growth_mb": None if grown is None else round(grown, 1),
            "cpu_maxrss_growth_mb": round(max_rss_mb() - self.maxrss0, 1),  # 0 if under an earlier path's peak
        }
        if self.device.type == "cuda":
            self.result["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)


def denoiser_latency(model: DiffusionModel, spec: PathSpec, repeats: int) -> Dict[str, float]:
    """Median network call at the model grid for the path's batch; the first call (compilation) apart."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(0)
    grid = model.config.grid
    x = torch.randn(spec.batch, 1, *grid, generator=g, device=device)
    t = torch.full((spec.batch,), 100, device=device, dtype=torch.long)
    cond = model.condition(torch.ones(spec.batch, *grid, dtype=torch.long, device=device))
    times = []
    with torch.no_grad(), prepared_denoiser(model, spec.runtime) as eps:
        for _ in range(repeats + 2):  # first: warm-up/compile; second: CUDA graph recording or autotuning
            sync(device)
            start = time.perf_counter()
            eps(x, t, cond)
            sync(device)
            times.append(time.perf_counter() - start)
    steady = times[2:]
    return {"warmup_s": round(times[0], 3), "denoiser_ms": round(1000 * statistics.median(steady), 2)}


@dataclass
class Case:
    seed: int
    ct: sitk.Image
    layout: sitk.Image
    box: Tuple[slice, ...]  # the layout's bounding box plus SSIM_MARGIN, (z, y, x)
    real: np.ndarray  # HU inside box
    lay: np.ndarray
    spacing_zyx: Tuple[float, ...]


def make_cases(n: int, size: List[int], spacing: List[float]) -> List[Case]:
    cases = []
    for seed in range(n):
        ph = make_phantom(size, spacing, seed=seed, nodules=2)
        lay = sitk.GetArrayFromImage(ph.layout)
        idx = np.nonzero(lay)
        box = tuple(slice(max(0, int(i.min()) - SSIM_MARGIN), int(i.max()) + 1 + SSIM_MARGIN) for i in idx)
        real = sitk.GetArrayFromImage(ph.ct)[box].astype(np.float32)
        cases.append(Case(seed, ph.ct, ph.layout, box, real, lay[box], tuple(ph.ct.GetSpacing()[::-1])))
    return cases


def eta_error(steps: List[StepInfo], first: int = 3, last_fraction: float = 0.9) -> Optional[float]:
    """Worst relative error of the reported ETA against the time that really remained, from step ``first`` on.

    The last 10% of the steps are left out: a fraction of a second off looks large relative to almost nothing.
    """
    end = steps[-1].elapsed_s
    errors = [
        abs(s.eta_s - (end - s.elapsed_s)) / (end - s.elapsed_s)
        for s in steps[first - 1 : int(len(steps) * last_fraction)]
        if end > s.elapsed_s
    ]
    return round(max(errors), 3) if errors else None


def run_case(model: DiffusionModel, spec: PathSpec, case: Case, stop_after: Optional[int]) -> Dict[str, Any]:
    """One synthesize_case call; with ``stop_after`` only that many steps, timed and extrapolated.

    Returns ``sampling_s`` (per sample), ``step_s`` (median step: network, solver and AAS), ``extrapolated``, and
    for complete runs the ETA's worst relative error (:func:`eta_error`) and the first sample's HU in the box.
    """
    seeds = [case.seed] + [10_000 + case.seed * spec.batch + k for k in range(1, spec.batch)]
    steps: List[StepInfo] = []
    try:
        result = synthesize_case(
            case.ct,
            case.layout,
            model,
            sampler=spec.sampler,
            seeds=seeds,
            batch_size=spec.batch,
            runtime=spec.runtime,
            callback=steps.append,
            should_stop=(lambda: len(steps) >= stop_after) if stop_after else None,
        )
    except SamplingCancelled:
        result = None
    times = [b.elapsed_s - a.elapsed_s for a, b in zip(steps, steps[1:])]
    step_s = statistics.median(times) if times else steps[-1].elapsed_s
    row: Dict[str, Any] = {"step_s": step_s, "extrapolated": result is None}
    if result is None:
        done, total = steps[-1].step, steps[-1].total
        return {**row, "sampling_s": (steps[-1].elapsed_s + step_s * (total - done)) / spec.batch}
    synthetic = sitk.GetArrayFromImage(result.images[0])[case.box].astype(np.float32)
    row.update(sampling_s=result.timing_s["sampling"] / spec.batch, eta_error=eta_error(steps), synthetic=synthetic)
    return row


# ----------------------------------------------------------------------------------------------------- quality


def fid_tools() -> Tuple[Any, Any, Optional[str]]:
    """A feature function (radiomic features of every 40 mm patch of the generated region) and the set metrics.

    Patches, as ``lungddpm evaluate --set-unit patch``: a few held-out cases give dozens of feature vectors, so the
    FID is a usable estimate rather than the covariance of three points in 30 dimensions.
    """
    try:
        from LungDDPMLib.evaluation.features import RadiomicExtractor, extract_features
        from LungDDPMLib.evaluation.patches import patch_items
        from LungDDPMLib.evaluation.set_metrics import set_metrics
    except ImportError as exc:
        return None, None, f"FID skipped: {exc}"
    ex = RadiomicExtractor()

    def features(volume: np.ndarray, spacing: Any, mask: np.ndarray) -> np.ndarray:
        return extract_features(patch_items(volume, spacing, mask), ex)

    return features, set_metrics, None


def set_fid(set_metrics: Any, real: np.ndarray, synth: np.ndarray) -> Optional[float]:
    return round(float(set_metrics(real, synth, standardize=True)["fid"]), 3)


def quality(cases: List[Case], outputs: List[np.ndarray], baseline: Optional[List[np.ndarray]]) -> Dict[str, Any]:
    mse, ssim, direct = [], [], []
    for k, (case, out) in enumerate(zip(cases, outputs)):
        gen = paired_metrics(case.real, out, case.lay)["generated"]
        mse.append(gen["mse_hu"])
        ssim.append(gen["ssim"])
        if baseline is not None:
            direct.append(float(np.mean((out[case.lay > 0] - baseline[k][case.lay > 0]) ** 2)))
    row: Dict[str, Any] = {"mse_hu": round(float(np.mean(mse)), 1), "ssim": round(float(np.mean(ssim)), 4)}
    if baseline is not None:
        row["direct_mse_hu_vs_baseline"] = round(float(np.mean(direct)), 3)
    return row
