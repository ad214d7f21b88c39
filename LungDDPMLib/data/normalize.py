"""Intensity normalisation between Hounsfield units and the model's [-1, 1], and its exact inverse.

Two modes, named as in :class:`LungDDPMLib.config.ModelConfig`:

``hu-window``
    Our models: clip to :data:`DEFAULT_HU_WINDOW` (-1000..1000 HU, which holds air, lung, nodules, soft
    tissue and most bone) and scale linearly to [-1, 1]. Inverse: linear back to HU (values that were
    clipped stay at the window edge, which never matters inside a lung layout).

``lungddpm-compat``
    What the published Lung-DDPM checkpoint was trained on: no HU window; min-max scaling per index of the
    *last* array axis (``MinMaxScaler`` applied to the array reshaped to ``(-1, last)``), then ``x * 2 - 1``.
    The original code loaded NIfTI with nibabel, whose arrays are ``(i, j, k)``, so in training the last axis is
    the axial slice index k, scaled at the native grid before resizing: SimpleITK axis 0. The published sampling
    script instead resizes first and then scales along the last axis of its *transposed* ``(j, k, i)`` array, which
    is NIfTI axis i (SimpleITK axis 2): ``compat_order="resize-then-scale"`` reproduces that. A constant slice maps
    to 0 (as ``MinMaxScaler`` does). Each slice's minimum and maximum (and the axis) are kept in the
    :class:`NormRecord`, which is what makes the mapping invertible to HU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError

MODES = ("hu-window", "lungddpm-compat")
#: HU range mapped to [-1, 1] by ``hu-window``.
DEFAULT_HU_WINDOW = (-1000.0, 1000.0)
#: ``lungddpm-compat`` orders: the published training scaled native slices and then resized; the published
#: sampling script resized first and scaled the resized slices. Training order is the default because it is
#: what the checkpoint saw.
COMPAT_ORDERS = ("scale-then-resize", "resize-then-scale")
SLICE_AXIS = 0  # axial slice index k in SimpleITK (k, j, i) arrays: the published training's scaling axis
#: The axis the published sampling script scales along after resizing: NIfTI i, SimpleITK axis 2.
SCRIPT_SLICE_AXIS = 2


@dataclass
class NormRecord:
    """Parameters of one normalisation, enough to invert it; JSON-serialisable via :meth:`to_dict`."""

    mode: str
    window: Optional[Tuple[float, float]] = None
    slice_min: List[float] = field(default_factory=list)  # lungddpm-compat: per slice along slice_axis
    slice_max: List[float] = field(default_factory=list)
    slice_axis: int = SLICE_AXIS

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["window"] = list(self.window) if self.window is not None else None
        return d

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> NormRecord:
        window = tuple(float(v) for v in data["window"]) if data.get("window") is not None else None
        return cls(
            data["mode"],
            window,
            [float(v) for v in data.get("slice_min", [])],
            [float(v) for v in data.get("slice_max", [])],
            int(data.get("slice_axis", SLICE_AXIS)),
        )


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InputError(f"unknown normalization {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def check_window(window: Tuple[float, float]) -> Tuple[float, float]:
    lo, hi = (float(v) for v in window)
    if not np.isfinite([lo, hi]).all() or hi <= lo:
        raise InputError(f"HU window {window} must be (low, high) with low < high")
    return lo, hi


def window_forward(hu: np.ndarray, window: Tuple[float, float] = DEFAULT_HU_WINDOW) -> Tuple[np.ndarray, NormRecord]:
    """Clip to ``window`` and scale to [-1, 1] (float32, new array)."""
    lo, hi = check_window(window)
    x = np.clip(np.asarray(hu, dtype=np.float32), lo, hi)
    x = (x - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    return x.astype(np.float32, copy=False), NormRecord("hu-window", (lo, hi))


def window_inverse(x: np.ndarray, record: NormRecord) -> np.ndarray:
    """[-1, 1] back to HU (values outside [-1, 1] are clipped first)."""
    lo, hi = record.window
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    return ((x + np.float32(1.0)) * np.float32((hi - lo) / 2.0) + np.float32(lo)).astype(np.float32)


def minmax_per_slice(array: np.ndarray, axis: int = SLICE_AXIS) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale every slice along ``axis`` to [0, 1] on its own; returns ``(scaled, mins, maxs)``.

    Same numbers as ``MinMaxScaler().fit_transform(a.reshape(-1, a.shape[-1]))`` when ``axis`` is last.
    """
    a = np.moveaxis(np.asarray(array, dtype=np.float64), axis, 0)
    flat = a.reshape(a.shape[0], -1)
    mins = flat.min(axis=1)
    maxs = flat.max(axis=1)
    scale = maxs - mins
    scale[scale == 0] = 1.0  # sklearn's _handle_zeros_in_scale: a constant slice becomes 0
    scaled = (a - mins.reshape((-1,) + (1,) * (a.ndim - 1))) / scale.reshape((-1,) + (1,) * (a.ndim - 1))
    return np.moveaxis(scaled, 0, axis).astype(np.float32), mins, maxs


def minmax_inverse(scaled: np.ndarray, mins: np.ndarray, maxs: np.ndarray, axis: int = SLICE_AXIS) -> np.ndarray:
    """Inverse of :func:`minmax_per_slice` (a constant slice returns to its value)."""
    a = np.moveaxis(np.asarray(scaled, dtype=np.float64), axis, 0)
    mins = np.asarray(mins, dtype=np.float64)
    maxs = np.asarray(maxs, dtype=np.float64)
    if len(mins) != a.shape[0] or len(maxs) != a.shape[0]:
        raise InputError(
            f"the record has {len(mins)} slice ranges but the volume has {a.shape[0]} slices; "
            "it belongs to another volume or grid"
        )
    shape = (-1,) + (1,) * (a.ndim - 1)
    out = a * (maxs - mins).reshape(shape) + mins.reshape(shape)
    return np.moveaxis(out, 0, axis).astype(np.float32)


def compat_forward(hu: np.ndarray, axis: int = SLICE_AXIS) -> Tuple[np.ndarray, NormRecord]:
    """Published normalisation of one volume: min-max per slice along ``axis``, then ``x * 2 - 1``."""
    if axis not in (0, 1, 2):
        raise InputError(f"slice axis must be 0, 1 or 2, got {axis!r}")
    scaled, mins, maxs = minmax_per_slice(hu, axis)
    record = NormRecord("lungddpm-compat", None, mins.tolist(), maxs.tolist(), axis)
    return scaled * np.float32(2.0) - np.float32(1.0), record


def compat_inverse(x: np.ndarray, record: NormRecord) -> np.ndarray:
    """[-1, 1] back to HU with the stored per-slice ranges (values clipped to [-1, 1] first)."""
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    mins, maxs = np.asarray(record.slice_min), np.asarray(record.slice_max)
    return minmax_inverse((x + 1.0) / 2.0, mins, maxs, record.slice_axis)


def forward(
    hu: np.ndarray, mode: str, window: Tuple[float, float] = DEFAULT_HU_WINDOW, slice_axis: int = SLICE_AXIS
) -> Tuple[np.ndarray, NormRecord]:
    """HU -> [-1, 1] in ``mode``; returns the normalised array and its record (``slice_axis``: compat only)."""
    return window_forward(hu, window) if check_mode(mode) == "hu-window" else compat_forward(hu, slice_axis)


def inverse(x: np.ndarray, record: NormRecord) -> np.ndarray:
    """[-1, 1] -> HU for a record made by :func:`forward`."""
    return window_inverse(x, record) if check_mode(record.mode) == "hu-window" else compat_inverse(x, record)
