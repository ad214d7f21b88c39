"""Does synthetic data help nodule segmentation? The Lung-DDPM downstream experiment, on phantoms, in the open.

The paper reports Dice 0.3598 (real only) vs 0.3914 (real + synthetic), in the setting that motivates the method:
few real cases. We repeat that design where every input is known and reproducible:

* real training cases: ``n_real`` phantoms (seeds ``real_seed ...``), two random nodules each;
* held-out test cases: phantoms with seeds ``test_seed ...``, each with one solid, one part-solid and one
  ground-glass nodule, so every class is scored;
* synthetic training cases: *new layouts in the real phantoms*. Synthetic case ``i`` keeps the anatomy of real
  phantom ``i mod n_real`` and gets new nodules (positions, sizes, shapes and classes drawn from the phantom's
  distribution, seeded by ``synthetic_seed + i``); the diffusion model then draws them with AAS. In ``roi`` mode only
  each nodule's patch is generated (the rest is the real phantom, bit for bit); in ``full`` mode the whole lung. The
  phantom's own rendering of the new nodules lies inside the regenerated region, so every nodule voxel of a
  synthetic case is the model's. With ``types="off"`` the model is not told the classes (ablation).

Synthetic cases are generated once per setting and cached on disk, so the arms differ only in training. Each arm
trains the same network (MONAI's 3D U-Net by default) with the same seeds, steps, batch size and schedule, on the
real cases plus ``multiple x n_real`` synthetic cases (``multiple`` 0 is the real-only arm), and every arm is scored
on the same test cases (:mod:`LungDDPMLib.downstream.metrics`, per nodule class too).

Example:
    >>> cfg = DownstreamConfig(n_real=4, multiples=(0, 2), n_test=6, repeats=3, out="out")
    >>> result = run_downstream(cfg)  # doctest: +SKIP
    >>> result["summary"]["arms"]["real"]["seed_means"]["dice"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..config import NODULE_TYPES
from ..errors import InputError
from .data import Case, make_case
from .train import SEGNETS

MODES = ("roi", "full")


def arm_name(multiple: float) -> str:
    """``real`` for no synthetic data, else e.g. ``real+2x``."""
    return "real" if multiple == 0 else f"real+{multiple:g}x"


@dataclass(frozen=True)
class DownstreamConfig:
    """Settings of one experiment (all saved in ``downstream.json``).

    Attributes:
        n_real, n_test: numbers of real training and test phantoms.
        multiples: one arm per entry: the real cases plus ``multiple * n_real`` synthetic cases (0: real only).
        steps, batch_size, patch, lr, positive_fraction: segmentation training, identical for all arms;
            ``patch`` is in voxels ``(z, y, x)`` at the phantom's spacing.
        synthetic_fraction: share of an arm's patches that come from synthetic cases (``None``: pooled, i.e. in
            proportion to the numbers of cases, as if the two sets were merged).
        repeats, seed: training seeds ``seed ... seed + repeats - 1``, each used by every arm.
        real_seed, test_seed, synthetic_seed: first phantom / layout seed of each set (ranges must not overlap).
        phantom_size, phantom_spacing: phantom geometry ``(x, y, z)``, voxels and mm; nodules: per training case.
        mode: ``roi`` (nodule patches at native resolution; default model: the bundled ROI model) or ``full``
            (the whole lung on the model grid; default: the bundled demo model).
        types: ``on`` (the layouts state each nodule's class) or ``off`` (ablation: classes withheld).
        segnet: ``monai`` (MONAI 3D U-Net, Dice-CE, sliding window) or ``own`` (our small U-Net).
        checkpoint: diffusion model (``None``: the bundled model of ``mode``); sampler, sampler_steps: how it samples.
        device: ``auto``, ``cpu``, ``cuda``...; out: folder for ``downstream.json``/``.csv`` (``None``: none written);
        cache: folder for the synthetic cases (``None``: ``out/synthetic-cache``, or none without ``out``).
    """

    n_real: int = 4
    multiples: Tuple[float, ...] = (0, 2)
    n_test: int = 6
    steps: int = 400
    batch_size: int = 4
    patch: Tuple[int, int, int] = (24, 48, 48)
    lr: float = 1e-3
    positive_fraction: float = 0.5
    synthetic_fraction: Optional[float] = None
    repeats: int = 3
    seed: int = 0
    real_seed: int = 2000
    test_seed: int = 3000
    synthetic_seed: int = 4000
    phantom_size: Tuple[int, int, int] = (256, 256, 160)
    phantom_spacing: Tuple[float, float, float] = (0.8, 0.8, 1.5)
    nodules: int = 2
    mode: str = "roi"
    types: str = "on"
    segnet: str = "monai"
    checkpoint: Optional[str] = None
    sampler: str = "dpm++"
    sampler_steps: Optional[int] = 20
    device: str = "auto"
    out: Optional[str] = None
    cache: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("n_real", "n_test", "steps", "batch_size", "repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.multiples or any(not np.isfinite(m) or m < 0 for m in self.multiples):
            raise InputError(f"multiples must be numbers >= 0 (0: real only), got {self.multiples}")
        if len(set(self.multiples)) != len(self.multiples):
            raise InputError(f"multiples must be distinct, got {self.multiples}")
        if any(abs(m * self.n_real - round(m * self.n_real)) > 1e-9 for m in self.multiples):
            raise InputError(f"every multiple x n_real must be a whole number of cases, got {self.multiples}")
        if len(self.patch) != 3 or any(int(p) < 4 for p in self.patch):
            raise InputError(f"patch must be three sizes >= 4 voxels (z, y, x), got {self.patch}")
        if self.segnet == "monai" and any(int(p) % 8 for p in self.patch):
            raise InputError(f"the MONAI U-Net needs patch sizes divisible by 8, got {self.patch}")
        if not 0.0 <= self.positive_fraction <= 1.0:
            raise InputError(f"positive_fraction must lie in [0, 1], got {self.positive_fraction}")
        if self.synthetic_fraction is not None and not 0.0 < self.synthetic_fraction < 1.0:
            raise InputError(f"synthetic_fraction must lie in (0, 1) or be None, got {self.synthetic_fraction}")
        if self.nodules < 1:
            raise InputError(f"nodules must be >= 1 (the task is nodule segmentation), got {self.nodules}")
        for name, value, choices in (("mode", self.mode, MODES), ("types", self.types, ("on", "off"))):
            if value not in choices:
                raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        if self.segnet not in SEGNETS:
            raise InputError(f"segnet must be one of {', '.join(SEGNETS)}, got {self.segnet!r}")
        ranges = {k: (s, s + n) for k, s, n in self.seed_ranges()}
        for a, (lo_a, hi_a) in ranges.items():
            for b, (lo_b, hi_b) in ranges.items():
                if a < b and lo_a < hi_b and lo_b < hi_a:
                    raise InputError(f"phantom seeds of {a} {list(ranges[a])} and {b} {list(ranges[b])} overlap")

    @property
    def n_synthetic(self) -> int:
        """Synthetic cases needed by the largest arm."""
        return round(max(self.multiples) * self.n_real)

    def seed_ranges(self) -> List[Tuple[str, int, int]]:
        """(kind, first seed, count) of the three sets."""
        return [
            ("real", self.real_seed, self.n_real),
            ("test", self.test_seed, self.n_test),
            ("synthetic", self.synthetic_seed, self.n_synthetic),
        ]


def _phantom(config: DownstreamConfig, seed: int, nodules: Any) -> Any:
    from ..phantom import make_phantom

    return make_phantom(config.phantom_size, config.phantom_spacing, seed=seed, nodules=nodules)


def _fits(layout: Any, patch_zyx: Tuple[int, ...]) -> bool:
    import SimpleITK as sitk

    from ..data.spatial import fits_roi_patch

    return fits_roi_patch(sitk.GetArrayViewFromImage(layout), patch_zyx)


def make_test_phantom(config: DownstreamConfig, seed: int, patch_zyx: Optional[Tuple[int, ...]] = None) -> Any:
    """A test phantom with one nodule of each class (sizes, shapes and sides drawn from the phantom's distribution);
    with ``patch_zyx``, redrawn until every nodule fits such a patch."""
    from ..phantom.nodules import random_specs

    rng = np.random.default_rng([seed, 17])
    for _ in range(30):
        specs = [dataclasses.replace(s, kind=k) for s, k in zip(random_specs(len(NODULE_TYPES), rng), NODULE_TYPES)]
        try:
            ph = _phantom(config, seed, specs)
        except InputError:  # a drawn nodule did not fit this lung: draw again
            continue
        if patch_zyx is None or _fits(ph.layout, patch_zyx):
            return ph
    raise InputError(f"could not place the test nodules in phantom {seed}")


def synthetic_layout(config: DownstreamConfig, index: int, patch_zyx: Optional[Tuple[int, ...]]) -> Tuple[Any, int]:
    """Real phantom ``index mod n_real`` with new random nodules; redrawn until every nodule fits ``patch_zyx``
    (``roi`` mode). Returns the phantom (its CT is the real anatomy) and the real seed it shares."""
    from ..phantom.nodules import random_specs

    real = config.real_seed + index % config.n_real
    rng = np.random.default_rng([config.synthetic_seed + index, 23])
    for _ in range(30):
        try:
            ph = _phantom(config, real, random_specs(config.nodules, rng))
        except InputError:
            continue
        if patch_zyx is None or _fits(ph.layout, patch_zyx):
            return ph, real
    raise InputError(f"could not draw nodules that fit the model's patch for synthetic case {index}")


def _load_model(config: DownstreamConfig, model: Any, device: Any) -> Tuple[Any, Dict[str, Any]]:
    """The diffusion model (given, or loaded from the checkpoint / the bundled model of the mode) and what it is."""
    from ..checkpoint import file_sha256, load_checkpoint
    from ..registry import bundled_model

    if model is not None:
        info = {"source": "object passed to run_downstream", "preset": model.config.preset}
        return model.to(device), {**info, "sha256": None}
    path = Path(config.checkpoint) if config.checkpoint else bundled_model(config.mode)
    if not path.is_file():
        what = "checkpoint" if config.checkpoint else f"bundled {config.mode} model"
        raise InputError(f"{what} not found: {path} (pass an existing .pt file)")
    ckpt = load_checkpoint(path, map_location=device)
    info = {"source": "checkpoint" if config.checkpoint else f"bundled {config.mode} model", "path": str(path)}
    info.update(sha256=file_sha256(path), preset=ckpt.config.preset, grid=list(ckpt.config.grid), step=ckpt.step)
    return ckpt.model, info


def _cache_dir(config: DownstreamConfig, model_info: Dict[str, Any]) -> Optional[Path]:
    """One folder per model and synthesis setting: everything that decides a synthetic case is in its name."""
    root = config.cache or (str(Path(config.out) / "synthetic-cache") if config.out else None)
    if root is None or not model_info.get("sha256"):
        return None
    key = {
        "model": model_info["sha256"],
        "types": config.types,
        "sampler": [config.sampler, config.sampler_steps],
        "phantom": [list(config.phantom_size), list(config.phantom_spacing), config.nodules],
        "seeds": [config.real_seed, config.n_real, config.synthetic_seed],
        "version": 1,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / digest


def make_synthetic(
    config: DownstreamConfig, model: Any, index: int, cache: Optional[Path]
) -> Tuple[Case, Dict[str, Any]]:
    """Synthetic case ``index``: from the cache, or made now (and cached)."""
    from ..data.io import read_image, write_image
    from ..data.nodule_types import retype_image
    from ..sampling import SamplerConfig
    from ..synthesis import synthesize_case

    seed = config.synthetic_seed + index
    paths = (cache / f"synthetic{seed}_ct.nrrd", cache / f"synthetic{seed}_layout.nrrd") if cache else None
    if paths and all(p.is_file() for p in paths):
        ct, layout = (read_image(p) for p in paths)
        return make_case(ct, layout, "synthetic", seed), {"seed": seed, "cached": True}
    t = time.perf_counter()
    patch = tuple(model.config.grid) if model.config.spatial_mode == "roi" else None
    ph, real = synthetic_layout(config, index, patch)
    layout = ph.layout
    if config.types == "off":  # the model is not told the classes; the target mask is the same
        layout = retype_image(ph.layout, None)
    sampler = SamplerConfig(config.sampler, steps=config.sampler_steps)
    result = synthesize_case(ph.ct, layout, model, sampler=sampler, seeds=[seed])
    if paths:
        write_image(ph.layout, paths[1])
        write_image(result.images[0], paths[0])  # the CT last: a pair is complete only when both exist
    info = {
        "seed": seed,
        "anatomy_of_real_seed": real,
        "nodules": [{k: n[k] for k in ("kind", "shape", "diameter_mm")} for n in ph.info["nodules"]],
        "seconds": round(time.perf_counter() - t, 2),
        "cached": False,
    }
    return make_case(result.images[0], ph.layout, "synthetic", seed), info


def build_cases(
    config: DownstreamConfig, model: Any, model_info: Dict[str, Any], log: Callable[[str], None]
) -> Tuple[Dict[str, List[Case]], Dict[str, Any]]:
    """Real, test and synthetic cases, and what making them took."""
    cases: Dict[str, List[Case]] = {"real": [], "test": [], "synthetic": []}
    timing: Dict[str, Any] = {}
    t0 = time.perf_counter()
    for seed in range(config.real_seed, config.real_seed + config.n_real):
        ph = _phantom(config, seed, config.nodules)
        cases["real"].append(make_case(ph.ct, ph.layout, "real", seed))
    for seed in range(config.test_seed, config.test_seed + config.n_test):
        ph = make_test_phantom(config, seed)
        cases["test"].append(make_case(ph.ct, ph.layout, "test", seed))
    timing["phantoms"] = time.perf_counter() - t0
    log(f"  {config.n_real} real and {config.n_test} test phantoms in {timing['phantoms']:.0f} s")
    cache = _cache_dir(config, model_info)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    made = []
    t1 = time.perf_counter()
    for i in range(config.n_synthetic):
        case, info = make_synthetic(config, model, i, cache)
        cases["synthetic"].append(case)
        made.append(info)
        how = "from the cache" if info["cached"] else f"in {info['seconds']} s"
        log(f"  synthetic case {i + 1}/{config.n_synthetic} (layout seed {info['seed']}) {how}")
    timing["synthetic"] = time.perf_counter() - t1
    return cases, {"timing": timing, "synthetic_cases": made, "cache": str(cache) if cache else None}


def run_downstream(
    config: DownstreamConfig, *, model: Any = None, log: Optional[Callable[[str], None]] = None
) -> Dict[str, Any]:
    """Run the experiment; return (and, with ``config.out``, write) everything it measured.

    Args:
        config: the settings.
        model: a :class:`~LungDDPMLib.diffusion.DiffusionModel` to use instead of ``config.checkpoint``.
        log: receives progress lines (the CLI prints them to stderr).
    Returns:
        ``{"config", "model", "sampler", "seeds", "runs", "summary", "timing_s", ...}``; ``runs`` has one entry per
        arm and training seed with its per-case metrics (see :mod:`LungDDPMLib.downstream.report`).
    Raises:
        InputError: bad settings, a missing checkpoint file, or a model that cannot draw the layouts' classes.
    """
    import torch

    from ..device import resolve_device
    from .report import summarize, write_results
    from .train import evaluate, make_segnet, train_segnet

    say = log if log is not None else (lambda message: None)
    make_segnet(config.segnet, 0)  # a missing MONAI is reported before minutes of synthesis
    started = time.perf_counter()
    device = resolve_device(config.device)
    diffusion, model_info = _load_model(config, model, device)
    if config.mode != diffusion.config.spatial_mode:
        raise InputError(
            f"mode {config.mode!r} asked, but the model was trained in {diffusion.config.spatial_mode!r} mode"
        )
    say(f"downstream: model {model_info.get('path', model_info['source'])} on {device}")
    cases, made = build_cases(config, diffusion, model_info, say)
    timing = made.pop("timing")
    runs: List[Dict[str, Any]] = []
    for seed in range(config.seed, config.seed + config.repeats):
        for multiple in config.multiples:
            arm = arm_name(multiple)
            synthetic = cases["synthetic"][: round(multiple * config.n_real)]
            pools = [cases["real"]] + ([synthetic] if synthetic else [])
            f = config.synthetic_fraction
            share = (len(synthetic) / (len(synthetic) + config.n_real)) if f is None else f
            weights = [1.0] if not synthetic else [1.0 - share, share]
            say(f"  training arm {arm!r} ({len(synthetic)} synthetic cases), seed {seed}")
            trained = train_segnet(
                pools,
                weights,
                steps=config.steps,
                batch_size=config.batch_size,
                patch=tuple(config.patch),  # type: ignore[arg-type]
                seed=seed,
                lr=config.lr,
                positive_fraction=config.positive_fraction,
                device=device,
                log=say,
                log_every=max(config.steps // 4, 1),
                segnet=config.segnet,
            )
            t = time.perf_counter()
            metrics = evaluate(trained.net, cases["test"], tuple(config.patch), device)  # type: ignore[arg-type]
            runs.append(
                {
                    "arm": arm,
                    "multiple": multiple,
                    "seed": seed,
                    "train_cases": {"real": config.n_real, "synthetic": len(synthetic)},
                    "patch_share": [round(w, 4) for w in weights],
                    "items_per_pool": trained.items_per_pool,
                    "losses": trained.losses,
                    "train_s": round(trained.seconds, 2),
                    "eval_s": round(time.perf_counter() - t, 2),
                    "cases": metrics,
                }
            )
    timing["total"] = time.perf_counter() - started
    result: Dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "model": model_info,
        "sampler": {"name": config.sampler, "steps": config.sampler_steps, "aas": True},
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "seeds": {
            **{kind: list(range(first, first + n)) for kind, first, n in config.seed_ranges()},
            "synthesis": "synthetic case i: anatomy of real phantom i mod n_real, new nodules and sampling seeded by "
            "synthetic_seed + i",
            "training": list(range(config.seed, config.seed + config.repeats)),
        },
        "synthetic_cases": made["synthetic_cases"],
        "synthetic_cache": made["cache"],
        "runs": runs,
        "summary": summarize(runs),
        "timing_s": {k: round(v, 2) for k, v in timing.items()},
    }
    if config.out is not None:
        result["outputs"] = {k: str(v) for k, v in write_results(Path(config.out), result).items()}
    return result
