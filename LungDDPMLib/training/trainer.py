"""The training loop: published recipe, exact resume, DDP, EMA, atomic checkpoints and a JSONL loss log.

Every random choice belongs to the run's seed (data order: :class:`StreamSampler`; noise and dropout:
:mod:`.loss`), so a resume needs only the update count and the optimiser/EMA state - k updates, resume, N - k more
give bit-identical weights to N straight - and 2 processes with batch 1 compute the update of 1 process with batch 2.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..device import autocast_context
from ..diffusion import DiffusionModel
from ..errors import InputError
from .checkpointing import TRAINER_STATE_VERSION, CheckpointMixin, TrainingDiverged
from .config import TrainConfig
from .datasets import StreamSampler, check_dataset_preparation, check_item, derive_seed
from .distributed import DistInfo, any_across, barrier, device_for, mean_across
from .ema import EMA
from .loss import LossModule, draw_noise, owned_rng

__all__ = ["TRAINER_STATE_VERSION", "TrainResult", "Trainer", "TrainingDiverged"]

log = logging.getLogger("LungDDPMLib.training")
ProgressCallback = Callable[[int, int, float, float], None]


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT/SIGTERM, which reach them too (Ctrl-C and schedulers signal the whole
    process group); the training process stops them itself after writing its checkpoint. Had they died first,
    the next batch would raise "DataLoader worker exited unexpectedly" and no checkpoint would be written."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did: the update count reached, whether it was stopped, and its losses."""

    step: int
    stopped_early: bool
    losses: List[float] = field(default_factory=list)
    checkpoint: Optional[Path] = None
    elapsed_s: float = 0.0

    @property
    def last_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


