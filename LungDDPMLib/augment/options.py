"""What a user asks of an augmentation run: how many variants, which nodules, which output, all checked up front.

The settings are one frozen dataclass so that a run can be recorded (JSON) and compared with the run that wrote an
output folder before: resuming needs the same settings, another run's folder is refused (:mod:`.plan`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..config import NODULE_TYPES
from ..errors import InputError
from ..phantom.nodules import DEFAULT_MIX, MAX_DIAMETER_MM, MIN_DIAMETER_MM, parse_nodule_mix

FORMATS = ("nifti", "nnunet", "dicom")
LABEL_MODES = ("binary", "classes")
#: Shapes of new nodules and their shares: the phantom's mix (round ones most common).
SHAPE_MIX = {"round": 0.45, "lobulated": 0.3, "spiculated": 0.25}
#: Default clearance between a new nodule and any other nodule (existing or new), in mm.
DEFAULT_GAP_MM = 5.0


def parse_range(text: str, what: str, kind: type = float) -> Tuple[float, float]:
    """``"5:25"`` -> ``(5, 25)``; ``"2"`` -> ``(2, 2)``. Raises :class:`InputError` naming ``what``."""
    lo_text, sep, hi_text = str(text).partition(":")
    try:
        lo = kind(lo_text.strip())
        hi = kind(hi_text.strip()) if sep else lo
    except ValueError:
        raise InputError(f"{what} {text!r} is not a number or a range LO:HI (e.g. 5:25)") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise InputError(f"{what} {text!r} must be a finite range LO:HI with LO <= HI")
    return lo, hi


def named_types(text: Optional[str]) -> Tuple[str, ...]:
    """The classes a ``--types`` text names (share 0 included), in :data:`NODULE_TYPES` order."""
    if text is None:
        return NODULE_TYPES
    named = {part.partition("=")[0].strip() for part in str(text).split(",")}
    return tuple(t for t in NODULE_TYPES if t in named)


@dataclass(frozen=True)
class AugmentSettings:
    """One augmentation run.

    Attributes:
        variants: synthetic variants per real case (>= 1).
        types: class shares of new nodules (sum 1, over :data:`NODULE_TYPES`).
        label_classes: the classes that get their own label with ``labels="classes"`` (those ``--types`` names).
        diameter_mm: ``(lo, hi)`` diameters of new nodules, drawn log-uniformly (small nodules are commoner).
        juxta_share: fraction of new nodules placed against the pleura instead of free in the lung.
        nodules_per_variant: ``(lo, hi)`` new nodules per variant, drawn uniformly.
        gap_mm: clearance of a new nodule from every other nodule (existing ones also keep the ROI margin clear).
        seed: the run's seed; each variant's seed is derived from it, the case name and the variant number.
        out_format: ``nifti``, ``nnunet`` or ``dicom`` (a writer the lead wires in; see :mod:`.writers`).
        labels: nnU-Net labels: ``binary`` (nodule 1) or ``classes`` (one label per class of ``label_classes``).
        dataset_id, dataset_name: nnU-Net's ``DatasetNNN_NAME``.
        sampler: sampler settings as recorded (name, steps, eta, aas...).
    Example:
        >>> s = AugmentSettings.create(variants=2, types="solid=1", diameter="6:10")
        >>> s.types["solid"], s.diameter_mm
        (1.0, (6.0, 10.0))
    """

    variants: int
    types: Dict[str, float]
    label_classes: Tuple[str, ...]
    diameter_mm: Tuple[float, float] = (5.0, 25.0)
    juxta_share: float = 0.25
    nodules_per_variant: Tuple[int, int] = (1, 1)
    gap_mm: float = DEFAULT_GAP_MM
    seed: int = 0
    out_format: str = "nifti"
    labels: str = "binary"
    dataset_id: Optional[int] = None
    dataset_name: Optional[str] = None
    sampler: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        variants: int,
        types: Optional[str] = None,
        diameter: str = "5:25",
        juxta_share: float = 0.25,
        nodules: str = "1",
        **rest: Any,
    ) -> AugmentSettings:
        """Settings from the command line's texts: ``types="solid=0.6,..."``, ``diameter="5:25"``, ``nodules="1:3"``."""
        mix = parse_nodule_mix(types) if types is not None else dict(DEFAULT_MIX)
        lo, hi = parse_range(diameter, "--diameter-mm")
        n_lo, n_hi = parse_range(nodules, "--nodules-per-variant", int)
        return cls(
            variants=variants,
            types=mix,
            label_classes=named_types(types),
            diameter_mm=(float(lo), float(hi)),
            juxta_share=float(juxta_share),
            nodules_per_variant=(int(n_lo), int(n_hi)),
            **rest,
        )

    def __post_init__(self) -> None:
        if isinstance(self.variants, bool) or not isinstance(self.variants, int) or self.variants < 1:
            raise InputError(f"--variants must be a whole number >= 1, got {self.variants!r}")
        lo, hi = self.diameter_mm
        if not MIN_DIAMETER_MM <= lo <= hi <= MAX_DIAMETER_MM:
            raise InputError(
                f"--diameter-mm {lo:g}:{hi:g} must lie within {MIN_DIAMETER_MM:g}:{MAX_DIAMETER_MM:g} mm (LO <= HI)"
            )
        if not 0.0 <= self.juxta_share <= 1.0:
            raise InputError(f"--juxta-share must be between 0 and 1, got {self.juxta_share:g}")
        n_lo, n_hi = self.nodules_per_variant
        if n_lo < 1 or n_hi > 20:
            raise InputError(f"--nodules-per-variant {n_lo}:{n_hi} must lie within 1:20")
        if not math.isfinite(self.gap_mm) or self.gap_mm < 0:
            raise InputError(f"--gap-mm must be >= 0, got {self.gap_mm:g}")
        if self.out_format not in FORMATS:
            raise InputError(f"unknown --format {self.out_format!r}; choose one of {', '.join(FORMATS)}")
        if self.labels not in LABEL_MODES:
            raise InputError(f"unknown --labels {self.labels!r}; choose one of {', '.join(LABEL_MODES)}")
        if self.out_format == "nnunet":
            if self.dataset_id is None or not 1 <= int(self.dataset_id) <= 999:
                raise InputError(f"--format nnunet needs --dataset-id between 1 and 999, got {self.dataset_id}")
            name = self.dataset_name or ""
            if not name or not all(c.isalnum() or c in "_-" for c in name):
                raise InputError(
                    f"--format nnunet needs --name made of letters, digits, _ and - (e.g. LungNodules), got {name!r}"
                )
        if self.labels == "classes" and not self.label_classes:
            raise InputError("--labels classes needs at least one class named in --types")

    @property
    def drawn_types(self) -> Tuple[str, ...]:
        """The classes new nodules may have (share above 0)."""
        return tuple(t for t in NODULE_TYPES if self.types.get(t, 0.0) > 0)

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
