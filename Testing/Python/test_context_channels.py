"""ROI models that see the real CT: the channels are what the issue asks the model to see (the kept CT, the vessel
through a ground-glass nodule, nothing inside an opaque nodule), training items carry exactly what synthesis feeds,
and a warm start from a model without the channels computes what that model computes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage as ndi
from test_roi_training import SIZE, SPACING, SPECS, find_block, roi_config

from LungDDPMLib.config import CONDITION_CHANNELS, LABEL_LUNG, LABEL_OF_TYPE, TYPED_LAYOUT_CHANNELS, preset
from LungDDPMLib.data.context import SEE_THROUGH_HU, condition_channels, known_voxels, near_nodules
from LungDDPMLib.data.datasets import PhantomDataset, model_data_options
from LungDDPMLib.data.normalize import window_forward
from LungDDPMLib.errors import InputError
from LungDDPMLib.phantom import make_phantom
from LungDDPMLib.phantom.nodules import parse_nodule_mix, random_specs
from LungDDPMLib.training import seeded_model
from LungDDPMLib.training.warm_start import warm_start


def context_config(**kw):
    unet = dataclasses.replace(roi_config().unet, layout_channels=CONDITION_CHANNELS)
    return roi_config(unet=unet, **kw)


def _hand_made():
    """Lung at -850 HU with a vessel (+40 HU) along x through a ground-glass and a solid nodule; HU and labels."""
    hu = np.full((12, 24, 40), -850.0, np.float32)
    labels = np.full(hu.shape, LABEL_LUNG, np.uint8)
    hu[6, 12, :] = 40.0
    z, y, x = np.indices(hu.shape)
    for cx, kind in ((10, "ground-glass"), (30, "solid")):
        ball = (z - 6) ** 2 + (y - 12) ** 2 + (x - cx) ** 2 <= 16
        labels[ball] = LABEL_OF_TYPE[kind]
        hu[ball] = np.maximum(hu[ball], -600.0 if kind == "ground-glass" else 30.0)
    return hu, labels


def test_the_model_sees_the_kept_ct_and_the_vessel_through_ground_glass_but_nothing_inside_a_solid_nodule():
    hu, labels = _hand_made()
    x, _ = window_forward(hu)
    regenerated = near_nodules(labels, (1.0, 1.0, 1.0), 2.0)
    known = known_voxels(x, labels, regenerated)
    ggo, solid = labels == LABEL_OF_TYPE["ground-glass"], labels == LABEL_OF_TYPE["solid"]
    vessel = hu > SEE_THROUGH_HU
    assert known[~regenerated].all()
    assert known[ggo & vessel].all() and not known[ggo & ~vessel].any()  # the vessel, not the haze
    assert not known[solid].any()  # a solid nodule hides what passes through it
    assert known[regenerated & (labels == LABEL_LUNG) & vessel].all()  # the vessel in the margin ring too
    channels = condition_channels(CONDITION_CHANNELS, labels, x, regenerated, "solid")
    assert channels.shape == (5, *hu.shape) and channels.dtype == np.float32
    assert np.array_equal(channels[3][known], x[known]) and (channels[3][~known] == -1).all()
    assert set(np.unique(channels[4])) == {-1.0, 1.0} and np.array_equal(channels[4] > 0, known)
    # The layout channels are the table lookups the model itself makes from labels.
    model = seeded_model(roi_config(), 0)
    own = model.condition(torch.from_numpy(labels.astype(np.int64))[None])[0].numpy()
    assert np.array_equal(channels[:3], own)


def test_a_context_model_refuses_to_be_sampled_from_the_layout_alone():
    model = seeded_model(context_config(), 0)
    with pytest.raises(InputError, match="real CT"):
        model.condition(torch.ones(1, 8, 16, 16, dtype=torch.long))


def test_training_items_carry_the_channels_synthesis_builds_for_the_same_patch():
    cfg = context_config()
    ph = make_phantom(SIZE, SPACING, seed=5, nodules=SPECS)
    labels = sitk.GetArrayFromImage(ph.layout)
    hu = sitk.GetArrayFromImage(ph.ct).astype(np.float32)
    ds = PhantomDataset(1, SIZE, SPACING, base_seed=5, nodules=SPECS, flip_prob=0.0, **model_data_options(cfg))
    for epoch in range(3):
        item = ds[(0, epoch)]
        lay, cond = item["layout"].numpy(), item["condition"].numpy()
        assert cond.shape == (5, 8, 16, 16)
        z, y, x = next(s for s in find_block(labels, lay) if all(a >= 0 for a in s))
        patch_hu = hu[z : z + 8, y : y + 16, x : x + 16]
        # Independent oracle: nodules + 3 mm regenerated; known = outside it, or a see-through voxel in it.
        nodule = np.isin(lay, (2, 3, 4, 5))
        regenerated = ndi.distance_transform_edt(~nodule, sampling=SPACING[::-1]) <= 3.0
        opaque = np.isin(lay, (2, 3, 4))
        known = ~regenerated | (regenerated & (patch_hu > SEE_THROUGH_HU) & ~opaque)
        assert np.array_equal(cond[4] > 0, known)
        x_norm = np.clip((patch_hu + 1000.0) / 1000.0 - 1.0, -1, 1)
        assert np.allclose(cond[3][known], x_norm[known], atol=1e-6) and (cond[3][~known] == -1).all()


def test_warm_start_computes_what_the_source_model_computes_and_refuses_other_architectures():
    source = seeded_model(roi_config(), 3)
    target = seeded_model(context_config(), 4)
    info = warm_start(target, source)
    assert info["new_input_channels"] == ["context", "context_known"]
    gen = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, 1, 8, 16, 16, generator=gen)
    cond = torch.rand(2, 5, 8, 16, 16, generator=gen) * 2 - 1
    t = torch.tensor([5, 180])
    with torch.no_grad():
        torch.testing.assert_close(target.eps(x_t, t, cond), source.eps(x_t, t, cond[:, :3]), rtol=0, atol=0)
    wider = roi_config(unet=dataclasses.replace(roi_config().unet, model_channels=16))
    with pytest.raises(InputError, match="model_channels"):
        warm_start(seeded_model(context_config(), 0), seeded_model(wider, 0))
    with pytest.raises(InputError, match="lacks"):
        warm_start(seeded_model(roi_config(), 0), seeded_model(context_config(), 0))


def test_the_context_preset_is_roi_small_plus_the_ct_channels():
    small, context = preset("roi-small"), preset("roi-context")
    assert small.unet.layout_channels == TYPED_LAYOUT_CHANNELS
    assert context.unet.layout_channels == CONDITION_CHANNELS
    assert dataclasses.replace(context.unet, layout_channels=TYPED_LAYOUT_CHANNELS) == small.unet
    assert seeded_model(context, 0).denoise_fn is not None


def test_nodule_mix_parsing_and_its_effect_on_random_nodules():
    assert parse_nodule_mix(None) is None
    mix = parse_nodule_mix("ground-glass=2, solid=2")
    assert mix == {"solid": 0.5, "part-solid": 0.0, "ground-glass": 0.5}
    kinds = [s.kind for s in random_specs(400, np.random.default_rng(0), mix)]
    assert "part-solid" not in kinds and 150 < kinds.count("ground-glass") < 250
    # The default mix is unchanged (seeded phantoms keep their nodules).
    default = [s.kind for s in random_specs(50, np.random.default_rng(1))]
    assert default == [
        s.kind
        for s in random_specs(50, np.random.default_rng(1), {"solid": 0.6, "part-solid": 0.2, "ground-glass": 0.2})
    ]
    for bad in ("solid", "solid=-1", "glass=1", "solid=0,ground-glass=0", "solid=x"):
        with pytest.raises(InputError, match="mix"):
            parse_nodule_mix(bad)


def test_cli_train_warm_start_records_its_source(tmp_path, capsys):
    from LungDDPMLib.checkpoint import save_checkpoint
    from LungDDPMLib.cli import main

    source = seeded_model(preset("roi-small"), 0)
    path = tmp_path / "source.pt"
    save_checkpoint(path, source, ema=source, step=7)
    args = ["train", "--phantom", "1", "--phantom-size", "64", "64", "40", "--phantom-spacing", "2", "2", "3"]
    args += ["--phantom-nodules", "1", "--phantom-nodule-mix", "ground-glass=1", "--preset", "roi-context"]
    args += ["--out", str(tmp_path / "run"), "--steps", "1", "--init-from", str(path), "--device", "cpu", "--quiet"]
    assert main(args) == 0
    record = json.loads((tmp_path / "run" / "train.json").read_text())
    assert record["sessions"][0]["init_from"]["new_input_channels"] == ["context", "context_known"]
    assert record["data"]["phantom_nodule_mix"]["ground-glass"] == 1.0
    capsys.readouterr()
    missing = [str(tmp_path / "run2") if a == str(tmp_path / "run") else a for a in args]
    missing[missing.index(str(path))] = str(tmp_path / "none.pt")
    assert main(missing) == 1
    assert "not found" in capsys.readouterr().err.lower()


def test_ct_channels_are_refused_outside_native_roi_patches_and_with_another_margin():
    with pytest.raises(InputError, match="spatial_mode 'roi'"):
        context_config(spatial_mode="full")
    with pytest.raises(InputError, match="hu-window"):
        context_config(normalization="lungddpm-compat")
    from LungDDPMLib.sampling import SamplerConfig
    from LungDDPMLib.synthesis import synthesize_case

    ph = make_phantom(SIZE, SPACING, seed=5, nodules=SPECS)
    model = seeded_model(context_config(), 0)
    with pytest.raises(InputError, match="--roi-margin"):
        synthesize_case(ph.ct, ph.layout, model, sampler=SamplerConfig("ddim", steps=2), roi_margin_mm=5.0)


def test_synthesis_feeds_the_condition_the_dataset_trains_on(monkeypatch):
    """The centred training patch of a nodule and the synthesis patch of that nodule get the same five channels."""
    from LungDDPMLib.data.pipeline import model_options, preprocess
    from LungDDPMLib.sampling import SamplerConfig
    from LungDDPMLib.synthesis import synthesize_case

    cfg = context_config()
    spec = SPECS[:1]  # one ground-glass nodule: one patch
    ph = make_phantom(SIZE, SPACING, seed=2, nodules=spec)
    seen = {}
    import LungDDPMLib.synthesis as synthesis

    real_sample = synthesis.sample

    def spy(*args, **kwargs):
        seen["condition"] = np.array(kwargs["condition"])
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(synthesis, "sample", spy)
    synthesize_case(ph.ct, ph.layout, seeded_model(cfg, 0), sampler=SamplerConfig("ddim", steps=1))
    items, _ = preprocess(ph.ct, ph.layout, **model_options(cfg))
    ds = PhantomDataset(1, SIZE, SPACING, base_seed=2, nodules=spec, flip_prob=0.0, **model_data_options(cfg))
    hu, labels, spacing = ds.arrays(0)
    patch = np.asarray(cfg.grid)
    centre = tuple(slice(p // 4, p // 4 + p) for p in patch)  # the unshifted patch inside the training box
    assert np.array_equal(labels[0][centre], items[0].layout)
    x = np.clip((hu[0][centre] + 1000.0) / 1000.0 - 1.0, -1, 1).astype(np.float32)
    regenerated = near_nodules(labels[0][centre], spacing, 3.0)
    expected = condition_channels(cfg.unet.layout_channels, labels[0][centre], x, regenerated, "solid")
    assert seen["condition"].shape == expected.shape
    assert np.allclose(seen["condition"], expected, atol=1e-6)
