"""Runtime options change speed, not results: channels-last, torch.compile (and its fallback), CUDA graphs.

Real inductor compilation takes about a minute for the tiny preset on a 2-core CPU, so the compile path is
tested through torch.compile with the ``eager`` backend (dynamo traces the network, no C++ is built); set
``LUNGDDPM_TEST_INDUCTOR=1`` to run the real thing too. CUDA-graph tests run only where CUDA is available.
"""

from __future__ import annotations

import gc
import os
import warnings

import pytest
import torch

from LungDDPMLib.config import preset
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.errors import InputError, SamplingCancelled
from LungDDPMLib.sampling import RuntimeOptions, SamplerConfig, acceleration, prepared_denoiser, sample
from LungDDPMLib.sampling.acceleration import CudaGraphRunner, compiled_network
from LungDDPMLib.sampling.runtime import resolve_runtime

N = 16
CUDA = torch.cuda.is_available()


def make_model(seed: int = 0) -> DiffusionModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = DiffusionModel(preset("tiny"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # untrained output layers are zero; make the network say something
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m.eval()


@pytest.fixture(scope="module")
def model() -> DiffusionModel:
    return make_model()


def eps_inputs(model: DiffusionModel, batch: int, spatial: tuple, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, *spatial, generator=g)
    t = torch.randint(0, 250, (batch,), generator=g)
    cond = model.condition(torch.randint(0, 3, (batch, *spatial), generator=g))
    return x, t, cond


def run_eps(model: DiffusionModel, options: RuntimeOptions, inputs: tuple) -> torch.Tensor:
    with torch.no_grad(), prepared_denoiser(model, options) as eps:
        return eps(*inputs)


def all_contiguous(model: DiffusionModel) -> bool:
    return all(p.is_contiguous() for p in model.parameters())


@pytest.mark.parametrize("batch,spatial", [(1, (32, 32, 32)), (2, (16, 24, 32))])
def test_channels_last_network_output_equals_contiguous(model, batch, spatial) -> None:
    inputs = eps_inputs(model, batch, spatial)
    plain = run_eps(model, RuntimeOptions(), inputs)
    cl = run_eps(model, RuntimeOptions(channels_last=True), inputs)
    assert cl.is_contiguous() and cl.dtype == torch.float32
    # Only the summation order of the convolutions differs: float32 rounding, relative ~1e-5, and up to about
    # 1.1e-5 absolute on this machine's oneDNN kernels (seen at 1 of 24,576 voxels); a layout error would be O(1).
    torch.testing.assert_close(cl, plain, rtol=1e-5, atol=5e-5)
    assert all_contiguous(model)  # the weights were put back


def test_channels_last_sampling_matches_and_restores_the_model(model, layout, reference) -> None:
    cfg = SamplerConfig("dpm++", steps=3)
    plain = sample(model, layout, reference, sampler=cfg, seeds=[1, 2])
    cl = sample(model, layout, reference, sampler=cfg, seeds=[1, 2], runtime=RuntimeOptions(channels_last=True))
    assert torch.equal(cl[:, layout == 0], plain[:, layout == 0])  # AAS keeps the reference exactly
    # The first x0 estimate divides eps by sqrt(alphabar_249) ~ 2e-4, so rounding grows to ~1e-4 in the output.
    assert float((cl - plain).abs().max()) < 2e-3
    assert all_contiguous(model)
    with pytest.raises(SamplingCancelled):
        sample(model, layout, reference, sampler=cfg, runtime=RuntimeOptions(channels_last=True), should_stop=lambda: 1)
    assert all_contiguous(model)  # also after a cancel


def test_channels_last_leaves_an_already_converted_model_alone(layout, reference) -> None:
    m = make_model(3).to(memory_format=torch.channels_last_3d)
    sample(m, layout, reference, sampler=SamplerConfig("ddim", steps=2), runtime=RuntimeOptions(channels_last=True))
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in m.parameters() if p.dim() == 5)


@pytest.fixture
def eager_backend_compile(monkeypatch):
    """torch.compile through dynamo with the ``eager`` backend: the real tracing, none of the C++ build."""
    calls = []
    real = torch.compile

    def fake(net, mode=None, dynamic=None):
        calls.append(mode)
        return real(net, backend="eager", dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", fake)
    return calls


def test_compile_path_matches_eager_and_compiles_once_per_model(layout, reference, eager_backend_compile) -> None:
    m = make_model(1)
    cfg = SamplerConfig("dpm++", steps=3)
    eager = sample(m, layout, reference, sampler=cfg, seeds=[4])
    compiled = sample(m, layout, reference, sampler=cfg, seeds=[4], runtime=RuntimeOptions(compile=True))
    again = sample(m, layout, reference, sampler=cfg, seeds=[5], runtime=RuntimeOptions(compile=True))
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-4)
    assert again.shape == compiled.shape
    assert eager_backend_compile == ["default"]  # one torch.compile for both calls: the wrapper is cached
    assert compiled_network(m, "default").failure is None


def test_compile_failure_falls_back_to_eager_with_one_warning(layout, reference, monkeypatch) -> None:
    m = make_model(2)
    attempts = []

    def broken(net, mode=None, dynamic=None):
        def run(*args):
            attempts.append(1)
            raise RuntimeError("InductorError: no working C++ compiler found\nlong traceback")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    cfg = SamplerConfig("ddim", steps=3)
    eager = sample(m, layout, reference, sampler=cfg)
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*no working C\\+\\+ compiler"):
        out = sample(m, layout, reference, sampler=cfg, runtime=RuntimeOptions(compile=True))
    assert torch.equal(out, eager)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, no second attempt
        sample(m, layout, reference, sampler=cfg, runtime=RuntimeOptions(compile=True))
    assert len(attempts) == 1


def test_out_of_memory_is_not_mistaken_for_a_compiler_failure(monkeypatch) -> None:
    m = make_model(4)

    def oom(net, mode=None, dynamic=None):
        def run(*args):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

        return run

    monkeypatch.setattr(torch, "compile", oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_eps(m, RuntimeOptions(compile=True), eps_inputs(m, 1, (16, 16, 16)))
    assert compiled_network(m, "default").failure is None


@pytest.mark.skipif(os.environ.get("LUNGDDPM_TEST_INDUCTOR") != "1", reason="about a minute: LUNGDDPM_TEST_INDUCTOR=1")
def test_inductor_compile_matches_eager() -> None:
    m = make_model(5)
    inputs = eps_inputs(m, 1, (16, 16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would hide that inductor failed
        compiled = run_eps(m, RuntimeOptions(compile=True), inputs)
    torch.testing.assert_close(compiled, run_eps(m, RuntimeOptions(), inputs), rtol=1e-4, atol=1e-4)


def test_compiled_networks_are_dropped_with_their_model() -> None:
    m = make_model(6)
    before = len(acceleration._CACHE)
    compiled_network(m, "default")
    assert len(acceleration._CACHE) == before + 1
    del m
    gc.collect()
    assert len(acceleration._CACHE) == before


@pytest.mark.skipif(CUDA, reason="checks the CPU refusal")
def test_cuda_graphs_on_cpu_is_a_clear_error(model, layout, reference) -> None:
    with pytest.raises(InputError, match="cuda_graphs needs a CUDA device"):
        sample(model, layout, reference, runtime=RuntimeOptions(cuda_graphs=True))
    with pytest.raises(InputError, match="cuda_graphs needs a CUDA device"):
        run_eps(model, RuntimeOptions(compile=True, cuda_graphs=True), eps_inputs(model, 1, (16, 16, 16)))
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        CudaGraphRunner(lambda inp, t: inp, torch.device("cpu"))


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graphs_replay_matches_eager(precision) -> None:
    m = make_model(7).cuda()
    inputs = [tuple(a.cuda() for a in eps_inputs(m, 2, (16, 16, 16), seed=s)) for s in (0, 1)]
    graphed = RuntimeOptions(precision=precision, cuda_graphs=True)
    with torch.no_grad(), prepared_denoiser(m, graphed) as eps:
        outs = [eps(*a) for a in inputs]  # the second call replays the graph on new inputs
    for a, out in zip(inputs, outs):
        torch.testing.assert_close(out, run_eps(m, RuntimeOptions(precision=precision), a), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"precision": "fp16"}, "unknown precision 'fp16'"),
        ({"channels_last": 1}, "channels_last must be true or false"),
        ({"compile": "yes"}, "compile must be true or false"),
        ({"cuda_graphs": None}, "cuda_graphs must be true or false"),
        ({"compile_mode": "turbo"}, "unknown compile_mode 'turbo'"),
    ],
)
def test_option_validation(kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        RuntimeOptions(**kwargs)


def test_precision_keyword_and_runtime_agree_or_fail(model, layout, reference) -> None:
    assert resolve_runtime(None, None) == RuntimeOptions()
    assert resolve_runtime(None, "bf16") == RuntimeOptions(precision="bf16")
    assert resolve_runtime(RuntimeOptions(precision="bf16"), "bf16").precision == "bf16"
    with pytest.raises(InputError, match=r"contradicts runtime\.precision"):
        sample(model, layout, reference, precision="fp32", runtime=RuntimeOptions(precision="bf16"))
    with pytest.raises(InputError, match="must be a RuntimeOptions"):
        sample(model, layout, reference, runtime={"compile": True})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs,mode",
    [
        ({}, "default"),
        ({"cuda_graphs": True}, "reduce-overhead"),
        ({"compile_mode": "max-autotune"}, "max-autotune-no-cudagraphs"),
        ({"compile_mode": "max-autotune", "cuda_graphs": True}, "max-autotune"),
    ],
)
def test_torch_compile_mode(kwargs, mode) -> None:
    assert RuntimeOptions(compile=True, **kwargs).torch_compile_mode == mode


def test_options_round_trip_through_a_dict() -> None:
    opts = RuntimeOptions(precision="bf16", channels_last=True, compile=True, compile_mode="max-autotune")
    assert RuntimeOptions(**opts.to_dict()) == opts


def test_auto_precision_is_bf16_with_channels_last_only_where_bf16_is_native(monkeypatch) -> None:
    from LungDDPMLib.sampling import runtime as rt

    cpu = torch.device("cpu")
    monkeypatch.setattr(rt, "native_bf16", lambda device: True)
    fast = RuntimeOptions(precision="auto").resolved(cpu)
    assert (fast.precision, fast.channels_last) == ("bf16", True)
    monkeypatch.setattr(rt, "native_bf16", lambda device: False)
    assert RuntimeOptions(precision="auto").resolved(cpu) == RuntimeOptions(precision="fp32")
    explicit = RuntimeOptions(precision="fp32")
    assert explicit.resolved(cpu) is explicit  # an explicit choice is never overridden


def test_auto_precision_samples_like_the_resolved_setting(model, layout, reference, monkeypatch) -> None:
    from LungDDPMLib.sampling import runtime as rt

    monkeypatch.setattr(rt, "native_bf16", lambda device: False)
    kw = {"sampler": SamplerConfig("ddim", steps=2), "seeds": [1]}
    auto = sample(model, layout, reference, precision="auto", **kw)
    assert torch.equal(auto, sample(model, layout, reference, precision="fp32", **kw))
