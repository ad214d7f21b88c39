"""Multi-process training with ``torch.distributed``: start-up from torchrun's environment, and small collectives.

``torchrun --nproc-per-node N -m LungDDPMLib.training ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` reads them, picks NCCL on CUDA and Gloo on the CPU, and
returns a :class:`DistInfo` that the trainer uses to shard data, average gradients (DDP) and let only rank 0
write files. Without those variables everything degrades to a single process and no process group is made.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.distributed as dist

from ..device import resolve_device
from ..errors import InputError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints and logs, so files are never written twice."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def current(cls) -> DistInfo:
        """The running process group, if one was made (by us or by the caller), else a single process."""
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank()
            return cls(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)), dist.get_backend())
        return cls()


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise InputError(
            f"environment variable {name}={value!r} is not an integer (is this run under torchrun?)"
        ) from None


def launched_by_torchrun() -> bool:
    """True when the torchrun variables describe more than one process."""
    return "WORLD_SIZE" in os.environ and _env_int("WORLD_SIZE") > 1


def init_from_env(device: Union[str, torch.device, None] = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    Args:
        device: the device the run will use; CUDA selects NCCL (and ``cuda:LOCAL_RANK``), anything else Gloo.
        timeout_s: how long collectives wait for a missing process before failing.
    Returns:
        a single-process :class:`DistInfo` when ``WORLD_SIZE`` is absent or 1, else this process's place.
    Raises:
        InputError: the variables are incomplete or inconsistent.
    """
    if not launched_by_torchrun():
        return DistInfo()
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise InputError(f"distributed run is missing environment variables {missing}; start it with torchrun")
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    if not 0 <= rank < world or local < 0:
        raise InputError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    if dist.is_initialized():
        return DistInfo.current()
    dev = device_for(device, DistInfo(rank, world, local))
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local, backend)


def device_for(device: Union[str, torch.device, None], info: DistInfo) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` when a distributed run uses CUDA, else as requested."""
    if info.is_distributed and (device is None or str(device) in ("auto", "cuda")):
        if torch.cuda.is_available():
            return torch.device("cuda", info.local_rank)
        return torch.device("cpu")
    return resolve_device(device)


def barrier(info: DistInfo) -> None:
    if info.is_distributed and dist.is_initialized():
        dist.barrier()


def mean_across(value: float, info: DistInfo, device: torch.device) -> float:
    """Average a number over all processes (every process must call this at the same point)."""
    if not info.is_distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / info.world_size


def any_across(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every process if it is true on any (so a stop request on one process stops all together)."""
    if not info.is_distributed:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def shutdown(info: Optional[DistInfo] = None) -> None:
    """Wait for every process, then leave the process group (safe to call when none was made)."""
    if dist.is_available() and dist.is_initialized():
        if info is None or info.is_distributed:
            dist.barrier()
        dist.destroy_process_group()
