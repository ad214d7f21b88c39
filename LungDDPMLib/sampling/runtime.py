"""How the denoiser runs: precision, memory layout, compilation and CUDA graphs.

These options change speed, not the method: each one evaluates the same network (bf16 to its own precision,
the others to float rounding), so they live apart from :class:`~LungDDPMLib.sampling.SamplerConfig`, whose
settings change the samples. :func:`prepared_denoiser` applies them for the duration of one sampling call and
undoes what it changed on the model (the weights' memory layout), so a model never changes as a side effect.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional

import torch
from torch import nn

from ..device import SAMPLING_PRECISIONS, autocast_context, native_bf16
from ..diffusion import DiffusionModel
from ..errors import InputError
from .acceleration import CudaGraphRunner, compiled_network

#: ``default`` compiles quickly; ``max-autotune`` benchmarks kernel choices while compiling (minutes on a GPU).
COMPILE_MODES = ("default", "max-autotune")

#: ``eps(x_t, t, cond) -> eps`` in float32 and contiguous, whatever the options.
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RuntimeOptions:
    """Speed settings for the network; none of them changes which sample a seed gives (beyond rounding).

    Attributes:
        precision: ``fp32``, ``bf16`` (autocast for the network only; solver arithmetic stays float32) or ``auto``:
            bf16 with ``channels_last`` where the device runs bf16 natively, else fp32 (see :meth:`resolved`).
        channels_last: run the UNet in ``torch.channels_last_3d`` (weights and activations channel-innermost),
            which some convolution kernels (cuDNN, oneDNN) run faster.
        compile: ``torch.compile`` the UNet, once per model and input shape; if compiling fails (no compiler,
            unsupported platform) the network runs eagerly after one warning.
        compile_mode: ``default`` or ``max-autotune`` (see :data:`COMPILE_MODES`).
        cuda_graphs: record the network's kernels once per input shape and replay them, which removes the
            per-kernel launch cost (CUDA only; with ``compile`` it is torch.compile's ``reduce-overhead``).
    Example:
        >>> RuntimeOptions(precision="bf16", channels_last=True).to_dict()["channels_last"]
        True
    """

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        if self.precision not in SAMPLING_PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; use one of {', '.join(SAMPLING_PRECISIONS)}")
        for name in ("channels_last", "compile", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise InputError(f"unknown compile_mode {self.compile_mode!r}; use one of {', '.join(COMPILE_MODES)}")

    def resolved(self, device: torch.device) -> RuntimeOptions:
        """``auto`` made concrete for ``device``: the fastest setting that kept quality in our benchmarks.

        bf16 + channels-last where bf16 is native (its samples stayed within 6 HU RMS of fp32 and matched its FID),
        fp32 elsewhere. Explicit ``fp32``/``bf16`` are returned unchanged.
        """
        if self.precision != "auto":
            return self
        if native_bf16(device):
            return dataclasses.replace(self, precision="bf16", channels_last=True)
        return dataclasses.replace(self, precision="fp32")

    def check_device(self, device: torch.device) -> None:
        """Reject options the device cannot honour, before any work is done."""
        if self.cuda_graphs and device.type != "cuda":
            raise InputError(f"cuda_graphs needs a CUDA device (the model is on {device.type}); drop the option")

    @property
    def torch_compile_mode(self) -> str:
        """The ``mode`` passed to ``torch.compile``; the CUDA-graph variants when ``cuda_graphs`` is on."""
        if self.compile_mode == "max-autotune":
            return "max-autotune" if self.cuda_graphs else "max-autotune-no-cudagraphs"
        return "reduce-overhead" if self.cuda_graphs else "default"

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_runtime(runtime: Optional[RuntimeOptions], precision: Optional[str]) -> RuntimeOptions:
    """Combine the ``runtime`` options with the older ``precision`` keyword, which callers still pass alone."""
    if runtime is None:
        return RuntimeOptions(precision=precision or "fp32")
    if not isinstance(runtime, RuntimeOptions):
        raise InputError(f"runtime must be a RuntimeOptions, got {type(runtime).__name__}")
    if precision is not None and precision != runtime.precision:
        raise InputError(f"precision {precision!r} contradicts runtime.precision {runtime.precision!r}; give one")
    return runtime


@contextlib.contextmanager
def _weights_in_format(net: nn.Module, channels_last: bool) -> Iterator[None]:
    """Hold the 5-D weights in ``channels_last_3d`` while sampling and put them back afterwards."""
    cl = torch.channels_last_3d
    weights = [p for p in net.parameters() if p.dim() == 5]
    if not channels_last or all(p.is_contiguous(memory_format=cl) for p in weights):
        yield
        return
    net.to(memory_format=cl)
    try:
        yield
    finally:
        net.to(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def prepared_denoiser(model: DiffusionModel, options: RuntimeOptions) -> Iterator[Denoiser]:
    """The model's epsilon predictor under ``options``, valid inside the ``with`` block.

    Args:
        model: the diffusion model, already on its device (it is not moved).
        options: speed settings; checked against the model's device first.
    Yields:
        ``eps(x_t, t, cond)`` returning float32, contiguous, freshly allocated tensors (safe to keep across
        calls, which matters when CUDA graphs reuse their output buffers).
    Raises:
        InputError: an option the device cannot honour (``cuda_graphs`` off CUDA, ``bf16`` on MPS).
    Example:
        >>> from LungDDPMLib.config import preset
        >>> m = DiffusionModel(preset("tiny")).eval()
        >>> cond = m.condition(torch.zeros(1, 16, 16, 16, dtype=torch.long))
        >>> with torch.no_grad(), prepared_denoiser(m, RuntimeOptions(channels_last=True)) as eps:
        ...     eps(torch.zeros(1, 1, 16, 16, 16), torch.tensor([3]), cond).is_contiguous()
        True
    """
    device = next(model.parameters()).device
    options.check_device(device)
    options = options.resolved(device)
    # Autocast's weight cache must be off while CUDA graphs record, or replays would read freed casts.
    autocast = autocast_context(device, options.precision, cache_enabled=not options.cuda_graphs)
    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = model.denoise_fn
    if options.compile:
        net = compiled_network(model, options.torch_compile_mode)
    fmt = torch.channels_last_3d if options.channels_last else torch.contiguous_format

    def run(inp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with autocast:
            return net(inp, t).float()

    if options.cuda_graphs and not options.compile:
        run = CudaGraphRunner(run, device)

    def eps(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = run(model.network_input(x, cond).contiguous(memory_format=fmt), t)
        # Graph replays overwrite their output buffer; everything else may return a view of the input's layout.
        return out.clone(memory_format=torch.contiguous_format) if options.cuda_graphs else out.contiguous()

    with _weights_in_format(model.denoise_fn, options.channels_last):
        yield eps
