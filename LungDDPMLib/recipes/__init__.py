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
from ..recognition import published_family

__all__ = ["DEFAULT_RECIPE", "RECIPES", "check_recipe", "published_family"]

RECIPES = ("lungddpm", "published")
DEFAULT_RECIPE = RECIPES[0]


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
