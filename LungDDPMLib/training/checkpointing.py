"""Checkpoints of a training run: what an exact resume needs, atomic saving, resuming, and what a divergence says.

Kept apart from the loop (:mod:`.trainer`): :class:`Trainer` takes these methods from :class:`CheckpointMixin`,
which works on the trainer's model, EMA, optimiser, data position and run folder.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch.utils.data import Dataset

from .. import __version__
from ..checkpoint import check_finite, check_state_dict, first_non_finite, read_checkpoint_file, save_checkpoint
from ..config import ModelConfig
from ..diffusion import DiffusionModel
from ..errors import CheckpointError, LungDDPMError
from .config import TrainConfig
from .datasets import StreamSampler, dataset_augmentation
from .distributed import DistInfo
from .ema import EMA

log = logging.getLogger("LungDDPMLib.training")
TRAINER_STATE_VERSION = 1


class TrainingDiverged(LungDDPMError, FloatingPointError):
    """The loss or the weights became NaN/inf. Nothing non-finite was saved; the message names the last good file."""


def _saved_augmentation(data: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The flips a checkpoint's run applied (its provenance's ``augmentation``), None where it does not say."""
    try:
        provenance = json.loads(str(data.get("provenance", "{}")))
    except ValueError:
        return None
    found = provenance.get("augmentation") if isinstance(provenance, dict) else None
    return found if isinstance(found, dict) else None


