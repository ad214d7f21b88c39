"""Two ways to cut the network's overhead: ``torch.compile`` (with an eager fallback) and CUDA graph replay.

Both are opt-in (see :class:`~LungDDPMLib.sampling.runtime.RuntimeOptions`). Compiling takes from seconds (GPU)
to minutes (a small CPU), so a compiled network is kept per model and mode and reused by later sampling calls;
torch.compile itself keeps one specialisation per input shape (``dynamic=False``: fixed shapes compile to the
fastest code, and a sampling call has at most two shapes, the full batch and the remainder).
"""

from __future__ import annotations

import warnings
import weakref
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

Network = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Errors that are no compiler's fault: running eagerly would fail the same way, only later.
_NOT_COMPILE_ERRORS: Tuple[type, ...] = tuple(
    e for e in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if e
)


class CompiledNetwork:
    """``torch.compile`` of one UNet, created on first use; if compiling fails, eager from then on.

    A failure is reported once as a ``RuntimeWarning`` naming the cause (for example no C++ compiler, or a
    Python version that torch.compile does not support), and the call that failed is answered eagerly.
    """

    def __init__(self, net: nn.Module, mode: str) -> None:
        self.net = net
        self.mode = mode
        self.compiled: Optional[Callable[..., torch.Tensor]] = None
        self.failure: Optional[str] = None
        self.cudagraphs = mode in ("reduce-overhead", "max-autotune")

    def __call__(self, inp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.failure is None:
            try:
                if self.compiled is None:
                    self.compiled = torch.compile(self.net, mode=self.mode, dynamic=False)
                mark_step = getattr(torch.compiler, "cudagraph_mark_step_begin", None)  # torch >= 2.2
                if self.cudagraphs and mark_step is not None:  # the previous outputs may now be overwritten
                    mark_step()
                return self.compiled(inp, t)
            except _NOT_COMPILE_ERRORS:
                raise
            except Exception as exc:  # any compiler failure: the network itself is fine, run it eagerly
                lines = str(exc).strip().splitlines()
                self.failure = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
                warnings.warn(
                    f"torch.compile failed ({self.failure}); running the network without compiling",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return self.net(inp, t)


# Keyed by the DiffusionModel, whose child UNet the compiled network holds: the value does not reference the key,
# so a model that is dropped takes its compiled code with it.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_network(model: nn.Module, mode: str) -> CompiledNetwork:
    """The cached compiled UNet (``model.denoise_fn``) of ``model`` for a ``torch.compile`` mode."""
    per_model: Dict[str, CompiledNetwork] = _CACHE.setdefault(model, {})
    if mode not in per_model:
        per_model[mode] = CompiledNetwork(model.denoise_fn, mode)
    return per_model[mode]


class CudaGraphRunner:
    """Record ``fn`` once per input shape as a CUDA graph, then replay it on copies of new inputs.

    The network's hundreds of small kernel launches become one replay, which matters at small grids where a GPU
    waits on the CPU. Inputs are copied into static buffers and the output buffer is overwritten by the next
    replay, so callers copy it (``prepared_denoiser`` does). Graphs live as long as this object: one sampling call.
    """

    WARMUP_CALLS = 3  # lets cuDNN/cuBLAS choose algorithms and allocate workspaces before recording

    def __init__(self, fn: Network, device: torch.device) -> None:
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        self.fn = fn
        self.device = device
        self.graphs: Dict[tuple, Tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, inp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        key = (tuple(inp.shape), inp.stride(), inp.dtype, tuple(t.shape), t.dtype)
        if key not in self.graphs:
            self.graphs[key] = self._record(inp, t)
        graph, static_inp, static_t, static_out = self.graphs[key]
        static_inp.copy_(inp)
        static_t.copy_(t)
        graph.replay()
        return static_out

    def _record(self, inp: torch.Tensor, t: torch.Tensor) -> tuple:
        static_inp = inp.clone(memory_format=torch.preserve_format)
        static_t = t.clone()
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_CALLS):
                self.fn(static_inp, static_t)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(static_inp, static_t)
        return graph, static_inp, static_t, static_out
