"""The powered design of the downstream experiment: seed ranges, size bins and the test nodules.

Four disjoint sets of phantoms, each in its own seed range so that no layout is ever both trained and scored on:

* ``real`` (training, ``real_seed ...``), ``validation`` (early stopping only, ``validation_seed ...``),
  ``test`` (scored once, never used for a choice, ``test_seed ...``);
* ``synthetic`` layouts: synthetic case ``i`` keeps the anatomy of real phantom ``a = i mod n_real`` and gets new
  nodules from layout seed ``synthetic_seed + ROUND * (i // n_real) + a``. Keyed by (anatomy, round), the synthetic
  cases of 4 real cases are exactly those of 8 real cases whose anatomy is one of the first four, so the whole
  design (+4x at 4 and at 8 real cases) draws 32 synthetic cases, not 48.

Test phantoms carry ``test_nodules`` nodules each; across the test set the nodules cycle through every class and
every size bin (global nodule ``g``: class ``g mod 3``, bin ``(g // 3) mod 4``), so each (class, bin) cell is
filled evenly. Sizes are *scored* from the layout, not the request: a nodule's equivalent diameter is that of the
sphere with its labelled volume, :func:`equivalent_diameter_mm`, and :func:`size_bin` puts it in 3-6, 6-10, 10-20
or > 20 mm (half-open bins; anything below 6 mm is in the first).

Example:
    >>> size_bin(5.9), size_bin(6.0), size_bin(20.0), size_bin(24.0)
    ('3-6', '6-10', '>20', '>20')
"""

from __future__ import annotations

import math
from typing import Any, List, Sequence, Tuple

import numpy as np

from ..config import NODULE_TYPES

#: Upper edges (mm) of the size bins; the last bin is open.
SIZE_EDGES = (6.0, 10.0, 20.0)
SIZE_BINS = ("3-6", "6-10", "10-20", ">20")
#: Diameters (mm) the test nodules are drawn from, per bin (the phantom draws 3-30 mm).
TEST_DIAMETERS = ((3.8, 5.6), (6.6, 9.4), (11.0, 18.0), (22.5, 27.0))
#: Layout seeds per synthetic round: n_real must stay below it.
ROUND = 100


def equivalent_diameter_mm(voxels: int, spacing: Sequence[float]) -> float:
    """Diameter of the sphere whose volume is ``voxels`` voxels of ``spacing`` mm."""
    volume = float(voxels) * float(np.prod([float(s) for s in spacing]))
    return (6.0 * volume / math.pi) ** (1.0 / 3.0)


def size_bin(diameter_mm: float) -> str:
    """The size bin of a diameter: ``3-6`` (below 6 mm), ``6-10``, ``10-20`` or ``>20`` (20 mm and above)."""
    return SIZE_BINS[int(np.searchsorted(SIZE_EDGES, float(diameter_mm), side="right"))]


def synthetic_source(index: int, n_real: int, real_seed: int, synthetic_seed: int) -> Tuple[int, int]:
    """(anatomy seed, layout seed) of synthetic case ``index``: see the module docstring."""
    anatomy = index % n_real
    return real_seed + anatomy, synthetic_seed + ROUND * (index // n_real) + anatomy


def synthetic_seed_span(n_synthetic: int, n_real: int) -> int:
    """How many seeds from ``synthetic_seed`` on the synthetic layouts may use (whole rounds)."""
    return ROUND * max(math.ceil(n_synthetic / n_real), 1) if n_synthetic else 0


def held_out_cell(global_index: int) -> Tuple[str, int]:
    """(class, size-bin index) of the ``global_index``-th test nodule of the whole test set."""
    return NODULE_TYPES[global_index % len(NODULE_TYPES)], (global_index // len(NODULE_TYPES)) % len(SIZE_BINS)


def held_out_specs(phantom_index: int, per_phantom: int, rng: np.random.Generator) -> List[Any]:
    """The nodule specs of test phantom ``phantom_index`` (0-based in the test set): classes and size bins from
    :func:`held_out_cell`, diameter uniform in the bin, shape, side and juxta-pleural position drawn as the phantom
    does (a quarter juxta-pleural)."""
    from ..phantom.nodules import SHAPES, SIDES, NoduleSpec

    specs = []
    for j in range(per_phantom):
        kind, b = held_out_cell(phantom_index * per_phantom + j)
        lo, hi = TEST_DIAMETERS[b]
        specs.append(
            NoduleSpec(
                float(np.round(rng.uniform(lo, hi), 1)),
                kind,
                str(rng.choice(SHAPES, p=[0.45, 0.3, 0.25])),
                juxta_pleural=bool(rng.random() < 0.25),
                side=str(rng.choice(SIDES)),
            )
        )
    return specs


def check_disjoint(ranges: Sequence[Tuple[str, int, int]]) -> None:
    """Raise :class:`~LungDDPMLib.errors.InputError` when two ``(kind, first, count)`` seed ranges overlap."""
    from ..errors import InputError

    spans = [(k, s, s + n) for k, s, n in ranges if n > 0]
    for i, (a, lo_a, hi_a) in enumerate(spans):
        for b, lo_b, hi_b in spans[i + 1 :]:
            if lo_a < hi_b and lo_b < hi_a:
                raise InputError(f"phantom seeds of {a} [{lo_a}, {hi_a}) and {b} [{lo_b}, {hi_b}) overlap")
