"""One case end to end: geometry, bit-exact anatomy outside the layout, array order, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import LungDDPMLib.synthesis as synthesis
from LungDDPMLib.config import preset
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.errors import SamplingCancelled
from LungDDPMLib.phantom import make_phantom
from LungDDPMLib.sampling import SamplerConfig
from LungDDPMLib.synthesis import synthesize_case


@pytest.fixture(scope="module")
def case() -> tuple:
    ph = make_phantom((80, 72, 48), (2.6, 2.8, 3.5), seed=3, nodules=1)
    ct, layout = ph.ct, ph.layout
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # 90 degrees about z: not identity
    for img in (ct, layout):
        img.SetDirection(direction)
        img.SetOrigin((12.5, -40.0, 7.25))
    return ct, layout


def arrays(*images: sitk.Image) -> list:
    return [sitk.GetArrayFromImage(i) for i in images]


def test_output_has_input_geometry_and_keeps_real_anatomy_bit_exact(case) -> None:
    ct, layout = case
    before = sitk.GetArrayFromImage(ct).copy()
    model = DiffusionModel(preset("tiny", grid=(32, 32, 32)))
    result = synthesize_case(ct, layout, model, sampler=SamplerConfig("ddim", steps=3), seeds=[0, 1])
    assert len(result.images) == 2 and result.seeds == [0, 1]
    for img in result.images:
        assert img.GetSize() == ct.GetSize() and img.GetSpacing() == ct.GetSpacing()
        assert img.GetOrigin() == ct.GetOrigin() and img.GetDirection() == ct.GetDirection()
        assert img.GetPixelID() == ct.GetPixelID()
    real, lay, s0, s1 = arrays(ct, layout, *result.images)
    assert np.array_equal(s0[lay == 0], real[lay == 0])
    assert not np.array_equal(s0[lay > 0], s1[lay > 0])  # different seeds, different synthesis
    assert np.array_equal(sitk.GetArrayFromImage(ct), before)  # input untouched
    assert set(result.timing_s) == {"preprocess", "sampling", "postprocess", "total"}


@pytest.mark.parametrize("order", ["kji", "ikj"])
def test_identity_sampler_round_trips_hu_through_either_array_order(case, order, monkeypatch) -> None:
    """If the 'model' returned the reference it was given, the pipeline must give back the CT (up to resampling)."""
    ct, layout = case
    seen = {}

    def echo(model, layout_arr, reference, **kwargs):
        seen["shape"] = np.asarray(reference).shape
        return torch.as_tensor(np.asarray(reference))[None].repeat(len(kwargs["seeds"]), 1, 1, 1)

    monkeypatch.setattr(synthesis, "sample", echo)
    native = (48, 72, 80)  # the native size (k, j, i): resampling is exact, and the grid is not a cube
    grid = native if order == "kji" else (80, 48, 72)  # the model sees (i, k, j) for "ikj"
    cfg = preset("tiny", grid=grid, array_order=order, crop="volume")
    result = synthesize_case(ct, layout, DiffusionModel(cfg))
    assert seen["shape"] == grid
    real, lay, syn = arrays(ct, layout, result.images[0])
    inside = lay > 0
    assert np.abs(real[inside].astype(float) - syn[inside]).max() <= 1.0  # int16 rounding only


def test_cancel_returns_nothing(case) -> None:
    ct, layout = case
    model = DiffusionModel(preset("tiny", grid=(32, 32, 32)))
    calls = []
    with pytest.raises(SamplingCancelled):
        synthesize_case(
            ct,
            layout,
            model,
            sampler=SamplerConfig("ddim", steps=10),
            callback=calls.append,
            should_stop=lambda: len(calls) >= 2,
        )
    assert len(calls) == 2 and calls[-1].total == 10
