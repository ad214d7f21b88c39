"""The plan of an augmentation run, made before any sampling: cases, seeds, every new nodule, and the run's identity.

Making the whole plan first is what keeps bad input from leaving half a dataset behind: a CT without a layout, a
layout without lung, a nodule class the model cannot draw or the labels cannot name, a nodule too large for the
model's patch, a lung with no room - each is refused with one line before the first file is written.

Seeds: variant ``k`` of case ``c`` gets ``variant_seed(seed, c, k)`` (a hash, so it does not depend on which other
cases or how many variants the run has); it seeds the placement and the sampling, and both are recorded.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..config import LABEL_OF_TYPE, is_nodule
from ..data.geometry import Geometry
from ..errors import InputError
from .options import AugmentSettings
from .placement import CaseSpace, Placed, max_diameter_mm, place_variant
from .writers import OutputWriter

PLAN_VERSION = 1


def variant_seed(seed: int, case: str, variant: int) -> int:
    """A 31-bit seed for one variant, derived from the run seed, the case name and the variant number."""
    digest = hashlib.sha256(f"lungddpm-augment:{int(seed)}:{case}:{int(variant)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def variant_id(case: str, variant: int) -> str:
    return f"{case}_v{variant}"


@dataclass
class CaseInput:
    name: str
    ct: Path
    layout: Path


@dataclass
class VariantPlan:
    case: str
    variant: int
    seed: int
    placed: List[Placed]

    @property
    def case_id(self) -> str:
        return variant_id(self.case, self.variant)

    def nodules(self, geo: Geometry) -> List[Dict[str, Any]]:
        """The placed nodules as recorded: what was asked, and the voxels they got on this grid."""
        voxel_mm3 = float(np.prod(geo.spacing))
        return [
            {
                **p.nodule.to_dict(),
                "label": LABEL_OF_TYPE[p.nodule.kind],
                "label_voxels": p.voxels,
                "volume_mm3": round(p.voxels * voxel_mm3, 2),
            }
            for p in self.placed
        ]


@dataclass
class CasePlan:
    source: CaseInput
    geometry: Geometry
    existing_nodules: int
    variants: List[VariantPlan] = field(default_factory=list)


def read_case(case: CaseInput) -> Tuple[sitk.Image, sitk.Image]:
    """A case's CT and layout (labels 1 lung, 2-5 nodules, on the CT grid), errors naming the case."""
    from ..data.io import read_ct
    from ..data.layout import read_layout
    from ..data.validation import DataWarning

    try:
        ct = read_ct(case.ct)
        with warnings.catch_warnings():  # a case without nodules is what augment adds them to: not worth a warning
            warnings.filterwarnings("ignore", message=".*(no nodule|not found)", category=DataWarning)
            layout, _ = read_layout(case.layout, ct)
    except InputError as exc:
        raise InputError(f"case {case.name!r} ({case.layout.name}): {exc}") from None
    return ct, layout


def check_model_classes(settings: AugmentSettings, model_types: Sequence[str], typed: bool) -> None:
    """Refuse classes the model was not trained to draw (a model without type conditioning draws any as a nodule)."""
    missing = [t for t in settings.drawn_types if typed and t not in model_types]
    if missing:
        raise InputError(
            f"the model cannot draw {', '.join(missing)} nodules (it knows {', '.join(model_types)}); "
            "drop them from --types or use another --checkpoint"
        )


def plan_case(
    case: CaseInput,
    ct: sitk.Image,
    layout: sitk.Image,
    settings: AugmentSettings,
    patch_zyx: Optional[Sequence[int]],
    writer: OutputWriter,
) -> CasePlan:
    """Place every variant's nodules in one case (deterministic for the settings' seed)."""
    labels = sitk.GetArrayFromImage(layout)
    geo = Geometry.of(ct)
    where = f"case {case.name!r}"
    writer.check_labels(labels, where)
    if patch_zyx is not None:
        biggest = max_diameter_mm(geo, patch_zyx)
        if settings.diameter_mm[1] > biggest:
            raise InputError(
                f"{where}: a {settings.diameter_mm[1]:g} mm nodule does not fit the model's patch of "
                f"{'x'.join(str(p) for p in patch_zyx[::-1])} voxels at this CT's spacing "
                f"{'x'.join(f'{s:g}' for s in geo.spacing)} mm; use --diameter-mm up to {biggest:.0f}"
            )
    try:
        space = CaseSpace(labels, geo, patch_zyx)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    plan = CasePlan(case, geo, space.existing_count)
    for k in range(1, settings.variants + 1):
        seed = variant_seed(settings.seed, case.name, k)
        placed, _ = place_variant(space, settings, np.random.default_rng(seed), f"{where}, variant {k}")
        plan.variants.append(VariantPlan(case.name, k, seed, placed))
    return plan


def model_layout(labels: np.ndarray, placed: Sequence[Placed]) -> np.ndarray:
    """What the model is given: the existing nodules as lung (so that only the new ones are regenerated; placement
    keeps them out of the regenerated margin) and the new nodules with their classes."""
    out = labels.copy()
    out[is_nodule(out)] = 1
    return with_nodules(out, placed)


def with_nodules(labels: np.ndarray, placed: Sequence[Placed]) -> np.ndarray:
    """``labels`` with the new nodules drawn in by class (a copy)."""
    out = labels.copy()
    for p in placed:
        out[p.box][p.mask] = LABEL_OF_TYPE[p.nodule.kind]
    return out


def check_case_names(names: Sequence[str], settings: AugmentSettings) -> None:
    """A real case named like another case's variant (``a_v1``) would share its files."""
    ids = set(names)
    for name in names:
        for k in range(1, settings.variants + 1):
            if variant_id(name, k) in ids:
                raise InputError(
                    f"case {variant_id(name, k)!r} has the name of variant {k} of case {name!r}; rename one of them"
                )


def run_identity(cases: Sequence[CaseInput], settings: AugmentSettings, model_sha256: str) -> Dict[str, Any]:
    """What makes two runs the same run: settings, model bytes and the exact inputs (resume needs all equal)."""
    from ..outputs import file_identity

    return {
        "plan_version": PLAN_VERSION,
        "settings": settings.to_dict(),
        "model_sha256": model_sha256,
        "cases": {
            c.name: {"ct": file_identity(str(c.ct)), "layout": file_identity(str(c.layout))}
            for c in sorted(cases, key=lambda c: c.name)
        },
    }


def identity_change(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    """What differs between two run identities, in a user's words."""
    changes = []
    before, now = old.get("settings") or {}, new["settings"]
    changes += [
        f"{k} {before.get(k)} -> {now.get(k)}" for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)
    ]
    if old.get("model_sha256") != new["model_sha256"]:
        changes.append(f"model {str(old.get('model_sha256'))[:12]} -> {new['model_sha256'][:12]}")
    a, b = old.get("cases") or {}, new["cases"]
    if set(a) != set(b):
        changes.append(f"cases {sorted(a)} -> {sorted(b)}")
    else:
        changes += [f"the inputs of case {n!r} changed" for n in sorted(b) if a[n] != b[n]]
    if old.get("plan_version") != new["plan_version"]:
        changes.append("another version of lungddpm augment")
    return ", ".join(changes) or "unknown differences"
