"""Choosing the compute device and precision.

``auto`` prefers CUDA, then Apple's MPS, then the CPU, and says so when it falls back; an explicit request for a
device that is absent is an error rather than a silent CPU run that would take hours.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import ContextManager, Union

import torch

from .errors import InputError

PRECISIONS = ("fp32", "bf16")
#: Sampling also takes ``auto``: bf16 where the hardware runs it natively, fp32 elsewhere (see :func:`native_bf16`).
SAMPLING_PRECISIONS = ("auto", *PRECISIONS)


def resolve_device(name: Union[str, torch.device, None] = "auto") -> torch.device:
    """Map ``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` to an available :class:`torch.device`."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        warnings.warn("no GPU found: running on the CPU, which is much slower", RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                f"device {name!r} was requested but this torch build cannot use a CUDA GPU "
                f"(torch {torch.__version__}); install a CUDA build of torch or choose device 'cpu' or 'auto'"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"{name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
        return dev
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError("device 'mps' was requested but Apple's MPS backend is not available here")
        return torch.device("mps")
    raise InputError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs natively here: a CUDA GPU with bf16 support, or a CPU with AVX512-BF16 or AMX.

    Why it matters: on the 2-core AVX512-BF16 CPU of our benchmarks bf16 (with channels-last) sampled 2.4x faster
    than fp32 at matched quality (docs/benchmarks.md), but where bf16 is emulated it is slower than fp32.
    """
    if device.type == "cuda":
        # Not torch.cuda.is_bf16_supported(): it also says yes where bf16 is emulated (pre-Ampere GPUs).
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            probe = getattr(getattr(torch, "cpu", None), name, None)
            try:
                if probe is not None and probe():
                    return True
            except Exception:  # a private probe that misbehaves means "unknown": stay with fp32
                continue
    return False


def autocast_context(device: torch.device, precision: str, cache_enabled: bool = True) -> ContextManager[object]:
    """bf16 autocast for the network only; samplers keep their arithmetic in float32.

    ``cache_enabled=False`` turns off autocast's cache of bf16 weight copies, which CUDA graph capture requires.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type not in ("cuda", "cpu"):
        raise InputError(f"bf16 is supported on CUDA (and CPU), not on {device.type}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
