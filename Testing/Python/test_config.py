"""Configuration records: presets, JSON round trips, validation."""

from __future__ import annotations

import pytest

from LungDDPMLib.config import ModelConfig, preset, preset_names
from LungDDPMLib.errors import InputError


@pytest.mark.parametrize("name", preset_names())
def test_preset_round_trips_through_json(name: str) -> None:
    cfg = preset(name)
    assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_preset_overrides_and_unknown_preset() -> None:
    assert preset("small", grid=(32, 32, 32)).grid == (32, 32, 32)
    with pytest.raises(InputError, match="unknown preset 'huge'"):
        preset("huge")


def test_grid_must_fit_the_downsampling_depth() -> None:
    with pytest.raises(InputError, match="divisible by 16"):
        preset("lung-ddpm", grid=(100, 128, 128))


def test_unknown_fields_in_a_stored_config_are_an_error() -> None:
    data = preset("tiny").to_dict()
    data["unet"]["channels"] = 3
    with pytest.raises(InputError, match=r"unknown model configuration fields \(unet\) \[.channels.\]"):
        ModelConfig.from_dict(data)


def test_published_preset_describes_the_paper_model() -> None:
    cfg = preset("lung-ddpm")
    assert cfg.unet.channel_mult == (1, 1, 2, 3, 4)
    assert cfg.unet.in_channels == 3 and cfg.grid == (128, 128, 128)
    assert cfg.schedule.timesteps == 250 and cfg.normalization == "lungddpm-compat"
    plus = preset("lung-ddpm-plus")
    assert plus.unet.layout_channels == ("nodule",) and plus.spatial_mode == "roi"


def test_array_order_and_crop_fields() -> None:
    assert preset("lung-ddpm").array_order == "xyz" and preset("small").array_order == "zyx"
    assert preset("small").crop == "lung"
    with pytest.raises(InputError, match="array_order"):
        preset("small", array_order="yxz")
    with pytest.raises(InputError, match="crop"):
        preset("small", crop="chest")
