"""Density control: each nodule's interior (and a part-solid nodule's solid core) ends at its target HU, the texture
inside is the model's own, and nothing else moves: not the voxels outside the nodule, not what the sampler keeps from
the real CT (a vessel through ground glass). Checked on hand-made volumes, through the samplers, and end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from test_context_channels import context_config
from test_roi_training import SIZE, SPACING, SPECS

from LungDDPMLib.config import LABEL_LUNG, LABEL_OF_TYPE, ScheduleConfig, preset
from LungDDPMLib.diffusion.schedule import NoiseSchedule
from LungDDPMLib.errors import InputError
from LungDDPMLib.nodule_density import (
    DEFAULT_DENSITY,
    NoduleDensity,
    density_record,
    parse_density,
    resolve_density,
)
from LungDDPMLib.sampling.density import INTERIOR_MM, DensityControl, nodule_fields, region_means

SP = (1.5, 0.8, 0.8)  # (z, y, x) mm: anisotropic like a CT


def _hand_made():
    """A part-solid and a ground-glass ball in lung; a vessel (kept voxels) along x through the ground glass."""
    shape = (24, 48, 80)
    labels = np.full(shape, LABEL_LUNG, np.uint8)
    z, y, x = np.indices(shape)
    r_ps = np.sqrt(((z - 12) * SP[0]) ** 2 + ((y - 24) * SP[1]) ** 2 + ((x - 20) * SP[2]) ** 2)
    r_gg = np.sqrt(((z - 12) * SP[0]) ** 2 + ((y - 24) * SP[1]) ** 2 + ((x - 58) * SP[2]) ** 2)
    labels[r_ps <= 9.0] = LABEL_OF_TYPE["part-solid"]
    labels[r_gg <= 8.0] = LABEL_OF_TYPE["ground-glass"]
    kept = np.zeros(shape, bool)
    kept[11:14, 23:26, :] = True  # the vessel the sampler keeps from the real CT
    return labels, kept, r_ps


def _to_model(hu: float) -> float:
    return (hu + 1000.0) / 1000.0 - 1.0


def test_the_projection_sets_each_region_mean_and_keeps_texture_and_everything_else():
    labels, kept, r_ps = _hand_made()
    drawn = ~kept
    want = {
        "part-solid": NoduleDensity(interior_hu=-560.0, core_hu=-40.0, core_fraction=0.5),
        "ground-glass": NoduleDensity(interior_hu=-620.0),
    }
    fields = nodule_fields(labels, SP, drawn, want, _to_model)
    assert sorted(f.kind for f in fields) == ["ground-glass", "part-solid"]
    control = DensityControl(NoiseSchedule(ScheduleConfig(timesteps=50)), fields, torch.device("cpu"))
    rng = np.random.default_rng(0)
    texture = rng.normal(0.0, 0.03, labels.shape).astype(np.float32)
    x0 = torch.from_numpy(np.float32(_to_model(-300.0)) + texture)[None, None].repeat(2, 1, 1, 1, 1)
    x0[1] += 0.1  # a second sample with another level: each is projected on its own
    out = control.project(x0)
    diff = (out - x0)[:, 0].numpy()
    for f in fields:
        for region, target in zip(f.regions, f.targets):
            for b in range(2):
                assert out[b, 0].numpy()[region].mean() == pytest.approx(target, abs=1e-5)
    # Nothing outside the nodules, nothing the sampler keeps: exactly unchanged.
    support = np.any([f.basis.any(axis=0) for f in fields], axis=0)
    assert np.all(diff[:, ~support] == 0)
    assert np.all(diff[:, kept] == 0)
    # The texture is the model's: deep inside one region the change is a single offset.
    deep_rim = (labels == LABEL_OF_TYPE["part-solid"]) & (r_ps > 7.0) & (r_ps < 7.5)
    deep_rim &= ~ndi.binary_dilation(kept, iterations=2)
    assert np.ptp(diff[0][deep_rim]) < 1e-5
    # A part-solid nodule gets its solid core: the centre ends far denser than its rim.
    row = region_means(out[0, 0].numpy() * 1000.0, labels, SP, drawn, 0.5)
    ps = next(r for r in row if r["class"] == "part-solid")
    assert ps["core_hu"] - ps["interior_hu"] == pytest.approx(520.0, abs=0.5)


def test_a_texture_wider_than_asked_is_narrowed_about_its_mean_and_a_narrow_one_left_alone():
    labels, kept, _ = _hand_made()
    labels[labels == LABEL_OF_TYPE["part-solid"]] = LABEL_LUNG
    wide = {"ground-glass": NoduleDensity(interior_hu=-620.0, texture_sd_hu=40.0)}
    control = DensityControl(
        NoiseSchedule(ScheduleConfig(timesteps=50)), nodule_fields(labels, SP, ~kept, wide, _to_model), "cpu"
    )
    region = control.nodules[0][1][0].reshape(labels.shape).bool().numpy()
    rng = np.random.default_rng(1)
    for sd_hu, expected in ((150.0, 40.0), (20.0, 20.0)):
        x0 = torch.from_numpy(np.float32(_to_model(-500.0)) + rng.normal(0, sd_hu / 1000, labels.shape))
        out = control.project(x0.float()[None, None])[0, 0].numpy()
        assert out[region].mean() * 1000 == pytest.approx(-620.0, abs=0.01)
        assert out[region].std() * 1000 == pytest.approx(expected, rel=0.03)


def test_regions_too_small_or_unasked_are_left_to_the_model():
    labels, kept, _ = _hand_made()
    tiny = np.full((9, 9, 9), LABEL_LUNG, np.uint8)
    tiny[4, 4, 4] = LABEL_OF_TYPE["solid"]  # a one-voxel nodule has no interior
    assert nodule_fields(tiny, SP, np.ones(tiny.shape, bool), DEFAULT_DENSITY, _to_model) == []
    only_gg = nodule_fields(labels, SP, ~kept, {"ground-glass": DEFAULT_DENSITY["ground-glass"]}, _to_model)
    assert [f.kind for f in only_gg] == ["ground-glass"]
    inside = ndi.distance_transform_edt(labels == LABEL_OF_TYPE["ground-glass"], sampling=SP) > INTERIOR_MM
    assert not (only_gg[0].regions[0] & ~inside).any()


def test_the_wrapped_noise_estimate_gives_a_clean_image_in_range_at_the_targets_at_every_level():
    """Every sampler derives x0 from the noise estimate: the wrapped one must give an x0 within [-1, 1] whose regions
    hold their targets, and that equals the network's own x0 wherever the control does not act."""
    labels, kept, _ = _hand_made()
    schedule = NoiseSchedule(ScheduleConfig(timesteps=50))
    fields = nodule_fields(labels, SP, ~kept, DEFAULT_DENSITY, _to_model)
    control = DensityControl(schedule, fields, "cpu")
    support = torch.from_numpy(np.any([f.basis.any(axis=0) for f in fields], axis=0))
    gen = torch.Generator().manual_seed(0)
    x0_net = torch.rand((1, 1, *labels.shape), generator=gen) * 1.9 - 0.95  # what the network believes
    eps = torch.randn((1, 1, *labels.shape), generator=gen)
    host = schedule.host()
    for level in (49, 20, 0):
        abar = host.alpha_bar(level)
        x = abar**0.5 * x0_net + (1 - abar) ** 0.5 * eps
        wrapped = control.wrap(lambda x, t: eps)(x, torch.full((1,), level, dtype=torch.long))
        x0 = (x - (1 - abar) ** 0.5 * wrapped) / abar**0.5
        tol = 1e-6 / abar**0.5  # float32 rounding, amplified by 1 / sqrt(alpha_bar) at the noisiest level
        assert float(x0.min()) >= -1 - tol and float(x0.max()) <= 1 + tol
        assert torch.allclose(x0[0, 0][~support], x0_net[0, 0][~support], atol=tol)
        for f in fields:
            for region, target in zip(f.regions, f.targets):
                assert float(x0[0, 0][torch.from_numpy(region)].mean()) == pytest.approx(target, abs=2e-3 + tol)


