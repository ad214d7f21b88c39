"""What a user asks of a nodule's density: per-class targets, the defaults, and the ``--density`` text.

Kept free of torch and SciPy so that the job model (and with it the Slicer module's process) can check a
``--density`` value; the control that applies the targets is :mod:`LungDDPMLib.sampling.density`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from .config import LABEL_OF_TYPE
from .errors import InputError


@dataclass(frozen=True)
class NoduleDensity:
    """Target densities of a nodule (HU); ``None`` leaves that part to the model.

    Attributes:
        interior_hu: mean HU of the nodule's interior (for a part-solid nodule: of the part outside the core).
        core_hu: part-solid only: mean HU of the central solid component.
        core_fraction: diameter of that component over the nodule's (equivalent) diameter, 0 < f < 1.
        texture_sd_hu: the largest HU spread each controlled region may have: a wider texture is narrowed about its
            mean (never widened, so the smooth estimates of the noisy steps stay smooth).
    """

    interior_hu: Optional[float] = None
    core_hu: Optional[float] = None
    core_fraction: float = 0.4
    texture_sd_hu: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("interior_hu", "core_hu"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or not -1000.0 <= value <= 1000.0):
                raise InputError(f"{name.replace('_', ' ')} must be a CT value in -1000..1000 HU, got {value}")
        if self.texture_sd_hu is not None and not 0.0 < self.texture_sd_hu <= 1000.0:
            raise InputError(f"the texture spread must lie in (0, 1000] HU, got {self.texture_sd_hu}")
        if not 0.05 <= self.core_fraction <= 0.9:
            raise InputError(f"the solid core fraction must lie in 0.05..0.9 of the diameter, got {self.core_fraction}")


#: Per class, the median over the nodules of 24 training phantoms (seeds 1000-1023, from the ROI model's training
#: seeds; ``python benchmarks/density_priors.py``, docs/results/density-priors.json), the solid core at 0.4 of the
#: diameter; for ground glass, whose drawn texture is too wide, the median interior spread as its largest. They agree
#: with the classes on CT: ground glass -700..-500 HU, a solid part -100..+100 HU.
DEFAULT_DENSITY: Dict[str, NoduleDensity] = {
    "solid": NoduleDensity(interior_hu=6.0),
    "part-solid": NoduleDensity(interior_hu=-552.0, core_hu=-60.0, core_fraction=0.4),
    "ground-glass": NoduleDensity(interior_hu=-625.0, texture_sd_hu=48.0),
}


def parse_density(text: str) -> Dict[str, Optional[NoduleDensity]]:
    """``"ground-glass=-650,part-solid=-600/0@0.4,solid=off"`` -> per-class targets (``off``: the model alone).

    Each entry is ``CLASS=INTERIOR`` (HU), for part-solid optionally ``/CORE@FRACTION``; classes not named keep
    :data:`DEFAULT_DENSITY`. ``auto`` alone is the defaults, ``off`` alone switches the control off for all.
    """
    text = text.strip()
    if text in ("auto", ""):
        return dict(DEFAULT_DENSITY)
    if text == "off":
        return {k: None for k in DEFAULT_DENSITY}
    out: Dict[str, Optional[NoduleDensity]] = dict(DEFAULT_DENSITY)
    for item in text.split(","):
        kind, sep, value = (s.strip() for s in item.partition("="))
        if not sep or kind not in LABEL_OF_TYPE:
            raise InputError(
                f"--density entry {item!r}: write CLASS=HU with CLASS one of {', '.join(LABEL_OF_TYPE)} "
                "(e.g. ground-glass=-650,part-solid=-600/0@0.4), or auto / off"
            )
        if value == "off":
            out[kind] = None
            continue
        interior, _, core_part = value.partition("/")
        core, _, fraction = core_part.partition("@")
        try:
            numbers = [float(v) if v else None for v in (interior, core, fraction)]
        except ValueError:
            raise InputError(f"--density entry {item!r}: {value!r} is not HU[/CORE_HU[@FRACTION]]") from None
        base = DEFAULT_DENSITY[kind]
        out[kind] = NoduleDensity(
            interior_hu=numbers[0],
            core_hu=numbers[1] if core else (base.core_hu if kind == "part-solid" else None),
            core_fraction=numbers[2] if fraction else base.core_fraction,
            texture_sd_hu=base.texture_sd_hu,  # a new level keeps the class's texture cap
        )
        if core_part and kind != "part-solid":
            raise InputError(f"--density entry {item!r}: only part-solid nodules have a solid core")
    return out


def resolve_density(spec: str, config: Any) -> Optional[Dict[str, Optional[NoduleDensity]]]:
    """What ``--density SPEC`` means for a model (its :class:`~LungDDPMLib.config.ModelConfig`).

    ``auto`` (the default) is :data:`DEFAULT_DENSITY` for a model that draws nodule classes on the ``hu-window``
    scale, and no control for any other (a model without classes, or the published per-slice scale, where an HU
    target has no fixed meaning); ``off`` is none; an explicit spec on a model it cannot apply to is refused.
    """
    parsed = parse_density(spec)
    if all(v is None for v in parsed.values()):
        return None
    fits = config.normalization == "hu-window" and bool(config.nodule_types)
    if spec.strip() in ("auto", ""):
        return parsed if fits else None
    if not fits:
        why = "draws no nodule classes" if not config.nodule_types else f"uses the {config.normalization!r} scale"
        raise InputError(f"--density {spec}: this model {why}, so a class density cannot be set; use --density off")
    return parsed


def density_record(resolved: Optional[Mapping[str, Optional[NoduleDensity]]]) -> Any:
    """The provenance entry: ``"off"`` or the targets per class."""
    if not resolved:
        return "off"
    return {k: (None if v is None else dataclasses.asdict(v)) for k, v in resolved.items()}
