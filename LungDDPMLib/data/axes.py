"""Which voxel axes the network sees as its (D, H, W): the model's axis order, and the way there and back.

A network learns the orientation it was trained on, so every array must reach it in that orientation, in
training and in sampling alike. Orders are named by the NIfTI voxel axes ``i, j, k`` (the first, second and
third index of the file's voxel grid) that become the tensor's ``(D, H, W)``:

``kji``
    SimpleITK's array order (``GetArrayFromImage`` returns ``(k, j, i)``): our own models.
``ikj``
    The published Lung-DDPM and Lung-DDPM+ pipelines: nibabel returns ``(i, j, k)``; their datasets and sampling
    script transpose that to ``(j, k, i)``, resize it, and swap tensor axes 1 and 3 (``transpose(3, 1)`` on
    ``(1, j, k, i)``), which leaves ``(i, k, j)``. From SimpleITK's ``(k, j, i)`` that is ``transpose(2, 0, 1)``,
    and the way back is ``transpose(1, 2, 0)``: the two are different permutations.

Arrays on our side are always SimpleITK order; these helpers are the only place that permutes them.

Example:
    >>> import numpy as np
    >>> a = np.zeros((5, 6, 7))  # (k, j, i)
    >>> to_model_order(a, "ikj").shape
    (7, 5, 6)
    >>> from_model_order(to_model_order(a, "ikj"), "ikj").shape
    (5, 6, 7)
    >>> native_grid((128, 96, 64), "ikj")  # the (k, j, i) size that the model sees as (D, H, W) = (128, 96, 64)
    (96, 64, 128)
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from ..config import AXIS_ORDERS
from ..errors import InputError

#: For each order, the SimpleITK ``(k, j, i)`` axes that become the model's ``(D, H, W)``.
_PERMUTATION: Dict[str, Tuple[int, int, int]] = {"kji": (0, 1, 2), "ikj": (2, 0, 1)}
assert set(_PERMUTATION) == set(AXIS_ORDERS)


def permutation(order: str) -> Tuple[int, int, int]:
    """Axes of a SimpleITK ``(k, j, i)`` array, in the model's ``(D, H, W)`` order."""
    try:
        return _PERMUTATION[order]
    except KeyError:
        raise InputError(f"unknown axis order {order!r}; use one of {', '.join(AXIS_ORDERS)}") from None


def inverse_permutation(order: str) -> Tuple[int, int, int]:
    """Axes of a model-order array, in SimpleITK ``(k, j, i)`` order (the inverse of :func:`permutation`)."""
    return tuple(int(a) for a in np.argsort(permutation(order)))  # type: ignore[return-value]


def _permute_last3(array: np.ndarray, axes: Tuple[int, int, int]) -> np.ndarray:
    lead = array.ndim - 3
    if lead < 0:
        raise InputError(f"expected a volume with at least 3 axes, got shape {array.shape}")
    if axes == (0, 1, 2):
        return array
    return np.ascontiguousarray(array.transpose(*range(lead), *(lead + a for a in axes)))


def to_model_order(array: np.ndarray, order: str) -> np.ndarray:
    """SimpleITK order ``(..., k, j, i)`` -> the model's ``(..., D, H, W)``; leading axes (channels) stay put."""
    return _permute_last3(np.asarray(array), permutation(order))


def from_model_order(array: np.ndarray, order: str) -> np.ndarray:
    """The model's ``(..., D, H, W)`` -> SimpleITK order ``(..., k, j, i)``."""
    return _permute_last3(np.asarray(array), inverse_permutation(order))


def native_grid(model_grid: Sequence[int], order: str) -> Tuple[int, int, int]:
    """The ``(k, j, i)`` array size that :func:`to_model_order` turns into ``model_grid`` ``(D, H, W)``."""
    perm = permutation(order)
    out = [0, 0, 0]
    for model_axis, native_axis in enumerate(perm):
        out[native_axis] = int(model_grid[model_axis])
    return tuple(out)  # type: ignore[return-value]
