"""Does synthetic data help nodule segmentation? The Lung-DDPM downstream experiment, on phantoms, in the open.

The paper reports Dice 0.3598 (real only) vs 0.3914 (real + synthetic). We repeat the design where every input is
known and reproducible:

* real training cases: phantoms with seeds ``real_seed ...``;
* held-out test cases: phantoms with seeds ``test_seed ...`` (a disjoint range);
* synthetic training cases: the layouts of phantoms with seeds ``synthetic_seed ...`` (a third disjoint range),
  synthesised by the diffusion model with AAS. AAS keeps the reference phantom's anatomy outside the layout and
  generates the lung and nodules inside it, so the synthetic CT with its layout's nodule mask is a training pair
  whose nodules the model drew (the phantom's own nodule intensities are never used).

Then :func:`~LungDDPMLib.downstream.train.train_segnet` trains the same network twice per training seed - arm
``real`` on real cases only, arm ``real+synthetic`` on both - with the same seed, steps, batch size and schedule,
and both are scored on the same test cases (:mod:`LungDDPMLib.downstream.metrics`).

Example:
    >>> result = run_downstream(DownstreamConfig(n_real=8, n_synthetic=16, n_test=12, repeats=3, out="out"))
    >>> result["summary"]["arms"]["real"]["dice"]["mean"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import InputError
from .data import Case, make_case

ARMS = ("real", "real+synthetic")


@dataclass(frozen=True)
class DownstreamConfig:
    """Settings of one experiment (all saved in ``downstream.json``).

    Attributes:
        n_real, n_synthetic, n_test: numbers of cases; their phantom seeds start at ``real_seed``,
            ``synthetic_seed`` and ``test_seed`` and must not overlap.
        steps, batch_size, patch, lr, positive_fraction: segmentation training, identical for both arms;
            ``patch`` is in voxels ``(z, y, x)`` at the phantom's spacing.
        synthetic_fraction: share of the ``real+synthetic`` arm's patches that come from synthetic cases
            (``None``: pooled, i.e. ``n_synthetic / (n_real + n_synthetic)``, as if the two sets were merged).
        repeats, seed: training seeds ``seed ... seed + repeats - 1``, each used by both arms.
        phantom_size, phantom_spacing, nodules: phantom geometry ``(x, y, z)``, voxels and mm, and nodules per case.
        checkpoint: diffusion model (``None``: the bundled demo model); sampler, sampler_steps: how it samples.
        device: ``auto``, ``cpu``, ``cuda``...; out: folder for ``downstream.json``/``.csv`` (``None``: none written).
    """

    n_real: int = 8
    n_synthetic: int = 16
    n_test: int = 12
    steps: int = 500
    batch_size: int = 8
    patch: Tuple[int, int, int] = (16, 32, 32)
    lr: float = 5e-3
    positive_fraction: float = 0.5
    synthetic_fraction: Optional[float] = 0.5
    repeats: int = 1
    seed: int = 0
    real_seed: int = 2000
    test_seed: int = 3000
    synthetic_seed: int = 4000
    phantom_size: Tuple[int, int, int] = (128, 128, 80)
    phantom_spacing: Tuple[float, float, float] = (1.6, 1.6, 3.0)
    nodules: int = 2
    checkpoint: Optional[str] = None
    sampler: str = "dpm++"
    sampler_steps: Optional[int] = 20
    device: str = "auto"
    out: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("n_real", "n_synthetic", "n_test", "steps", "batch_size", "repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        if len(self.patch) != 3 or any(int(p) < 4 for p in self.patch):
            raise InputError(f"patch must be three sizes >= 4 voxels (z, y, x), got {self.patch}")
        if not 0.0 <= self.positive_fraction <= 1.0:
            raise InputError(f"positive_fraction must lie in [0, 1], got {self.positive_fraction}")
        if self.synthetic_fraction is not None and not 0.0 < self.synthetic_fraction < 1.0:
            raise InputError(f"synthetic_fraction must lie in (0, 1) or be None, got {self.synthetic_fraction}")
        if self.nodules < 1:
            raise InputError(f"nodules must be >= 1 (the task is nodule segmentation), got {self.nodules}")
        ranges = {k: (s, s + n) for k, s, n in self.seed_ranges()}
        for a, (lo_a, hi_a) in ranges.items():
            for b, (lo_b, hi_b) in ranges.items():
                if a < b and lo_a < hi_b and lo_b < hi_a:
                    raise InputError(f"phantom seeds of {a} {list(ranges[a])} and {b} {list(ranges[b])} overlap")

    def seed_ranges(self) -> List[Tuple[str, int, int]]:
        """(kind, first seed, count) of the three phantom sets."""
        return [
            ("real", self.real_seed, self.n_real),
            ("test", self.test_seed, self.n_test),
            ("synthetic", self.synthetic_seed, self.n_synthetic),
        ]


def _phantom(config: DownstreamConfig, seed: int) -> Any:
    from ..phantom import make_phantom

    return make_phantom(config.phantom_size, config.phantom_spacing, seed=seed, nodules=config.nodules)


def _load_model(config: DownstreamConfig, model: Any, device: Any) -> Tuple[Any, Dict[str, Any]]:
    """The diffusion model (given, or loaded from the checkpoint / the bundled demo model) and what it is."""
    from ..checkpoint import file_sha256, load_checkpoint
    from ..registry import DEMO_FILE

    if model is not None:
        return model.to(device), {"source": "object passed to run_downstream", "preset": model.config.preset}
    path = Path(config.checkpoint) if config.checkpoint else DEMO_FILE
    if not path.is_file():
        what = "checkpoint" if config.checkpoint else "bundled demo model"
        raise InputError(f"{what} not found: {path} (pass an existing .pt file)")
    ckpt = load_checkpoint(path, map_location=device)
    info = {"source": "checkpoint" if config.checkpoint else "bundled demo model", "path": str(path)}
    info.update(sha256=file_sha256(path), preset=ckpt.config.preset, grid=list(ckpt.config.grid), step=ckpt.step)
    return ckpt.model, info


def build_cases(
    config: DownstreamConfig, model: Any, log: Callable[[str], None]
) -> Tuple[Dict[str, List[Case]], Dict[str, Any]]:
    """Real, test and synthetic cases, and the seconds they took (synthesis per case)."""
    from ..sampling import SamplerConfig
    from ..synthesis import synthesize_case

    cases: Dict[str, List[Case]] = {"real": [], "test": [], "synthetic": []}
    timing: Dict[str, Any] = {"synthesis_per_case": []}
    t0 = time.perf_counter()
    for kind, first, count in config.seed_ranges()[:2]:
        for seed in range(first, first + count):
            ph = _phantom(config, seed)
            cases[kind].append(make_case(ph.ct, ph.layout, kind, seed))
    timing["phantoms"] = time.perf_counter() - t0
    log(f"  {config.n_real} real and {config.n_test} test phantoms in {timing['phantoms']:.0f} s")
    sampler = SamplerConfig(config.sampler, steps=config.sampler_steps)
    for i, seed in enumerate(range(config.synthetic_seed, config.synthetic_seed + config.n_synthetic)):
        t = time.perf_counter()
        ph = _phantom(config, seed)
        result = synthesize_case(ph.ct, ph.layout, model, sampler=sampler, seeds=[seed])
        cases["synthetic"].append(make_case(result.images[0], ph.layout, "synthetic", seed))
        seconds = round(time.perf_counter() - t, 2)
        timing["synthesis_per_case"].append(seconds)
        log(f"  synthetic case {i + 1}/{config.n_synthetic} (layout seed {seed}) in {seconds} s")
    return cases, timing


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
        InputError: bad settings or a missing checkpoint file.
    """
    import torch

    from ..device import resolve_device
    from .report import summarize, write_results
    from .train import evaluate, train_segnet

    say = log if log is not None else (lambda message: None)
    started = time.perf_counter()
    device = resolve_device(config.device)
    diffusion, model_info = _load_model(config, model, device)
    say(f"downstream: model {model_info.get('path', model_info['source'])} on {device}")
    cases, timing = build_cases(config, diffusion, say)
    f = config.synthetic_fraction
    mix = f if f is not None else config.n_synthetic / (config.n_real + config.n_synthetic)
    setups = {"real": ([cases["real"]], [1.0]), "real+synthetic": ([cases["real"], cases["synthetic"]], [1 - mix, mix])}
    runs: List[Dict[str, Any]] = []
    for seed in range(config.seed, config.seed + config.repeats):
        for arm in ARMS:
            pools, weights = setups[arm]
            say(f"  training arm {arm!r}, seed {seed}")
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
            )
            t = time.perf_counter()
            metrics = evaluate(trained.net, cases["test"], tuple(config.patch), device)  # type: ignore[arg-type]
            runs.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "train_cases": {"real": len(pools[0]), "synthetic": len(pools[1]) if len(pools) > 1 else 0},
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
            "synthesis": "each synthetic case is sampled with its layout's seed",
            "training": list(range(config.seed, config.seed + config.repeats)),
        },
        "runs": runs,
        "summary": summarize(runs),
        "timing_s": {k: [round(x, 2) for x in v] if isinstance(v, list) else round(v, 2) for k, v in timing.items()},
    }
    if config.out is not None:
        result["outputs"] = {k: str(v) for k, v in write_results(Path(config.out), result).items()}
    return result
