"""Procedural thoracic CT phantom (CT in HU + lung/nodule layout) for tests, demos and demo-model training."""

from .generate import DEFAULT_SIZE, DEFAULT_SPACING, Phantom, make_phantom, save_phantom
from .nodules import NoduleSpec

__all__ = ["DEFAULT_SIZE", "DEFAULT_SPACING", "NoduleSpec", "Phantom", "make_phantom", "save_phantom"]