def _synth(model, ph, density, seeds=(0,)):
    import SimpleITK as sitk

    from LungDDPMLib.sampling import SamplerConfig
    from LungDDPMLib.synthesis import synthesize_case

    r = synthesize_case(ph.ct, ph.layout, model, sampler=SamplerConfig("ddim", steps=25), seeds=list(seeds),
                        density=density)  # fmt: skip
    return [sitk.GetArrayFromImage(i) for i in r.images]


def test_synthesis_draws_each_nodule_at_its_target_and_keeps_the_rest_bit_exact():
    import SimpleITK as sitk

    from LungDDPMLib.data.context import OPAQUE_LABELS, ROI_MARGIN_MM, SEE_THROUGH_HU, near_nodules
    from LungDDPMLib.phantom import make_phantom
    from LungDDPMLib.training import seeded_model

    ph = make_phantom(SIZE, SPACING, seed=5, nodules=SPECS)
    model = seeded_model(context_config(), 0)
    with torch.no_grad():  # a network that predicts no noise: its x0 is the state itself, far from any class density
        for p in model.parameters():
            p.zero_()
    want = {"ground-glass": NoduleDensity(-640.0), "solid": NoduleDensity(20.0)}
    free, controlled = _synth(model, ph, None)[0], _synth(model, ph, want)[0]
    real = sitk.GetArrayFromImage(ph.ct)
    labels = sitk.GetArrayFromImage(ph.layout)
    spacing = ph.ct.GetSpacing()[::-1]
    outside = ~near_nodules(labels, spacing, ROI_MARGIN_MM)
    assert np.array_equal(controlled[outside], real[outside])
    regenerated = ~outside & (labels > 0)
    drawn = regenerated & ~((real > SEE_THROUGH_HU) & ~np.isin(labels, OPAQUE_LABELS))  # the vessels are the model's
    got = {r["class"]: r["interior_hu"] for r in region_means(controlled, labels, spacing, drawn)}
    before = {r["class"]: r["interior_hu"] for r in region_means(free, labels, spacing, drawn)}
    assert got["ground-glass"] == pytest.approx(-640.0, abs=2.0)
    assert got["solid"] == pytest.approx(20.0, abs=2.0)
    assert abs(before["ground-glass"] + 640.0) > 50 or abs(before["solid"] - 20.0) > 50  # the control did the work