class Trainer(CheckpointMixin):
    """Trains a copy of ``model`` on (CT, layout) pairs.

    Args:
        model: the :class:`DiffusionModel` to start from; it is copied, never changed (see :attr:`model`).
        dataset: items ``{"ct": (1, D, H, W) float in [-1, 1], "layout": (D, H, W) long}`` on the model grid.
        config: the recipe (:class:`TrainConfig`; defaults are the published ones).
        run_dir: receives ``checkpoints/step-NNNNNNN.pt``, ``last.pt`` and ``loss.jsonl``.
        device: ``auto``, ``cpu``, ``cuda``...; a distributed CUDA run uses ``cuda:LOCAL_RANK``.
        distributed: this process's place in a torchrun job (default: the running process group, if any).
        resume: ``True`` continues from ``run_dir/last.pt`` (error if absent), ``"auto"`` does so if it exists.
    Example:
        >>> from LungDDPMLib.config import preset
        >>> from LungDDPMLib.training import make_toy_pairs
        >>> tr = Trainer(DiffusionModel(preset("tiny")), make_toy_pairs(2, (32, 32, 32)),
        ...              TrainConfig(max_steps=1, grad_accum=1), "/tmp/run", device="cpu")  # doctest: +SKIP
        >>> tr.fit().step  # doctest: +SKIP
        1
    """

    def __init__(
        self,
        model: DiffusionModel,
        dataset: Dataset,
        config: TrainConfig,
        run_dir: Union[str, Path],
        *,
        device: Union[str, torch.device, None] = "auto",
        distributed: Optional[DistInfo] = None,
        resume: Union[bool, str] = False,
    ) -> None:
        if not isinstance(model, DiffusionModel):
            raise InputError(f"model must be a DiffusionModel, got {type(model).__name__}")
        if not isinstance(config, TrainConfig):
            raise InputError(f"config must be a TrainConfig, got {type(config).__name__}")
        try:
            size = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise InputError("dataset must have a length (a map-style torch Dataset)") from None
        if size < 1:
            raise InputError("the dataset is empty: there is nothing to train on")
        check_item(dataset[0], "dataset item 0", model.config)
        check_dataset_preparation(dataset, model.config)
        self.dist = distributed or DistInfo.current()
        self.device = device_for(device, self.dist)
        if config.precision == "bf16" and self.device.type != "cuda":
            raise InputError(
                f"precision 'bf16' trains with autocast on CUDA only; this run is on {self.device.type}. "
                "Use precision 'fp32' (the published setting) here."
            )
        self.config = config
        self.dataset = dataset
        self.run_dir = Path(run_dir)
        self.model = copy.deepcopy(model).to(self.device).train()
        self.ema = EMA(self.model, decay=config.ema_decay, every=config.ema_every, start=config.ema_start)
        self.optimizer = self._make_optimizer()
        self._loss_module = LossModule(self.model, config.loss, config.nodule_weight, config.nodule_weight_margin)
        self._ddp: Optional[nn.Module] = None
        self._noise_gen = torch.Generator(device=self.device)
        self.step = 0
        self.samples_seen = 0
        self._elapsed_before = 0.0
        self._saved_step = -1
        # The newest checkpoint known to hold finite weights: (file to resume from, its step, a copy or None).
        self._last_finite: Optional[Tuple[Path, int, Optional[Path]]] = None
        if resume == "auto":
            resume = self.last_path.is_file()
        elif resume not in (True, False):
            raise InputError(f"resume must be True, False or 'auto', got {resume!r}")
        if resume:
            self.resume()
        elif self.dist.is_main:
            self._truncate_log()  # a fresh run at step 0: lines of an earlier, checkpoint-less run would repeat steps

    # ----------------------------------------------------------------------------------------------- set-up
    @property
    def ema_model(self) -> DiffusionModel:
        return self.ema.model

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return cls(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)

    def _loss_fn(self) -> nn.Module:
        if not self.dist.is_distributed:
            return self._loss_module
        if self._ddp is None:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self._loss_module, device_ids=ids)
        return self._ddp

    def _loader(self) -> Iterator[Dict[str, torch.Tensor]]:
        sampler = StreamSampler(
            len(self.dataset),  # type: ignore[arg-type]
            self.config.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start=self.samples_seen,
            with_epoch=bool(getattr(self.dataset, "accepts_epoch", False)),
        )
        worker_seed = torch.Generator().manual_seed(derive_seed(self.config.seed, "workers", self.samples_seen))
        loader = DataLoader(
            self.dataset,
            batch_size=self.config.batch_size,
            sampler=sampler,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=worker_seed,
            worker_init_fn=_leave_stop_signals_to_the_trainer if self.config.num_workers else None,
        )
        return iter(loader)

    # ------------------------------------------------------------------------------------------------ a step
    def _batch(self, batch: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        """The batch's CT and the network's layout channels (made from the labels, or the item's ``condition``:
        linearly resized channels for models trained like the published ones)."""
        ct, layout = batch["ct"], batch["layout"]
        if ct.dim() != 5 or layout.dim() != 4 or tuple(ct.shape[2:]) != tuple(layout.shape[1:]):
            raise InputError(f"batch ct {tuple(ct.shape)} and layout {tuple(layout.shape)} do not match")
        config = self.model.config
        if tuple(layout.shape[1:]) != tuple(config.grid):
            raise InputError(f"batch size {tuple(layout.shape[1:])} differs from model grid {config.grid}")
        ct = ct.to(self.device, torch.float32, non_blocking=True)
        if not torch.isfinite(ct).all() or float(ct.abs().max()) > 1.001:
            raise InputError("a training CT is not finite or not normalised to [-1, 1]; preprocess the data first")
        cond = batch.get("condition")
        if cond is None:
            if config.layout_resize == "channels-linear":
                raise InputError(
                    "this model was trained on linearly resized layout channels, but the batch has none; build the "
                    "dataset with data.datasets.model_data_options(model.config)"
                )
            return ct, self.model.condition(layout.to(self.device, torch.long, non_blocking=True))
        expected = (layout.shape[0], len(config.unet.layout_channels), *layout.shape[1:])
        if tuple(cond.shape) != expected:
            raise InputError(f"batch condition {tuple(cond.shape)} should have shape {expected}")
        return ct, cond.to(self.device, torch.float32, non_blocking=True)

    def draw_noise(self, step_index: int, first: int, ct: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Levels and noise of update ``step_index`` for samples at ``first, first+1, ...`` of the global batch."""
        return draw_noise(self._noise_gen, self.config.seed, step_index, first, ct, self.model.num_timesteps)

    def _train_step(self, batches: Iterator[Dict[str, torch.Tensor]]) -> float:
        cfg, info = self.config, self.dist
        step_index = self.step
        loss_fn = self._loss_fn()
        self.optimizer.zero_grad(set_to_none=True)
        summed = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum):
            ct, cond = self._batch(next(batches))
            self.samples_seen += cfg.batch_size
            first = (micro * info.world_size + info.rank) * cfg.batch_size
            t, noise = self.draw_noise(step_index, first, ct)
            last = micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext() if last or self._ddp is None else self._ddp.no_sync()  # type: ignore
            with sync, owned_rng(self.device, derive_seed(cfg.seed, "dropout", step_index, micro, info.rank)):
                with autocast_context(self.device, cfg.precision):
                    loss = loss_fn(ct, cond, t, noise)
                (loss / cfg.grad_accum).backward()
            summed += loss.detach().float()
        total = float(summed)  # one device sync per update
        if not math.isfinite(total):
            raise TrainingDiverged(f"the training loss became {total} at step {step_index + 1}; {self._advice()}")
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.ema.update(self.model, self.step)
        return total / cfg.grad_accum

    # --------------------------------------------------------------------------------------------- the loop
    def fit(
        self,
        max_steps: Optional[int] = None,
        callback: Optional[ProgressCallback] = None,
        should_stop: Optional[Callable[[], bool]] = None,
    ) -> TrainResult:
        """Train until ``max_steps`` optimiser updates in total (default ``config.max_steps``) or until stopped.

        Args:
            max_steps: total update count to reach (a resumed run counts the updates it already has).
            callback: on the main process after every update, ``callback(step, total, loss, eta_s)``.
            should_stop: polled before every update (on every process); when it returns True a checkpoint is
                written and the result says ``stopped_early``.
        """
        target = self.config.max_steps if max_steps is None else max_steps
        if isinstance(target, bool) or not isinstance(target, int) or target < 1:
            raise InputError(f"max_steps must be an integer >= 1, got {max_steps!r}")
        result = TrainResult(step=self.step, stopped_early=False)
        start, first_step, window = time.perf_counter(), self.step, []
        batches = self._loader() if self.step < target else iter(())
        try:
            while self.step < target:
                if any_across(bool(should_stop and should_stop()), self.dist, self.device):
                    result.stopped_early = True
                    log.info("stop requested at step %d", self.step)
                    break
                loss = self._train_step(batches)  # type: ignore[arg-type]
                result.losses.append(loss)
                window.append(loss)
                elapsed = time.perf_counter() - start
                eta = elapsed / (self.step - first_step) * (target - self.step)
                if callback is not None and self.dist.is_main:
                    callback(self.step, target, loss, eta)
                if self.step % self.config.log_every == 0 or self.step == target:
                    self._log(window, self._elapsed_before + elapsed)
                    window = []
                if self.step % self.config.checkpoint_every == 0:
                    result.checkpoint = self._save(self._elapsed_before + elapsed)
        finally:
            del batches  # shuts DataLoader workers down
        elapsed = time.perf_counter() - start
        if window:
            self._log(window, self._elapsed_before + elapsed)
        if self._saved_step != self.step:
            result.checkpoint = self._save(self._elapsed_before + elapsed)
        self._elapsed_before += elapsed
        barrier(self.dist)
        result.step, result.elapsed_s = self.step, elapsed
        return result

    def _log(self, window: List[float], time_s: float) -> None:
        loss = mean_across(sum(window) / len(window), self.dist, self.device)
        if not self.dist.is_main:
            return
        lr = float(self.optimizer.param_groups[0]["lr"])
        line = {"step": self.step, "loss": loss, "lr": lr, "time_s": round(time_s, 3)}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
        log.info("step %d  loss %.5f  lr %.3g  world_size %d", self.step, loss, lr, self.dist.world_size)
