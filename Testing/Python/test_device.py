"""Device and precision selection: explicit requests that cannot be met are errors, auto falls back loudly."""

from __future__ import annotations

import pytest
import torch

from LungDDPMLib.device import autocast_context, resolve_device
from LungDDPMLib.errors import InputError


def test_cpu_and_torch_device_objects() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_auto_falls_back_to_cpu_with_a_warning_and_cuda_request_is_an_error() -> None:
    with pytest.warns(RuntimeWarning, match="no GPU found"):
        assert resolve_device("auto").type in ("cpu", "mps")
    with pytest.raises(InputError, match="cannot use a CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="cannot use a CUDA GPU"):
        resolve_device("cuda:1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_prefers_cuda() -> None:
    assert resolve_device("auto").type == "cuda"
    with pytest.raises(InputError, match="does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_unknown_device_and_precision() -> None:
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(InputError, match="unknown precision"):
        autocast_context(torch.device("cpu"), "fp16")


def test_bf16_autocast_runs_matmuls_in_bf16() -> None:
    a = torch.randn(4, 4)
    with autocast_context(torch.device("cpu"), "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast_context(torch.device("cpu"), "fp32"):
        assert (a @ a).dtype == torch.float32
