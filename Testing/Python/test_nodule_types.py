"""Nodule density classes: how users state them, how layouts carry them, and what models do with them.

The published two-channel models must see a typed nodule exactly as a plain nodule (label 2); a model trained on
types gets each class on its own channel value; a class a model never learnt is refused before any work.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDDPMLib.checkpoint import save_checkpoint
from LungDDPMLib.config import LABEL_OF_TYPE, TYPED_LAYOUT_CHANNELS, ModelConfig, UNetConfig, preset
from LungDDPMLib.data.io import Geometry
from LungDDPMLib.data.layout import layout_from_labelmap, read_layout
from LungDDPMLib.data.nodule_types import canonical_type, parse_type_table, retype, type_from_name
from LungDDPMLib.data.segmentation import write_segmentation
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.errors import InputError
from LungDDPMLib.phantom import NoduleSpec, make_phantom, save_phantom
from LungDDPMLib.sampling import SamplerConfig
from LungDDPMLib.synthesis import synthesize_case
from LungDDPMLib.worker import Case, Job, run_job


@pytest.mark.parametrize(
    "name, kind",
    [
        ("nodule GGO", "ground-glass"),
        ("Ground glass nodule", "ground-glass"),
        ("nodule_non-solid", "ground-glass"),
        ("Nodule part-solid", "part-solid"),
        ("partly solid lesion", "part-solid"),
        ("solid nodule", "solid"),
        ("Nodule 2", None),
        ("lung", None),
        ("consolidation", None),  # "solid" inside a word is no class
    ],
)
def test_segment_names_state_a_class(name, kind):
    assert type_from_name(name) == kind


def test_type_tables_and_their_errors():
    assert parse_type_table(["3=ground-glass", "4=Solid"]) == {3: "ground-glass", 4: "solid"}
    assert parse_type_table("GGO") == {"all": "ground-glass"}
    assert parse_type_table(["nodule A=part-solid"]) == {"nodule A": "part-solid"}
    with pytest.raises(InputError, match=r"unknown nodule type 'calcified'.*solid, part-solid, ground-glass"):
        canonical_type("calcified")
    with pytest.raises(InputError, match="two types"):
        parse_type_table(["3=solid", "3=ground-glass"])
    with pytest.raises(InputError, match="either one type for every nodule"):
        parse_type_table(["solid", "3=ground-glass"])


def _labels(values: dict) -> sitk.Image:
    """A 20^3 label map: lung (value 1) with small cubes of the given values."""
    a = np.zeros((20, 20, 20), np.uint8)
    a[2:18, 2:18, 2:18] = 1
    for i, v in enumerate(values):
        a[4 + 5 * i : 7 + 5 * i, 8:11, 8:11] = v
    return sitk.GetImageFromArray(a)


def test_label_map_values_and_type_table():
    # Our own typed values keep their class by default; a user's other nodule value is a nodule of no class.
    out = sitk.GetArrayFromImage(layout_from_labelmap(_labels([3, 5, 7]), 1, (3, 5, 7)))
    assert sorted(np.unique(out).tolist()) == [0, 1, 2, 3, 5]
    # A table gives a user's value a class; with a table, unlisted values have none (3 is then a plain nodule).
    out = sitk.GetArrayFromImage(layout_from_labelmap(_labels([3, 7]), 1, (3, 7), nodule_types={7: "ground-glass"}))
    assert (out == LABEL_OF_TYPE["ground-glass"]).sum() == 27 and (out == 2).sum() == 27
    out = sitk.GetArrayFromImage(layout_from_labelmap(_labels([3, 7]), 1, (3, 7), nodule_types="part-solid"))
    assert (out == LABEL_OF_TYPE["part-solid"]).sum() == 54
    with pytest.raises(InputError, match="names nodule label 9, which is not in the label map"):
        layout_from_labelmap(_labels([7]), 1, (7, 9), nodule_types={9: "solid"})
    with pytest.raises(InputError, match="names label 1, which is not a nodule label value"):
        layout_from_labelmap(_labels([7]), 1, 7, nodule_types={1: "solid"})


def test_segmentation_names_carry_classes(tmp_path, small_phantom):
    # The phantom's typed layout, written as a Slicer segmentation, reads back with the same classes.
    path = write_segmentation(small_phantom.layout, tmp_path / "ph.seg.nrrd")
    layout, report = read_layout(path, small_phantom.ct)
    assert np.array_equal(sitk.GetArrayViewFromImage(layout), sitk.GetArrayViewFromImage(small_phantom.layout))
    assert report["nodule_types"] == {"nodule": 0, "solid": 1, "part-solid": 1, "ground-glass": 1}
    # Segments a user named: "GGO" alone is a ground-glass nodule; a table by segment name overrides the name.
    lay = sitk.GetArrayFromImage(small_phantom.layout)
    relabel = np.where(lay == LABEL_OF_TYPE["solid"], 7, np.where(lay >= 2, 8, lay)).astype(np.uint8)
    user = Geometry.of(small_phantom.layout).image_from_array(relabel)
    segs = {1: ("lung", (1, 0, 0)), 7: ("GGO", (0, 1, 0)), 8: ("Nodule 2", (0, 0, 1))}
    path = write_segmentation(user, tmp_path / "user.seg.nrrd", segs)
    got = sitk.GetArrayFromImage(read_layout(path, small_phantom.ct)[0])
    assert np.array_equal(got == LABEL_OF_TYPE["ground-glass"], relabel == 7)
    assert np.array_equal(got == 2, relabel == 8)
    got = sitk.GetArrayFromImage(read_layout(path, small_phantom.ct, nodule_types=["nodule 2=solid"])[0])
    assert np.array_equal(got == LABEL_OF_TYPE["solid"], relabel == 8)
    with pytest.raises(InputError, match=r"names segment 'nodule 9'.*nodule segments"):
        read_layout(path, small_phantom.ct, nodule_types=["nodule 9=solid"])


def _typed_config(types=("solid", "part-solid", "ground-glass")) -> ModelConfig:
    unet = UNetConfig(model_channels=8, channel_mult=(1, 2), attention_levels=(), layout_channels=TYPED_LAYOUT_CHANNELS)
    return ModelConfig(unet=unet, grid=(16, 16, 16), normalization="hu-window", nodule_types=tuple(types))


def test_condition_channels_per_label():
    layout = torch.tensor([0, 1, 2, 3, 4, 5]).view(1, 1, 1, 6)
    # Written out independently: lung is label 1; nodule is any of 2-5; the class channel orders by density.
    published = DiffusionModel(preset("tiny")).condition(layout)[0, :, 0, 0]
    assert published.tolist() == [[-1, 1, -1, -1, -1, -1], [-1, -1, 1, 1, 1, 1]]
    typed = DiffusionModel(_typed_config()).condition(layout)[0, :, 0, 0]
    assert typed[2].tolist() == pytest.approx([-1, -1, 1, 1, 1 / 3, -1 / 3])  # untyped drawn as the first class
    ggo_first = DiffusionModel(_typed_config(("ground-glass", "solid"))).condition(layout)[0, 2, 0, 0]
    assert float(ggo_first[2]) == pytest.approx(-1 / 3)


def test_model_config_checks_types():
    with pytest.raises(InputError, match="must list the nodule_types"):
        dataclasses.replace(_typed_config(), nodule_types=())
    with pytest.raises(InputError, match="only such a model may list them"):
        preset("tiny", nodule_types=("solid",))
    with pytest.raises(InputError, match="distinct names"):
        dataclasses.replace(_typed_config(), nodule_types=("solid", "calcified"))
    cfg = _typed_config(("ground-glass",))
    assert ModelConfig.from_json(cfg.to_json()) == cfg  # the classes survive the checkpoint record


def _random(model: DiffusionModel) -> DiffusionModel:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    return model


@pytest.fixture(scope="module")
def case():
    specs = [NoduleSpec(12.0, "ground-glass", "round", side="left"), NoduleSpec(10.0, "solid", "round", side="right")]
    return make_phantom((64, 64, 40), (3.2, 3.2, 6.0), seed=3, nodules=specs)


def test_two_channel_model_draws_typed_nodules_as_plain_ones(case):
    model = _random(DiffusionModel(preset("tiny", grid=(16, 16, 16))))
    sampler = SamplerConfig("ddim", steps=3)
    typed = synthesize_case(case.ct, case.layout, model, sampler=sampler, seeds=[4])
    lay = sitk.GetArrayFromImage(case.layout)
    plain = Geometry.of(case.layout).image_from_array(retype(lay, None))
    untyped = synthesize_case(case.ct, plain, model, sampler=sampler, seeds=[4])
    assert np.array_equal(sitk.GetArrayViewFromImage(typed.images[0]), sitk.GetArrayViewFromImage(untyped.images[0]))
    assert typed.nodule_types["used"] is False and "drawn as plain nodules" in typed.nodule_types["note"]
    assert untyped.nodule_types == {
        "nodules": {"nodule": 2, "solid": 0, "part-solid": 0, "ground-glass": 0},
        "used": False,
    }


def test_typed_model_uses_classes_and_refuses_unknown_ones(case):
    model = _random(DiffusionModel(_typed_config()))
    sampler = SamplerConfig("ddim", steps=2)
    out = synthesize_case(case.ct, case.layout, model, sampler=sampler, seeds=[0])
    assert out.nodule_types["used"] is True and out.nodule_types["nodules"]["ground-glass"] == 1
    lay = sitk.GetArrayFromImage(case.layout)
    as_solid = Geometry.of(case.layout).image_from_array(retype(lay, "solid"))
    other = synthesize_case(case.ct, as_solid, model, sampler=sampler, seeds=[0])
    a, b = (sitk.GetArrayViewFromImage(r.images[0]).astype(float) for r in (out, other))
    assert np.abs(a - b).max() > 0  # the class reaches the network
    solid_only = _random(DiffusionModel(_typed_config(("solid",))))
    with pytest.raises(InputError, match=r"ground-glass nodule.*trained only on solid"):
        synthesize_case(case.ct, case.layout, solid_only, sampler=sampler, seeds=[0])


def test_worker_reads_a_type_table_and_reports_it(tmp_path: Path, case):
    save_phantom(tmp_path / "in", case, name="c", seg_nrrd=False)
    model = _random(DiffusionModel(_typed_config()))
    save_checkpoint(tmp_path / "m.pt", model, ema=model)
    base = {"checkpoint": str(tmp_path / "m.pt"), "steps": 2, "sampler": "ddim", "device": "cpu"}
    events: list = []
    c = Case("c", str(tmp_path / "in/c_ct.nrrd"), str(tmp_path / "in/c_layout.nrrd"), str(tmp_path / "out/c"))
    assert run_job(Job(cases=[c], nodule_types=["ground-glass"], **base), events.append) == 0
    result = next(e for e in events if e["type"] == "result")
    assert result["provenance"]["nodule_types"]["nodules"]["ground-glass"] == 2
    assert result["provenance"]["inputs"]["layout_options"]["nodule_types"] == ["ground-glass"]
    sidecar = json.loads(Path(str(tmp_path / "out/c") + ".lungddpm.json").read_text())
    assert sidecar["nodule_types"]["used"] is True
    # A table entry for a label that is not in the map is refused for that case, with the reason.
    events = []
    c2 = dataclasses.replace(c, out_prefix=str(tmp_path / "out/c2"))
    assert run_job(Job(cases=[c2], nodule_types=["9=solid"], **base), events.append) == 1
    error = next(e for e in events if e["type"] == "error")
    assert error["kind"] == "input" and "not a nodule label value" in error["message"]
    with pytest.raises(InputError, match="unknown nodule type"):
        Job(cases=[c], nodule_types=["3=calcified"], **base)


def test_overlapping_nodule_segments_of_different_classes(tmp_path, small_phantom):
    """A denser class wins where nodule segments overlap, whatever their order (the Slicer module's rule too)."""
    from LungDDPMLib.data.layout import layout_from_segmentation
    from LungDDPMLib.data.segmentation import read_segmentation

    lay = sitk.GetArrayFromImage(small_phantom.layout)
    lung = (lay == 1).astype(np.uint8)
    nodule = (lay >= 2).astype(np.uint8)
    geo = Geometry.of(small_phantom.layout)
    for order in (("nodule GGO", "nodule solid"), ("nodule solid", "nodule GGO")):
        img = sitk.JoinSeries([geo.image_from_array(a) for a in (lung, nodule, nodule)])
        for i, name in enumerate(("lung", *order)):
            img.SetMetaData(f"Segment{i}_Name", name)
            img.SetMetaData(f"Segment{i}_ID", name)
            img.SetMetaData(f"Segment{i}_LabelValue", "1")
            img.SetMetaData(f"Segment{i}_Layer", str(i))
        sitk.WriteImage(img, str(tmp_path / "overlap.seg.nrrd"))
        out = sitk.GetArrayFromImage(layout_from_segmentation(read_segmentation(tmp_path / "overlap.seg.nrrd")))
        assert np.array_equal(out == LABEL_OF_TYPE["solid"], nodule.astype(bool)), order
