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


def test_array_order_layout_resize_and_crop_fields() -> None:
    assert preset("lung-ddpm").array_order == "ikj" and preset("small").array_order == "kji"
    assert preset("lung-ddpm-plus").array_order == "ikj"
    assert preset("lung-ddpm").layout_resize == "channels-linear" and preset("small").layout_resize == "labels-nearest"
    with pytest.raises(InputError, match="layout_resize"):
        preset("small", layout_resize="linear")
    assert preset("small").crop == "lung"
    with pytest.raises(InputError, match="array_order"):
        preset("small", array_order="yxz")
    with pytest.raises(InputError, match="crop"):
        preset("small", crop="chest")


def test_legacy_axis_order_names_are_read_as_what_they_meant() -> None:
    """Configs stored before the orders were named by NIfTI axes: 'zyx' was ours, 'xyz' a published preset's."""
    ours = preset("small").to_dict()
    ours["array_order"] = "zyx"
    del ours["layout_resize"]
    assert ModelConfig.from_dict(ours) == preset("small")
    published = preset("lung-ddpm").to_dict()
    published["array_order"] = "xyz"
    del published["layout_resize"]
    assert ModelConfig.from_dict(published) == preset("lung-ddpm")
    # Our trainer stored "xyz" for the published presets but fed them SimpleITK order on nearest labels.
    ours_published = ModelConfig.from_dict(published, trained_here=True)
    assert (ours_published.array_order, ours_published.layout_resize) == ("kji", "labels-nearest")
