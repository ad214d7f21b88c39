"""Does synthetic data help nodule segmentation? The Lung-DDPM downstream experiment, on phantoms, in the open.

The paper reports Dice 0.3598 (real only) vs 0.3914 (real + synthetic), in the setting that motivates the method:
few real cases. We repeat that design where every input is known and reproducible
(:mod:`LungDDPMLib.downstream.design` has the seed ranges and the test nodules):

* real training cases: ``n_real`` phantoms (seeds ``real_seed ...``), two random nodules each;
* validation phantoms (seeds ``validation_seed ...``): early stopping only (:mod:`.early_stop`);
* held-out test cases: phantoms with seeds ``test_seed ...``, ``test_nodules`` nodules each, cycling through every
  class and size bin, scored once;
* synthetic training cases: *new layouts in the real phantoms*, drawn by the diffusion model with AAS
  (:mod:`.cases`). In ``roi`` mode only each nodule's patch is generated (the rest is the real phantom, bit for
  bit); in ``full`` mode the whole lung. With ``types="off"`` the model is not told the classes, with
  ``synthetic_intensity="matched"`` the drawn nodules are moved to the real class means and SDs (ablations).

Each arm trains the same network with the same seeds, batch size and schedule on the real cases plus
``multiple x n_real`` synthetic cases (``multiple`` 0 is the real-only arm) - a fixed number of steps, or, with
``patience``, until the validation loss stops improving - and every arm is scored on the same test cases
(:mod:`.metrics`, per class and per nodule). With ``out``, every run is written as it finishes (:mod:`.runs`) and a
rerun skips the finished ones.

Example:
    >>> cfg = DownstreamConfig(n_real=4, multiples=(0, 2), n_test=6, repeats=3, out="out")
    >>> result = run_downstream(cfg)  # doctest: +SKIP
    >>> result["summary"]["arms"]["real"]["seed_means"]["dice"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from .design import ROUND, check_disjoint, synthetic_seed_span, synthetic_source
from .train import MONAI_DICE, SEGNETS

MODES = ("roi", "full")
INTENSITY = ("as-drawn", "matched")
#: Who draws the nodules of the synthetic cases: the diffusion model, or (ablation) the phantom generator itself.
SOURCES = ("model", "phantom")


def arm_name(multiple: float) -> str:
    """``real`` for no synthetic data, else e.g. ``real+2x``."""
    return "real" if multiple == 0 else f"real+{multiple:g}x"


@dataclass(frozen=True)
class DownstreamConfig:
    """Settings of one experiment (all saved with every run).

    Attributes:
        n_real, n_validation, n_test: numbers of real training, validation and test phantoms.
        test_nodules: nodules per validation and test phantom (classes and size bins cycle over the set).
        multiples: one arm per entry: the real cases plus ``multiple * n_real`` synthetic cases (0: real only).
        steps, batch_size, patch, lr, positive_fraction: segmentation training, identical for all arms;
            ``patch`` is in voxels ``(z, y, x)`` at the phantom's spacing. ``steps`` is the cap with ``patience``.
        patience, eval_every, validation_patches: early stopping: the validation loss over
            ``validation_patches`` fixed patches every ``eval_every`` steps, stop after ``patience`` evaluations
            without improvement, keep the best weights (``patience`` None: train ``steps`` steps, no validation).
        stop_on: what early stopping watches: ``loss`` (validation loss) or ``dice`` (validation patch Dice).
        overlap: tile overlap of inference (None: 0.25 MONAI, 0.5 own).
        synthetic_fraction: share of an arm's patches that come from synthetic cases (``None``: pooled, i.e. in
            proportion to the numbers of cases, as if the two sets were merged).
        synthetic_intensity: ``as-drawn`` or ``matched`` (ablation: class mean and SD moved to the real ones).
        synthetic_source: ``model`` (the diffusion model draws the synthetic cases' nodules) or ``phantom``
            (ablation: the phantom generator draws the same layouts in the same anatomy, i.e. a perfect model:
            what more cases of the real distribution would give, against which the model's drawing is measured).
        density: the diffusion model's nodule density control (``lungddpm synthesize --density``: ``auto``, the
            class densities, is the default of every command; ``off``: the model alone, as the earlier runs).
        monai_dice: ``per-patch`` (MONAI's default) or ``batch`` (ablation: one Dice over the batch, like ours).
        repeats, seed: training seeds ``seed ... seed + repeats - 1``, each used by every arm.
        real_seed, validation_seed, test_seed, synthetic_seed: first phantom / layout seed of each set (ranges
            must not overlap).
        phantom_size, phantom_spacing: phantom geometry ``(x, y, z)``, voxels and mm; nodules: per training case.
        mode: ``roi`` (nodule patches at native resolution; default model: the bundled ROI model) or ``full``
            (the whole lung on the model grid; default: the bundled demo model).
        types: ``on`` (the layouts state each nodule's class) or ``off`` (ablation: classes withheld).
        segnet: ``monai`` (MONAI 3D U-Net, Dice-CE, sliding window) or ``own`` (our small U-Net).
        checkpoint: diffusion model (``None``: the bundled model of ``mode``); sampler, sampler_steps: how it samples.
        device: ``auto``, ``cpu``, ``cuda``...; out: folder for ``downstream.json``/``.csv`` and ``runs/`` (``None``:
            none written); cache: folder for the synthetic cases (``None``: ``out/synthetic-cache``).
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
    n_validation: int = 0
    validation_seed: int = 2500
    test_nodules: int = 3
    patience: Optional[int] = None
    eval_every: int = 100
    validation_patches: int = 64
    overlap: Optional[float] = None
    synthetic_intensity: str = "as-drawn"
    density: str = "auto"
    monai_dice: str = "per-patch"
    stop_on: str = "loss"
    synthetic_source: str = "model"

    def __post_init__(self) -> None:
        from ..nodule_density import parse_density

        parse_density(self.density)  # a misspelt density fails before minutes of phantoms
        for name in ("n_real", "n_test", "steps", "batch_size", "repeats", "test_nodules", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        if not 1 <= self.n_real < ROUND:
            raise InputError(f"n_real must be below {ROUND} (synthetic layout seeds come in rounds of {ROUND})")
        if self.n_validation < 0 or self.validation_patches < 1:
            raise InputError(f"n_validation must be >= 0 and validation_patches >= 1, got {self.n_validation}")
        if self.patience is not None and (self.patience < 1 or self.n_validation < 1):
            raise InputError(f"early stopping needs patience >= 1 and validation phantoms, got {self.patience}")
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
        if self.overlap is not None and not 0.0 <= self.overlap < 1.0:
            raise InputError(f"overlap must lie in [0, 1) or be None, got {self.overlap}")
        if self.nodules < 1:
            raise InputError(f"nodules must be >= 1 (the task is nodule segmentation), got {self.nodules}")
        for name, value, choices in (
            ("mode", self.mode, MODES),
            ("types", self.types, ("on", "off")),
            ("synthetic_intensity", self.synthetic_intensity, INTENSITY),
            ("segnet", self.segnet, SEGNETS),
            ("monai_dice", self.monai_dice, MONAI_DICE),
            ("stop_on", self.stop_on, ("loss", "dice")),
            ("synthetic_source", self.synthetic_source, SOURCES),
        ):
            if value not in choices:
                raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        check_disjoint(self.seed_ranges())

    @property
    def n_synthetic(self) -> int:
        """Synthetic cases needed by the largest arm."""
        return round(max(self.multiples) * self.n_real)

    def seed_ranges(self) -> List[Tuple[str, int, int]]:
        """(kind, first seed, count) of the four sets of phantom layouts."""
        return [
            ("real", self.real_seed, self.n_real),
            ("validation", self.validation_seed, self.n_validation),
            ("test", self.test_seed, self.n_test),
            ("synthetic", self.synthetic_seed, synthetic_seed_span(self.n_synthetic, self.n_real)),
        ]


def _pools(config: DownstreamConfig, cases: Dict[str, Any], multiple: float) -> Tuple[List[Any], List[float]]:
    from .evidence import match_intensity

    synthetic = cases["synthetic"][: round(multiple * config.n_real)]
    if synthetic and config.synthetic_intensity == "matched":
        synthetic = match_intensity(synthetic, cases["real"])
    pools = [cases["real"]] + ([synthetic] if synthetic else [])
    f = config.synthetic_fraction
    share = (len(synthetic) / (len(synthetic) + config.n_real)) if f is None else f
    return pools, [1.0] if not synthetic else [1.0 - share, share]


def train_and_score(
    config: DownstreamConfig, cases: Dict[str, Any], multiple: float, seed: int, device: Any, say: Callable[[str], None]
) -> Dict[str, Any]:
    """One run: train on the arm's pools (early-stopped on the validation phantoms when asked), score on the test
    phantoms, and record the evidence (curves, output histogram, training nodule intensities)."""
    import torch

    from .early_stop import validation_set
    from .evidence import pool_intensity
    from .train import evaluate, train_segnet

    pools, weights = _pools(config, cases, multiple)
    validation = None
    if config.n_validation:
        validation = validation_set(
            cases["validation"], config.validation_patches, tuple(config.patch), config.positive_fraction, 0
        )
    load = [round(v, 2) for v in os.getloadavg()]
    cpu = time.process_time()  # CPU seconds: on a shared machine a steadier cost than the wall clock
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
        log_every=max(config.steps // 4, 1) if config.patience is None else config.eval_every * 5,
        segnet=config.segnet,
        validation=validation,
        eval_every=config.eval_every,
        patience=config.patience,
        monai_dice=config.monai_dice,
        stop_on=config.stop_on,
    )
    t, cpu_train = time.perf_counter(), time.process_time() - cpu
    histogram: Dict[str, List[int]] = {}
    metrics = evaluate(trained.net, cases["test"], tuple(config.patch), device, config.overlap, histogram)
    n_syn = sum(len(p) for p in pools[1:])
    return {
        "segnet": config.segnet,
        "n_real": config.n_real,
        "arm": arm_name(multiple),
        "multiple": multiple,
        "seed": seed,
        "train_cases": {"real": config.n_real, "synthetic": n_syn},
        "patch_share": [round(w, 4) for w in weights],
        "items_per_pool": trained.items_per_pool,
        "losses": trained.losses,
        "train_curve": trained.train_curve,
        "validation_curve": trained.validation_curve,
        "best_step": trained.best_step,
        "steps_run": trained.steps_run,
        "train_s": round(trained.seconds, 2),
        "validation_s": round(trained.validation_s, 2),
        "eval_s": round(time.perf_counter() - t, 2),
        "cpu_s": {"train": round(cpu_train, 1), "eval": round(time.process_time() - cpu - cpu_train, 1)},
        "load_average": {"start": load, "end": [round(v, 2) for v in os.getloadavg()]},
        "torch_threads": torch.get_num_threads(),
        "probability_histogram": histogram,
        "training_intensity": pool_intensity({"real": pools[0], "synthetic": [c for p in pools[1:] for c in p]}),
        "cases": metrics,
    }


def prepare_cases(config: DownstreamConfig, *, log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Make (and cache) the phantoms and synthetic cases of ``config`` without training: the synthesis chunk of the
    powered design (``--real 8 --multiples 4`` makes all 32 synthetic cases the design uses)."""
    from ..device import resolve_device
    from .cases import build_cases, load_model

    say = log if log is not None else (lambda message: None)
    device = resolve_device(config.device)
    diffusion, model_info = load_model(config, None, device)
    _, made = build_cases(config, diffusion, model_info, say)
    return made


def run_downstream(
    config: DownstreamConfig,
    *,
    model: Any = None,
    log: Optional[Callable[[str], None]] = None,
    time_budget_s: Optional[float] = None,
) -> Dict[str, Any]:
    """Run the experiment (resuming the finished runs of ``config.out``); return and write what it measured.

    Args:
        config: the settings.
        model: a :class:`~LungDDPMLib.diffusion.DiffusionModel` to use instead of ``config.checkpoint``.
        log: receives progress lines (the CLI prints them to stderr).
        time_budget_s: start no new run once the time spent plus the longest run so far would pass this; the
            runs not started are listed in ``result["left"]`` (rerun the same command to go on). At least one run
            is always started.
    Returns:
        ``{"config", "model", "sampler", "seeds", "runs", "summary", "timing_s", ...}``; ``runs`` has one entry per
        arm and training seed with its per-case metrics (see :mod:`LungDDPMLib.downstream.report`).
    Raises:
        InputError: bad settings, a missing checkpoint file, a model that cannot draw the layouts' classes, or a
            finished run in ``out`` made with other settings.
    """
    import torch

    from ..device import resolve_device
    from .cases import build_cases, load_model
    from .report import summarize, write_results
    from .runs import fingerprint, load_finished, run_file, save_run
    from .train import make_segnet

    say = log if log is not None else (lambda message: None)
    make_segnet(config.segnet, 0)  # a missing MONAI is reported before minutes of synthesis
    started = time.perf_counter()
    device = resolve_device(config.device)
    diffusion, model_info = load_model(config, model, device)
    if config.mode != diffusion.config.spatial_mode:
        raise InputError(
            f"mode {config.mode!r} asked, but the model was trained in {diffusion.config.spatial_mode!r} mode"
        )
    say(f"downstream: model {model_info.get('path', model_info['source'])} on {device}")
    key = fingerprint(config)
    command = " ".join(sys.argv)
    cases: Optional[Dict[str, Any]] = None
    made: Dict[str, Any] = {"timing": {}, "synthetic_cases": [], "cache": None}
    runs: List[Dict[str, Any]] = []
    left: List[str] = []
    longest = 0.0
    trained_any = False
    for seed in range(config.seed, config.seed + config.repeats):
        for multiple in config.multiples:
            arm = arm_name(multiple)
            path = run_file(Path(config.out), config.segnet, config.n_real, arm, seed) if config.out else None
            done = load_finished(path, key) if path is not None else None
            if done is not None:
                say(f"  {path.name}: finished before, read back")  # type: ignore[union-attr]
                runs.append(done)
                continue
            spent = time.perf_counter() - started
            if time_budget_s is not None and trained_any and spent + longest > time_budget_s:
                left.append(f"{config.segnet}-real{config.n_real}-{arm}-seed{seed}")
                continue
            if cases is None:  # built only when a run is left to do
                cases, made = build_cases(config, diffusion, model_info, say)
            say(f"  training {config.segnet} arm {arm!r} ({config.n_real} real cases), seed {seed}")
            t_run = time.perf_counter()
            record = train_and_score(config, cases, multiple, seed, device, say)
            longest, trained_any = max(longest, time.perf_counter() - t_run), True
            record.update(fingerprint=key, command=command, config=dataclasses.asdict(config))
            if path is not None:
                save_run(path, record)
            runs.append({**record, "complete": True})
    timing = made.pop("timing")
    timing["total"] = time.perf_counter() - started
    result: Dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "fingerprint": key,
        "model": model_info,
        "sampler": {"name": config.sampler, "steps": config.sampler_steps, "aas": True},
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "seeds": {
            **{kind: list(range(first, first + n)) for kind, first, n in config.seed_ranges()[:3]},
            "synthetic": [
                synthetic_source(i, config.n_real, config.real_seed, config.synthetic_seed)[1]
                for i in range(config.n_synthetic)
            ],
            "synthesis": "synthetic case i: anatomy of real phantom a = i mod n_real, layout and sampling seeded by "
            f"synthetic_seed + {ROUND} * (i // n_real) + a",
            "training": list(range(config.seed, config.seed + config.repeats)),
        },
        "synthetic_cases": made["synthetic_cases"],
        "synthetic_cache": made["cache"],
        "runs": runs,
        "left": left,
        "summary": summarize(runs),
        "timing_s": {k: round(v, 2) for k, v in timing.items()},
    }
    if config.out is not None:
        result["outputs"] = {k: str(v) for k, v in write_results(Path(config.out), result).items()}
    return result
