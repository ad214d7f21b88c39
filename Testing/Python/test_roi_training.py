"""Training data for native-resolution nodule models (``roi`` mode) matches what synthesis feeds them.

Each item must be a block of the real volume at its own spacing, around one of its nodules, normalised the way
synthesis normalises a patch; the check below finds the block in the phantom by brute force instead of trusting
the dataset's own bookkeeping.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDDPMLib.checkpoint import load_checkpoint
from LungDDPMLib.config import TYPED_LAYOUT_CHANNELS, ModelConfig, UNetConfig, is_nodule
from LungDDPMLib.data.datasets import PhantomDataset, model_data_options
from LungDDPMLib.data.pipeline import model_options, preprocess
from LungDDPMLib.errors import InputError
from LungDDPMLib.phantom import NoduleSpec, make_phantom
from LungDDPMLib.training import TrainConfig, Trainer, seeded_model
from LungDDPMLib.training.loss import LossModule, nodule_weight_map

SIZE, SPACING = (64, 64, 40), (2.0, 2.0, 3.0)
SPECS = [NoduleSpec(10.0, "ground-glass", "round", side="left"), NoduleSpec(8.0, "solid", "round", side="right")]


def roi_config(**kw) -> ModelConfig:
    unet = UNetConfig(model_channels=8, channel_mult=(1, 2), attention_levels=(), layout_channels=TYPED_LAYOUT_CHANNELS)
    base = ModelConfig(
        unet=unet,
        grid=(8, 16, 16),
        normalization="hu-window",
        spatial_mode="roi",
        nodule_types=("solid", "part-solid", "ground-glass"),
    )
    return dataclasses.replace(base, **kw)


def find_block(volume: np.ndarray, block: np.ndarray) -> list:
    """Every start (z, y, x) where ``block`` equals a block of ``volume`` (outside the volume counts as 0)."""
    pad = [(b, b) for b in block.shape]
    padded = np.pad(volume, pad)
    hits = []
    first = block[0, 0, 0]
    for z, y, x in np.argwhere(padded[: -block.shape[0], : -block.shape[1], : -block.shape[2]] == first):
        window = padded[z : z + block.shape[0], y : y + block.shape[1], x : x + block.shape[2]]
        if window.shape == block.shape and np.array_equal(window, block):
            hits.append((z - block.shape[0], y - block.shape[1], x - block.shape[2]))
    return hits


def test_roi_items_are_native_blocks_around_nodules_normalised_like_synthesis():
    cfg = roi_config()
    ph = make_phantom(SIZE, SPACING, seed=5, nodules=SPECS)
    ds = PhantomDataset(1, SIZE, SPACING, base_seed=5, nodules=SPECS, flip_prob=0.0, **model_data_options(cfg))
    hu = sitk.GetArrayFromImage(ph.ct).astype(np.float32)
    labels = sitk.GetArrayFromImage(ph.layout)
    seen_types = set()
    for epoch in range(6):
        item = ds[(0, epoch)]
        ct, lay = item["ct"][0].numpy(), item["layout"].numpy()
        assert ct.shape == lay.shape == (8, 16, 16) and item["ct"].dtype == torch.float32
        assert is_nodule(lay).any(), "an roi item without its nodule"
        seen_types |= set(np.unique(lay[is_nodule(lay)]).tolist())
        # The block of the HU volume it came from: the phantom's labels hold the item's layout exactly there.
        starts = [s for s in find_block(labels, lay) if all(a >= 0 for a in s)]
        assert starts, "the layout patch is not a block of the phantom's layout"
        z, y, x = starts[0]
        expected = np.clip((hu[z : z + 8, y : y + 16, x : x + 16] + 1000.0) / 1000.0 - 1.0, -1, 1)
        assert np.allclose(ct, expected, atol=1e-6), "CT patch not the window-normalised HU at the layout's place"
    assert seen_types == {3, 5}, "both nodules (solid 3 and ground-glass 5) are drawn across epochs"


def test_roi_patch_matches_the_synthesis_patch_when_centred():
    """With no shift, the training patch is the patch synthesis cuts for the same nodule (same normalisation)."""
    cfg = roi_config()
    spec = [NoduleSpec(8.0, "part-solid", "round", side="left")]
    ph = make_phantom(SIZE, SPACING, seed=2, nodules=spec)
    items, _ = preprocess(ph.ct, ph.layout, **model_options(cfg))
    ds = PhantomDataset(1, SIZE, SPACING, base_seed=2, nodules=spec, flip_prob=0.0, **model_data_options(cfg))
    hu, labels, _ = ds.arrays(0)  # per nodule, the box a quarter patch larger on every side, before any shift
    assert hu.shape == labels.shape == (1, 12, 24, 24)
    centre = (slice(2, 10), slice(4, 20), slice(4, 20))
    assert np.array_equal(labels[0][centre], items[0].layout)
    window = np.clip((hu[0][centre] + 1000.0) / 1000.0 - 1.0, -1, 1)
    assert np.allclose(window, items[0].ct, atol=1e-6)


def train_two_steps(run_dir, **train_settings):
    """Two updates of the small ROI model on two phantoms; returns (model config, dataset, settings)."""
    cfg = roi_config()
    ds = PhantomDataset(2, SIZE, SPACING, base_seed=5, nodules=SPECS, **model_data_options(cfg))
    train = TrainConfig(max_steps=2, checkpoint_every=2, log_every=1, ema_start=1, **train_settings)
    assert Trainer(seeded_model(cfg, 0), ds, train, run_dir, device="cpu").fit().step == 2
    return cfg, ds, train


def test_roi_model_trains_and_mismatched_datasets_are_refused(tmp_path):
    cfg, _, train = train_two_steps(tmp_path / "run", batch_size=2)
    full = PhantomDataset(2, SIZE, SPACING, **model_data_options(dataclasses.replace(cfg, spatial_mode="full")))
    with pytest.raises(InputError, match="spatial_mode"):
        Trainer(seeded_model(cfg, 0), full, train, tmp_path / "run2", device="cpu")
    healthy = PhantomDataset(1, SIZE, SPACING, base_seed=5, nodules=0, **model_data_options(cfg))
    with pytest.raises(InputError, match="has no nodule"):
        healthy[0]
    with pytest.raises(InputError, match="crop_size does not apply"):
        PhantomDataset(1, SIZE, SPACING, crop_size=(4, 4, 4), **model_data_options(cfg))


def test_roi_synthesis_regenerates_nodules_plus_margin_and_keeps_the_rest():
    from LungDDPMLib.diffusion import DiffusionModel
    from LungDDPMLib.sampling import SamplerConfig
    from LungDDPMLib.synthesis import near_nodules, synthesize_case

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DiffusionModel(roi_config())
    ph = make_phantom(SIZE, SPACING, seed=5, nodules=SPECS)
    real, labels = sitk.GetArrayFromImage(ph.ct), sitk.GetArrayFromImage(ph.layout)
    sampler = SamplerConfig("ddim", steps=2)
    spacing = SPACING[::-1]
    anchored = synthesize_case(ph.ct, ph.layout, model, sampler=sampler, seeds=[1])
    changed = sitk.GetArrayFromImage(anchored.images[0]) != real
    assert anchored.regenerated == "nodules + 3 mm" and changed.any()
    assert not (changed & ~near_nodules(labels, spacing, 3.0)).any()  # the lung beyond 3 mm stays real
    whole = synthesize_case(ph.ct, ph.layout, model, sampler=sampler, seeds=[1], roi_margin_mm=-1)
    changed = sitk.GetArrayFromImage(whole.images[0]) != real
    assert whole.regenerated == "layout" and (changed & ~near_nodules(labels, spacing, 6.0)).any()
    assert not (changed & (labels == 0)).any()  # background stays real either way


# ------------------------------------------------------------------------------------ nodule-weighted training loss
def _two_layouts() -> torch.Tensor:
    """Two 8x16x16 layouts, lung everywhere: one ground-glass voxel at an edge, a 2x2x2 solid block inside."""
    layout = torch.ones(2, 8, 16, 16, dtype=torch.long)
    layout[0, 0, 0, 5] = 5
    layout[1, 3:5, 7:9, 7:9] = 3
    return layout


def test_nodule_weight_map_is_the_nodules_dilated_by_the_margin():
    model = seeded_model(roi_config(), 0)
    layout = _two_layouts()
    got = nodule_weight_map(model, model.condition(layout), 10.0, 1).numpy()
    # Oracle: every voxel within one voxel (chessboard distance) of a nodule voxel weighs 10, the rest 1.
    expected = np.ones((2, 1, 8, 16, 16), dtype=np.float32)
    for b, z, y, x in np.argwhere(np.isin(layout.numpy(), (2, 3, 4, 5))):
        expected[b, 0, max(z - 1, 0) : z + 2, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = 10.0
    assert np.array_equal(got, expected)
    assert np.array_equal(nodule_weight_map(model, model.condition(layout), 10.0, 0).numpy() > 1, layout[:, None] > 1)


def test_nodule_weighted_loss_is_a_per_sample_weighted_mean_and_uniform_weights_are_the_published_loss():
    model = seeded_model(roi_config(), 0)
    layout = _two_layouts()
    cond = model.condition(layout)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 1, 8, 16, 16, generator=gen) * 2 - 1
    t, noise = torch.tensor([3, 200]), torch.randn(2, 1, 8, 16, 16, generator=gen)
    with torch.no_grad():
        err = (model.eps(model.schedule.q_sample(x0, t, noise), t, cond) - noise).abs().numpy()
        published = model.loss(x0, cond, t=t, noise=noise)
        uniform = model.loss(x0, cond, t=t, noise=noise, weight=torch.full((2, 1, 8, 16, 16), 3.0))
        w = nodule_weight_map(model, cond, 10.0, 1)
        weighted = model.loss(x0, cond, t=t, noise=noise, weight=w)
        per_sample = [
            model.loss(x0[i : i + 1], cond[i : i + 1], t=t[i : i + 1], noise=noise[i : i + 1], weight=w[i : i + 1])
            for i in range(2)
        ]
        module = LossModule(model, "l1", 10.0, 1)(x0, cond, t, noise)
    torch.testing.assert_close(uniform, published)
    wn = w.numpy()
    oracle = np.mean([(err[i] * wn[i]).sum() / wn[i].sum() for i in range(2)])
    assert abs(float(weighted) - oracle) < 1e-5 * max(1.0, oracle)
    assert float(weighted) != pytest.approx(float(published), rel=1e-3)  # the nodules' errors count more
    torch.testing.assert_close(weighted, torch.stack(per_sample).mean())  # a batch split does not change it
    torch.testing.assert_close(module, weighted)
    with pytest.raises(InputError, match="non-negative"):
        model.loss(x0, cond, t=t, noise=noise, weight=-w)
    with pytest.raises(InputError, match="shape"):
        model.loss(x0, cond, t=t, noise=noise, weight=w[:, :, :4])


def test_nodule_weighted_training_runs_records_its_setting_and_refuses_bad_settings(tmp_path):
    _, ds, train = train_two_steps(tmp_path / "run", nodule_weight=8.0)
    assert load_checkpoint(tmp_path / "run" / "last.pt").provenance["train_config"]["nodule_weight"] == 8.0
    for bad in ({"nodule_weight": 0.5}, {"nodule_weight": float("inf")}, {"nodule_weight_margin": -1}):
        with pytest.raises(InputError, match="nodule_weight"):
            TrainConfig(**bad)
    lung_only = roi_config(
        unet=UNetConfig(model_channels=8, channel_mult=(1, 2), attention_levels=(), layout_channels=("lung",)),
        nodule_types=(),
    )
    with pytest.raises(InputError, match="'nodule' layout channel"):
        Trainer(seeded_model(lung_only, 0), ds, train, tmp_path / "run2", device="cpu")