def test_density_text_defaults_and_models_it_applies_to():
    assert parse_density("auto") == DEFAULT_DENSITY
    assert all(v is None for v in parse_density("off").values())
    mixed = parse_density("ground-glass=-650,part-solid=-600/0@0.5,solid=off")
    assert mixed["ground-glass"] == NoduleDensity(-650.0, texture_sd_hu=DEFAULT_DENSITY["ground-glass"].texture_sd_hu)
    assert mixed["part-solid"] == NoduleDensity(-600.0, 0.0, 0.5)
    assert mixed["solid"] is None
    for bad, why in (("glass=-600", "CLASS=HU"), ("solid=hard", "not HU"), ("solid=-600/0", "only part-solid"),
                     ("ground-glass=-1500", "-1000..1000"), ("part-solid=-600/0@0.99", "core fraction")):  # fmt: skip
        with pytest.raises(InputError, match=why):
            parse_density(bad)
    typed = context_config()
    assert resolve_density("auto", typed) == DEFAULT_DENSITY
    assert resolve_density("off", typed) is None
    published = preset("lung-ddpm")  # no classes, per-slice scale: auto means no control, a spec is refused
    assert resolve_density("auto", published) is None
    with pytest.raises(InputError, match="--density off"):
        resolve_density("solid=0", published)
    untyped = preset("tiny")  # the HU scale, but no classes to give densities to
    assert untyped.normalization == "hu-window" and resolve_density("auto", untyped) is None
    with pytest.raises(InputError, match="draws no nodule classes"):
        resolve_density("ground-glass=-600", untyped)
    assert density_record(None) == "off"
    assert density_record(DEFAULT_DENSITY)["ground-glass"]["interior_hu"] == DEFAULT_DENSITY["ground-glass"].interior_hu


def test_a_model_on_the_published_scale_refuses_a_density_target():
    from LungDDPMLib.phantom import make_phantom
    from LungDDPMLib.training import seeded_model

    ph = make_phantom(SIZE, SPACING, seed=5, nodules=SPECS)
    model = seeded_model(dataclasses.replace(preset("tiny"), normalization="lungddpm-compat"), 0)
    with pytest.raises(InputError, match="hu-window"):
        _synth(model, ph, {"solid": NoduleDensity(0.0)})


def test_where_roi_patches_overlap_each_nodule_comes_from_its_own_patch():
    """A patch also draws the cut pieces of a neighbour: compositing must take each nodule (and the voxels nearest
    to it) from the patch that drew it whole, whatever the patches' order, or a neighbour's fragment - drawn without
    its own core or density - would overwrite it."""
    import SimpleITK as sitk
    from test_roi_training import roi_config

    from LungDDPMLib.data.pipeline import model_options, postprocess, preprocess

    shape = (16, 24, 48)  # (z, y, x), 2 mm voxels: the patch is (8, 16, 16)
    labels = np.full(shape, LABEL_LUNG, np.uint8)
    labels[6:10, 10:14, 14:18] = LABEL_OF_TYPE["solid"]
    labels[6:10, 10:14, 20:31] = LABEL_OF_TYPE["ground-glass"]  # each patch cuts a piece of the other nodule
    ct = sitk.GetImageFromArray(np.full(shape, -850.0, np.float32))
    ct.SetSpacing((2.0, 2.0, 2.0))
    layout = sitk.GetImageFromArray(labels)
    layout.CopyInformation(ct)
    cfg = roi_config()
    items, record = preprocess(ct, layout, **model_options(cfg))
    boxes = [p.box for p in record.patches]
    assert len(boxes) == 2 and boxes[0].start[0] + boxes[0].size[0] > boxes[1].start[0]  # they overlap in x
    for order in ((0, 1), (1, 0)):
        rec = dataclasses.replace(record, patches=[record.patches[k] for k in order])
        fills = {0: -0.2, 1: 0.4}  # model units; patch 0 holds the solid nodule
        outs = [np.full(items[k].ct.shape, fills[k], np.float32) for k in order]
        out = sitk.GetArrayFromImage(postprocess(outs, rec, ct, layout))
        assert np.allclose(out[labels == LABEL_OF_TYPE["solid"]], -200.0)
        assert np.allclose(out[labels == LABEL_OF_TYPE["ground-glass"]], 400.0)
