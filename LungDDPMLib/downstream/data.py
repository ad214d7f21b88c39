"""Training and test samples of the downstream experiment: cases, and nodule-centred or lung patches from them.

A :class:`Case` is one CT (real or synthetic) with the nodule mask of its layout (labels 2-5) as the target, and
each nodule voxel's class (3 solid, 4 part-solid, 5 ground-glass; 2 none stated) for per-class scores. Training
draws patches of a fixed voxel size at the volume's own spacing (no resampling, so real and synthetic cases are
treated identically):

* with probability ``positive_fraction`` the patch is centred on a random nodule voxel, shifted by up to a quarter
  of the patch per axis so the nodule is not always in the middle;
* otherwise it is centred on a random lung voxel - mostly nodule-free parenchyma with vessels, which is what
  teaches the network not to fire on vessel cross-sections (so false positives are meaningful at test time).

Patches are flipped at random along each axis (a nodule has no preferred orientation at this scale). All draws
come from a ``numpy.random.Generator`` the caller seeds, so a batch sequence is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..config import LABEL_BACKGROUND, is_nodule
from ..errors import InputError
from .segnet import normalize_ct

Patch = Tuple[int, int, int]


@dataclass
class Case:
    """One training or test volume in SimpleITK ``(z, y, x)`` order.

    Attributes:
        image: CT normalised with :func:`normalize_ct` (float32, [0, 1]).
        nodule: target mask (any nodule label).
        classes: the layout's label on nodule voxels (2 unstated, 3 solid, 4 part-solid, 5 ground-glass), 0 elsewhere.
        lung_index: flat indices of the lung voxels (layout > 0), where negative patches are centred.
        nodule_index: flat indices of the nodule voxels, where positive patches are centred.
        kind: ``real``, ``synthetic``, ``validation`` or ``test``; ``seed``: the phantom seed of its layout.
        spacing: voxel size in mm ``(z, y, x)`` (nodule sizes are scored in mm).
    """

    image: np.ndarray
    nodule: np.ndarray
    lung_index: np.ndarray
    nodule_index: np.ndarray
    kind: str
    seed: int
    classes: Optional[np.ndarray] = None
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)


def make_case(ct: sitk.Image, layout: sitk.Image, kind: str, seed: int) -> Case:
    """Build a :class:`Case` from a CT in HU and its layout (same grid)."""
    hu, lay = sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(layout)
    if hu.shape != lay.shape:
        raise InputError(f"CT {hu.shape} and layout {lay.shape} of case {kind} {seed} differ in size")
    nodule = is_nodule(lay)
    return Case(
        image=normalize_ct(hu),
        nodule=nodule,
        lung_index=np.flatnonzero(lay != LABEL_BACKGROUND).astype(np.int64),
        nodule_index=np.flatnonzero(nodule).astype(np.int64),
        kind=kind,
        seed=int(seed),
        classes=np.where(nodule, lay, 0).astype(np.uint8),
        spacing=tuple(float(v) for v in ct.GetSpacing()[::-1]),  # type: ignore[arg-type]
    )


def crop(array: np.ndarray, start: Sequence[int], size: Patch) -> np.ndarray:
    """``array[start : start + size]`` per axis, edge-padded where the window leaves the volume."""
    lo = [max(s, 0) for s in start]
    hi = [min(s + n, dim) for s, n, dim in zip(start, size, array.shape)]
    out = array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    pad = [(a - s, s + n - b) for s, n, a, b in zip(start, size, lo, hi)]
    return np.pad(out, pad, mode="edge") if any(p for pair in pad for p in pair) else out


def draw_patch(case: Case, size: Patch, positive: bool, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One (image, target) patch; ``positive`` centres it on a nodule when the case has one."""
    pool = case.nodule_index if positive and case.nodule_index.size else case.lung_index
    if pool.size == 0:  # no lung at all (never for phantoms): anywhere in the volume
        centre = [int(rng.integers(0, d)) for d in case.image.shape]
    else:
        centre = list(np.unravel_index(int(pool[rng.integers(0, pool.size)]), case.image.shape))
    if positive:
        centre = [c + int(rng.integers(-(n // 4), n // 4 + 1)) for c, n in zip(centre, size)]
    start = [min(max(c - n // 2, 0), max(dim - n, 0)) for c, n, dim in zip(centre, size, case.image.shape)]
    image, target = crop(case.image, start, size), crop(case.nodule, start, size)
    for axis in range(3):
        if rng.random() < 0.5:
            image, target = np.flip(image, axis), np.flip(target, axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(target)


def draw_batch(
    pools: Sequence[Sequence[Case]],
    weights: Sequence[float],
    batch: int,
    size: Patch,
    positive_fraction: float,
    rng: np.random.Generator,
) -> Tuple[np.ndarray, np.ndarray, List[int]]:
    """A batch ``(B, 1, *size)`` of images and targets and, per item, which pool it came from.

    Each item picks a pool with probability ``weights`` (e.g. real and synthetic cases), then a case uniformly,
    then a positive or a lung patch. A positive draw from a case without nodules moves to a case of the same
    pool that has one; a pool with no nodule at all gives lung patches only.
    """
    p = np.asarray(weights, dtype=np.float64)
    if len(pools) != len(p) or p.min() < 0 or p.sum() <= 0 or any(len(c) == 0 for c, w in zip(pools, p) if w > 0):
        raise InputError(f"need one non-negative weight per non-empty pool, got {len(pools)} pools, weights {weights}")
    images, targets, sources = [], [], []
    for _ in range(batch):
        k = int(rng.choice(len(pools), p=p / p.sum()))
        positive = bool(rng.random() < positive_fraction)
        cases = pools[k]
        if positive:
            cases = [c for c in cases if c.nodule_index.size] or cases
        image, target = draw_patch(cases[int(rng.integers(0, len(cases)))], size, positive, rng)
        images.append(image)
        targets.append(target)
        sources.append(k)
    return np.stack(images)[:, None], np.stack(targets)[:, None].astype(np.float32), sources


def lung_box(case: Case, margin: int = 2) -> Tuple[slice, slice, slice]:
    """Bounding box of the lung (layout > 0) plus ``margin`` voxels: where inference runs."""
    if case.lung_index.size == 0:
        return tuple(slice(0, d) for d in case.image.shape)  # type: ignore[return-value]
    idx = np.unravel_index(case.lung_index, case.image.shape)
    return tuple(  # type: ignore[return-value]
        slice(max(int(i.min()) - margin, 0), min(int(i.max()) + 1 + margin, d)) for i, d in zip(idx, case.image.shape)
    )
