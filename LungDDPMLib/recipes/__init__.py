"""Recipes: how a model file is run. ``lungddpm`` (ours, the default) or ``published`` (the authors' scripts).

``published`` exists for the two published architectures only, and means their ``sample.py`` step by step:

* Lung-DDPM (whole lung, 128^3): ancestral DDPM over all levels, the published AAS with its off-by-one
  (``AASConfig(faithful=True)``) and the script's intensity order (resize, then min-max per NIfTI-i slice);
* Lung-DDPM+ (nodule cube, 64^3): :mod:`.plus_case` and :mod:`.plus_solver`.

See docs/published-compatibility.md for each step, theirs and ours.
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import InputError

RECIPES = ("lungddpm", "published")
DEFAULT_RECIPE = RECIPES[0]


def published_family(config: Any) -> Optional[str]:
    """``lung-ddpm`` or ``lung-ddpm-plus`` for a model built with the published data handling, else ``None``.

    Decided from what the network takes and how it was trained to see data (layout channels, spatial mode, axis
    order), not from the file name, so a narrow model in the published layout (tests, distillations) counts too.
    """
    if config.array_order != "ikj" or config.layout_resize != "channels-linear":
        return None
    channels = tuple(config.unet.layout_channels)
    if channels == ("lung", "nodule") and config.spatial_mode == "full":
        return "lung-ddpm"
    if channels == ("nodule",) and config.spatial_mode == "roi":
        return "lung-ddpm-plus"
    return None


def check_recipe(recipe: str, config: Any) -> Optional[str]:
    """Validate ``recipe`` for a model; returns the published family it runs (``None`` for our recipe)."""
    if recipe not in RECIPES:
        raise InputError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if recipe == DEFAULT_RECIPE:
        return None
    family = published_family(config)
    if family is None:
        raise InputError(
            f"--recipe published reproduces the authors' Lung-DDPM and Lung-DDPM+ scripts; this model "
            f"({config.preset or 'custom'}) is neither: use --recipe lungddpm"
        )
    grid = tuple(config.grid)
    if family == "lung-ddpm-plus" and len(set(grid)) != 1:
        raise InputError(f"the published Lung-DDPM+ recipe crops a cube; this model's grid is {grid}")
    return family
