"""Pulmonary nodules: specification, placement in the lungs and rendering.

A nodule has a size (3-30 mm, the range of nodules that screening guidelines grade), a density class
(solid, part-solid with a solid core in ground glass, or pure ground glass) and a margin (round, lobulated,
spiculated). Placement uses the distance to the lung boundary so that a nodule is either fully inside the
lung or, when asked, juxta-pleural: touching the chest-wall pleura and flattened against it, the way a
nodule that cannot invade the wall looks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi

from ..config import LABEL_OF_TYPE, NODULE_TYPES
from ..errors import InputError
from . import tissues as T
from .frame import Frame
from .tubes import segment_distance

KINDS = NODULE_TYPES
SHAPES = ("round", "lobulated", "spiculated")
SIDES = ("left", "right")
MIN_DIAMETER_MM, MAX_DIAMETER_MM = 3.0, 30.0


@dataclass(frozen=True)
class NoduleSpec:
    """What a user asks for; everything left ``None`` is drawn from the phantom's seed.

    Attributes:
        diameter_mm: 3..30 mm.
        kind: ``solid``, ``part-solid`` or ``ground-glass``.
        shape: ``round``, ``lobulated`` or ``spiculated``.
        juxta_pleural: touch the chest-wall pleura instead of lying free in the lung.
        side: ``left`` or ``right`` lung (patient's side); random if ``None``.
        center_mm: explicit physical centre, LPS ``(x, y, z)`` as SimpleITK reports points; overrides
            ``side`` and ``juxta_pleural``.
    """

    diameter_mm: float = 10.0
    kind: str = "solid"
    shape: str = "round"
    juxta_pleural: bool = False
    side: Optional[str] = None
    center_mm: Optional[Tuple[float, float, float]] = None

    def __post_init__(self) -> None:
        if not MIN_DIAMETER_MM <= float(self.diameter_mm) <= MAX_DIAMETER_MM:
            raise InputError(
                f"nodule diameter {self.diameter_mm} mm is outside {MIN_DIAMETER_MM:g}-"
                f"{MAX_DIAMETER_MM:g} mm; choose a diameter in that range"
            )
        if self.kind not in KINDS:
            raise InputError(f"unknown nodule kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.shape not in SHAPES:
            raise InputError(f"unknown nodule shape {self.shape!r}; choose one of {', '.join(SHAPES)}")
        if self.side is not None and self.side not in SIDES:
            raise InputError(f"unknown lung side {self.side!r}; use 'left', 'right' or None for random")
        if self.center_mm is not None and len(self.center_mm) != 3:
            raise InputError(f"center_mm must be (x, y, z) in mm, got {self.center_mm!r}")


#: Class mix of random nodules: mostly solid, as in screening cohorts.
DEFAULT_MIX = {"solid": 0.6, "part-solid": 0.2, "ground-glass": 0.2}


def parse_nodule_mix(text: Optional[str]) -> Optional[Dict[str, float]]:
    """``"solid=0.34,part-solid=0.33,ground-glass=0.33"`` -> a mix over :data:`KINDS` (``None`` stays ``None``).

    Classes left out get 0; the shares must be non-negative and are rescaled to sum to 1.
    """
    if text is None:
        return None
    mix = dict.fromkeys(KINDS, 0.0)
    seen = set()
    for part in str(text).split(","):
        kind, sep, value = part.partition("=")
        kind = kind.strip()
        try:
            share = float(value)
        except ValueError:
            share = float("nan")
        if not sep or kind not in KINDS or not np.isfinite(share) or share < 0:
            raise InputError(
                f"nodule mix entry {part.strip()!r} is not TYPE=SHARE with TYPE one of {', '.join(KINDS)} and a "
                "share >= 0 (e.g. solid=0.34,part-solid=0.33,ground-glass=0.33)"
            )
        if kind in seen:
            raise InputError(f"nodule mix {text!r} gives {kind} twice")
        seen.add(kind)
        mix[kind] = share
    total = sum(mix.values())
    if total <= 0:
        raise InputError(f"nodule mix {text!r} gives every class a share of 0")
    return {k: v / total for k, v in mix.items()}


def random_specs(count: int, rng: np.random.Generator, mix: Optional[Dict[str, float]] = None) -> List[NoduleSpec]:
    """A varied set: small to medium, a few juxta-pleural, classes drawn from ``mix`` (:data:`DEFAULT_MIX`)."""
    shares = np.array([float((mix or DEFAULT_MIX).get(k, 0.0)) for k in KINDS])
    if not np.isfinite(shares).all() or (shares < 0).any() or shares.sum() <= 0:
        raise InputError(f"nodule mix {mix} needs finite shares >= 0 and at least one above 0")
    shares = shares / shares.sum()
    specs = []
    for _ in range(count):
        kind = str(rng.choice(KINDS, p=shares))
        shape = str(rng.choice(SHAPES, p=[0.45, 0.3, 0.25]))
        diameter = float(np.round(np.exp(rng.uniform(np.log(5.0), np.log(22.0))), 1))
        specs.append(
            NoduleSpec(diameter, kind, shape, juxta_pleural=bool(rng.random() < 0.25), side=str(rng.choice(SIDES)))
        )
    return specs


@dataclass
class PlacedNodule:
    spec: NoduleSpec
    center: np.ndarray  # physical (z, y, x) mm
    side: str

    def info(self, frame: Frame, label_voxels: int) -> Dict[str, Any]:
        z, y, x = (float(v) for v in self.center)
        return {
            **asdict(self.spec),
            "side": self.side,
            "center_mm": [x, y, z],
            "center_index": [round(float(v)) for v in frame.to_index(self.center)[::-1]],
            "label_voxels": int(label_voxels),
            "volume_mm3": float(label_voxels * np.prod(frame.spacing)),
        }


def place_nodules(
    specs: Sequence[NoduleSpec],
    frame: Frame,
    lungs: Dict[str, np.ndarray],
    pleura_depth: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
) -> List[PlacedNodule]:
    """Choose centres: inside the requested lung, clear of each other, juxta-pleural when asked."""
    step = 2
    coarse_spacing = [s * step for s in frame.spacing]
    depth = {
        name: ndi.distance_transform_edt(mask[::step, ::step, ::step], sampling=coarse_spacing)
        for name, mask in lungs.items()
    }
    placed: List[PlacedNodule] = []
    for spec in specs:
        radius = spec.diameter_mm / 2.0
        if spec.center_mm is not None:
            centre = np.array(spec.center_mm[::-1], dtype=np.float64)
            idx = np.round(frame.to_index(centre)).astype(int)
            if np.any(idx < 0) or np.any(idx >= frame.shape):
                raise InputError(
                    f"nodule centre {spec.center_mm} mm lies outside the phantom volume; "
                    "give a point inside it or leave center_mm unset"
                )
            side = "left" if lungs["left"][tuple(idx)] else ("right" if lungs["right"][tuple(idx)] else "none")
            placed.append(PlacedNodule(spec, centre, side))
            continue
        side = spec.side or str(rng.choice(SIDES))
        edt = depth[side]
        if spec.juxta_pleural:
            # Centre a little less than a radius from the boundary, and that boundary is the chest wall.
            ok = (edt >= 0.55 * radius) & (edt <= 0.9 * radius + coarse_spacing[1])
        else:
            ok = edt >= radius + 2.0
        candidates = np.argwhere(ok)
        centres = frame.to_mm(candidates * step) if len(candidates) else np.zeros((0, 3))
        if spec.juxta_pleural and len(centres):
            near_wall = pleura_depth(centres) <= edt[tuple(candidates.T)] + 1.5 * max(coarse_spacing)
            centres = centres[near_wall]
        for other in placed:
            gap = np.linalg.norm(centres - other.center, axis=1)
            centres = centres[gap > radius + other.spec.diameter_mm / 2.0 + 4.0]
        if not len(centres):
            where = "against the chest wall" if spec.juxta_pleural else "inside"
            raise InputError(
                f"a {spec.diameter_mm:g} mm nodule does not fit {where} the {side} lung of this phantom "
                "(next to the other nodules); use a smaller diameter, fewer nodules or a larger phantom"
            )
        centre = centres[int(rng.integers(len(centres)))] + rng.uniform(-0.5, 0.5, 3) * coarse_spacing
        placed.append(PlacedNodule(spec, centre, side))
    return placed


def _sphere_union(cz, cy, cx, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    sd = None
    for c, r in zip(centres, radii):
        d = np.sqrt((cz - c[0]) ** 2 + (cy - c[1]) ** 2 + (cx - c[2]) ** 2) - r
        sd = d if sd is None else np.minimum(sd, d)
    return sd


def _unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _shape_distance(frame: Frame, box, centre, radius, shape, rng) -> np.ndarray:
    """Signed distance (mm) to the nodule body: a sphere, or a union of lobes."""
    return shape_distance(frame.box_coords(box), centre, radius, shape, rng)


def shape_distance(
    coords: Sequence[np.ndarray], centre: np.ndarray, radius: float, shape: str, rng: np.random.Generator
) -> np.ndarray:
    """Signed distance (mm, negative inside) to a nodule body at physical points: a sphere, or a union of lobes.

    ``coords`` are three broadcastable arrays of physical coordinates in mm and ``centre`` the matching point; any
    grid can supply them (the phantom's axis-aligned one, or a patient CT's oblique, anisotropic one), which is how
    ``lungddpm augment`` draws the phantom's nodule shapes on a user's own grid. Lobes come from ``rng``.
    """
    cz, cy, cx = coords
    if shape == "round":
        return _sphere_union(cz, cy, cx, centre[None], np.array([radius]))
    n = int(rng.integers(3, 7))
    lobe_r = radius * rng.uniform(0.45, 0.65, n)
    dirs = _unit_vectors(n, rng)
    centres = np.vstack([centre, centre + dirs * (radius - lobe_r)[:, None]])
    radii = np.concatenate([[radius * (0.8 if shape == "lobulated" else 0.85)], lobe_r])
    return _sphere_union(cz, cy, cx, centres, radii)


def render_nodule(
    hu: np.ndarray,
    labels: np.ndarray,
    lung_region: np.ndarray,
    frame: Frame,
    nodule: PlacedNodule,
    rng: np.random.Generator,
    classes: Optional[np.ndarray] = None,
) -> int:
    """Blend one nodule into ``hu`` and mark it in ``labels`` (nodule where it fills half a voxel or more) and, if
    given, its class's layout value in ``classes`` (:data:`LungDDPMLib.config.LABEL_OF_TYPE`).

    The blend keeps whatever is brighter, so vessels stay visible through ground glass as they do in real
    scans. Returns the number of nodule voxels.
    """
    spec = nodule.spec
    radius = spec.diameter_mm / 2.0
    h = frame.voxel_mm
    reach = radius * (2.3 if spec.shape == "spiculated" else 1.1) + 2 * h
    box = frame.box(nodule.center - reach, nodule.center + reach)
    if any(s.stop <= s.start for s in box):
        return 0
    sd = _shape_distance(frame, box, nodule.center, radius, spec.shape, rng)
    outer = np.clip(0.5 - sd / h, 0.0, 1.0).astype(np.float32)
    if spec.shape == "spiculated":
        for direction in _unit_vectors(int(rng.integers(8, 17)), rng):
            start = nodule.center + direction * radius * 0.7
            end = nodule.center + direction * radius * rng.uniform(1.4, 2.2)
            sbox, ssd = segment_distance(frame, start, end, max(0.5, 0.12 * radius), 0.15, margin=h)
            if sbox is None:
                continue
            local = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sbox, box))
            np.maximum(outer[local], np.clip(0.5 - ssd / h, 0, 1).astype(np.float32), out=outer[local])
    if spec.juxta_pleural:
        outer *= ndi.binary_dilation(lung_region[box]).astype(np.float32)  # flattened against the wall
    texture = rng.standard_normal(outer.shape).astype(np.float32)
    texture = ndi.gaussian_filter(texture, 1.0) * 6.0  # about unit variance after smoothing
    target = hu[box]
    if spec.kind == "solid":
        value = T.SOLID_HU + 12.0 * texture
        target += outer * (np.maximum(target, value) - target)
    else:
        ggo = T.GROUND_GLASS_HU + 60.0 * texture
        target += outer * (np.maximum(target, ggo) - target)
        if spec.kind == "part-solid":
            core_r = radius * rng.uniform(0.3, 0.55)
            offset = _unit_vectors(1, rng)[0] * (radius - core_r) * rng.uniform(0, 0.5)
            cz, cy, cx = frame.box_coords(box)
            core_sd = _sphere_union(cz, cy, cx, (nodule.center + offset)[None], np.array([core_r]))
            core = np.clip(0.5 - core_sd / h, 0.0, 1.0).astype(np.float32) * (outer > 0)
            value = T.SOLID_HU + 12.0 * texture
            target += core * (np.maximum(target, value) - target)
    # The label is one connected object: spicule fragments thinner than half a voxel are not labelled.
    components, n = ndi.label(outer >= 0.5)
    if n == 0:
        return 0
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    mask = components == int(np.argmax(sizes))
    labels[box][mask] = T.NODULE
    if classes is not None:
        classes[box][mask] = LABEL_OF_TYPE[spec.kind]
    return int(mask.sum())