class CheckpointMixin:
    """Saving and resuming for :class:`~LungDDPMLib.training.Trainer` (the attributes below are the trainer's)."""

    config: TrainConfig
    dataset: Dataset
    dist: DistInfo
    device: torch.device
    run_dir: Path
    model: DiffusionModel
    ema: EMA
    optimizer: torch.optim.Optimizer
    step: int
    samples_seen: int
    _noise_gen: torch.Generator
    _elapsed_before: float
    _saved_step: int
    _last_finite: Optional[Tuple[Path, int, Optional[Path]]]

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "loss.jsonl"

    def _trainer_state(self, elapsed_s: float) -> Dict[str, Any]:
        """Everything beyond the weights that an exact resume needs; only weights_only-loadable types."""
        sampler = StreamSampler(len(self.dataset), self.config.seed, world_size=self.dist.world_size)  # type: ignore
        epoch, offset = sampler.position(self.samples_seen)
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
        return {
            "version": TRAINER_STATE_VERSION,
            "train_config": self.config.to_json(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict(),
            "data": {
                "seed": self.config.seed,
                "samples_seen": self.samples_seen,
                "epoch": epoch,
                "offset": offset,
                "dataset_size": len(self.dataset),
            },  # type: ignore[arg-type]
            # The loop draws nothing from these (it re-seeds per step); kept so a run can be audited.
            "rng": {
                "scheme": "derived-per-step",
                "torch_cpu": torch.get_rng_state(),
                "cuda": cuda,
                "noise_generator": self._noise_gen.get_state(),
            },
            "world_size": self.dist.world_size,
            "elapsed_s": float(elapsed_s),
        }

    def _advice(self) -> str:
        """Where to go on after a divergence: never a file with NaN weights (none is ever written)."""
        if self._last_finite is None:
            return (
                "no checkpoint of this run holds finite weights yet; start again with a lower lr (--lr) or a "
                "gradient clip (--grad-clip)"
            )
        path, step, copy_ = self._last_finite
        also = f"; the same weights are in {copy_}" if copy_ is not None else ""
        return (
            f"lower lr (--lr) or set a gradient clip (--grad-clip), then resume from {path} (step {step}, the last "
            f"checkpoint with finite weights{also})"
        )

    def _save(self, elapsed_s: float) -> Path:
        path = self.run_dir / "checkpoints" / f"step-{self.step:07d}.pt"
        for label, module in (("model", self.model), ("EMA", self.ema.model)):
            bad = first_non_finite(module.state_dict())
            if bad is not None:  # checked on every rank: the weights are the same everywhere
                raise TrainingDiverged(
                    f"the {label} weights became non-finite (NaN or inf in '{bad}') by step {self.step}; they were "
                    f"not saved; {self._advice()}"
                )
        if self.dist.is_main:
            provenance = {
                "kind": "lungddpm-training",
                "train_config": self.config.to_dict(),
                "world_size": self.dist.world_size,
                "dataset_size": len(self.dataset),  # type: ignore[arg-type]
                "augmentation": dataset_augmentation(self.dataset),
                "device": self.device.type,
                "lungddpm_version": __version__,
                "torch_version": torch.__version__,
            }
            extra = {"trainer": self._trainer_state(elapsed_s)}
            save_checkpoint(path, self.model, ema=self.ema.model, step=self.step, provenance=provenance, extra=extra)
            save_checkpoint(
                self.last_path, self.model, ema=self.ema.model, step=self.step, provenance=provenance, extra=extra
            )
            log.info("saved %s", path)
        self._saved_step = self.step
        self._last_finite = (self.last_path, self.step, path)
        return path

    def resume(self, source: Union[str, Path, None] = None) -> int:
        """Restore weights, EMA, optimiser, update count and data position; returns the step reached.

        Args:
            source: a checkpoint file or run folder (default: this run's ``last.pt``).
        Raises:
            CheckpointError: nothing to resume from, not a training checkpoint, or another architecture.
        """
        path = Path(source) if source is not None else self.last_path
        if path.is_dir():
            path = path / "last.pt"
        if not path.is_file():
            raise CheckpointError(f"no checkpoint to resume from: {path} does not exist")
        data = read_checkpoint_file(path)
        state = data.get("trainer")
        if data.get("format") != "lungddpm" or not isinstance(state, dict) or "optimizer" not in state:
            raise CheckpointError(f"{path} is not a LungDDPM training checkpoint (it has no trainer state)")
        try:
            saved_cfg = ModelConfig.from_json(str(data["config"]), trained_here=True)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path} has a damaged configuration record: {exc}") from None
        mine, theirs = self.model.config.to_dict(), saved_cfg.to_dict()
        diff = sorted(k for k in mine if k != "preset" and mine[k] != theirs.get(k))
        if diff:
            raise CheckpointError(f"{path} was trained with another model configuration (differs in {diff})")
        for name in ("model", "ema"):
            check_state_dict(self.model, data[name], f"{path} ({name})")
        check_finite([("model", data["model"]), ("ema", data["ema"])], str(path))
        self.model.load_state_dict(data["model"])
        self.ema.model.load_state_dict(data["ema"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: optimiser state does not fit ({exc})") from None
        for group in self.optimizer.param_groups:  # the saved groups carry the old lr: a changed --lr must apply
            group.update(lr=self.config.lr, betas=tuple(self.config.betas), weight_decay=self.config.weight_decay)
        self.ema.load_state_dict(state.get("ema", {}))
        self.step = int(data["step"])
        self.samples_seen = int(state["data"]["samples_seen"])
        self._elapsed_before = float(state.get("elapsed_s", 0.0))
        self._saved_step = self.step
        self._last_finite = (path, self.step, None)
        saved = TrainConfig.from_json(str(state["train_config"]))
        self._warn_changes(saved, int(state.get("world_size", 1)), _saved_augmentation(data))
        if self.dist.is_main:
            self._truncate_log()
        log.info("resumed %s at step %d", path, self.step)
        return self.step

    def _warn_changes(self, saved: TrainConfig, world_size: int, augmentation: Optional[Dict[str, Any]]) -> None:
        harmless = {"max_steps", "checkpoint_every", "log_every", "num_workers"}
        changed = {k: v for k, v in saved.differences(self.config).items() if k not in harmless}
        now = dataset_augmentation(self.dataset)
        if augmentation is not None and augmentation != now:  # files written before it was recorded say nothing
            changed["augmentation"] = (augmentation, now)
        if changed:
            warnings.warn(
                f"resuming with changed training settings {changed} (saved, now)", RuntimeWarning, stacklevel=3
            )
        if world_size != self.dist.world_size:
            warnings.warn(
                f"resuming a run of {world_size} processes with {self.dist.world_size}: the data order "
                "and the global batch change",
                RuntimeWarning,
                stacklevel=3,
            )

    def _truncate_log(self) -> None:
        """Drop log lines written after the checkpoint (a crashed run may have logged further)."""
        if not self.log_path.is_file():
            return
        kept = []
        for text in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(text)["step"]) <= self.step:
                    kept.append(text)
            except (ValueError, KeyError, TypeError):
                continue
        self.log_path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
