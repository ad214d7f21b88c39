"""The UNet: published architecture, shapes across presets and sizes, attention equivalence, numerics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from LungDDPMLib.config import UNetConfig, preset
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.model import UNet3D, count_parameters
from LungDDPMLib.model.attention import AttentionBlock, reference_attention, sdpa_attention
from LungDDPMLib.model.layers import GroupNorm32, timestep_embedding

DATA = Path(__file__).resolve().parents[1] / "Data"


def published_shapes() -> dict:
    return json.loads((DATA / "lung_ddpm_state_dict_shapes.json").read_text())["keys"]


def test_lung_ddpm_preset_has_published_parameter_count() -> None:
    assert count_parameters(UNet3D(preset("lung-ddpm").unet)) == 40_226_433


def test_lung_ddpm_plus_preset_has_reported_size() -> None:
    # The Lung-DDPM+ paper reports 39.05 M parameters.
    assert round(count_parameters(UNet3D(preset("lung-ddpm-plus").unet)) / 1e6, 2) == 39.05


def test_state_dict_keys_and_shapes_equal_published_checkpoint() -> None:
    ours = {k: list(v.shape) for k, v in DiffusionModel(preset("lung-ddpm")).state_dict().items()}
    assert ours == published_shapes()


@pytest.mark.parametrize("name", ["tiny", "small"])
@pytest.mark.parametrize("spatial", [(16, 16, 16), (16, 32, 24), (32, 16, 8)])
def test_forward_shapes_over_presets_and_anisotropic_sizes(name: str, spatial: tuple) -> None:
    cfg = preset(name).unet
    factor = cfg.downsample_factor
    spatial = tuple(max(s, factor) // factor * factor for s in spatial)
    net = UNet3D(cfg).eval()
    x = torch.randn(2, cfg.in_channels, *spatial)
    out = net(x, torch.tensor([0, 249]))
    assert out.shape == (2, 1, *spatial)
    assert torch.isfinite(out).all()


def test_output_layer_starts_at_zero_so_untrained_model_predicts_zero_noise() -> None:
    net = UNet3D(preset("tiny").unet)
    out = net(torch.randn(1, 3, 16, 16, 16), torch.tensor([100]))
    assert torch.count_nonzero(out) == 0


def test_timestep_embedding_is_cos_then_sin_with_period_1000() -> None:
    t = torch.tensor([0.0, 7.0, 249.0])
    emb = timestep_embedding(t, 64, max_period=1000.0)
    k = torch.arange(32, dtype=torch.float32)
    freqs = torch.exp(-math.log(1000.0) * k / 32)
    torch.testing.assert_close(emb[:, :32], torch.cos(t[:, None] * freqs))
    torch.testing.assert_close(emb[:, 32:], torch.sin(t[:, None] * freqs))
    assert not torch.allclose(emb, timestep_embedding(t, 64, max_period=10000.0))


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_sdpa_attention_equals_published_formulation(heads: int) -> None:
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 3 * 32, 5 * 6 * 7, generator=g)
    torch.testing.assert_close(sdpa_attention(qkv, heads), reference_attention(qkv, heads), rtol=1e-5, atol=1e-5)


def test_attention_block_backends_agree_on_trained_like_weights() -> None:
    block = AttentionBlock(64, num_heads=1)
    with torch.no_grad():  # proj_out starts at zero; give it weights so the attention path matters
        block.proj_out.weight.normal_(0, 0.2)
    x = torch.randn(1, 64, 4, 4, 4)
    fast = block(x)
    block.use_sdpa = False
    torch.testing.assert_close(fast, block(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fast, x)


def test_whole_network_backends_agree() -> None:
    torch.manual_seed(0)
    net = UNet3D(preset("tiny").unet).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x, t = torch.randn(1, 3, 16, 16, 16), torch.tensor([42])
    fast = net(x, t)
    net.set_attention_backend(use_sdpa=False)
    torch.testing.assert_close(fast, net(x, t), rtol=1e-5, atol=1e-5)


def test_groupnorm_computes_in_float32_and_returns_input_dtype() -> None:
    norm = GroupNorm32(4, 8)
    x = torch.randn(1, 8, 4, 4, 4) * 100 + 1000
    y16 = norm(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), norm(x.to(torch.bfloat16).float()).to(torch.bfloat16).float())


def test_bad_configuration_is_rejected_with_named_value() -> None:
    with pytest.raises(ValueError, match="attention_levels"):
        UNetConfig(channel_mult=(1, 2), attention_levels=(5,))
    with pytest.raises(ValueError, match="layout_channels"):
        UNetConfig(layout_channels=("lung", "heart"))


def test_published_key_layout_survives_nesting_in_a_wrapper() -> None:
    """DDP and other wrappers recurse through hooks, not through an overridden state_dict()."""
    inner = DiffusionModel(preset("tiny"))
    wrapper = torch.nn.ModuleDict({"module": inner})
    keys = set(wrapper.state_dict())
    assert "module.betas" in keys and not any(".schedule." in k for k in keys)
    other = torch.nn.ModuleDict({"module": DiffusionModel(preset("tiny"))})
    other.load_state_dict(wrapper.state_dict(), strict=True)


def test_loss_needs_a_seeded_source_of_randomness() -> None:
    model = DiffusionModel(preset("tiny"))
    x0 = torch.zeros(1, 1, 16, 16, 16)
    cond = model.condition(torch.zeros(1, 16, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="generator="):
        model.loss(x0, cond)
    a = model.loss(x0, cond, generator=torch.Generator().manual_seed(3))
    b = model.loss(x0, cond, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    t, noise = torch.tensor([7]), torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    # The untrained network predicts zero noise, so the L1 loss is the mean |noise|.
    torch.testing.assert_close(model.loss(x0, cond, t=t, noise=noise), noise.abs().mean())
    with pytest.raises(ValueError, match="unknown loss"):
        model.loss(x0, cond, t=t, noise=noise, kind="huber")
