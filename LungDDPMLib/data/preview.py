"""Axial and coronal montages of a CT as PNG, for eyeballing phantoms and results without a viewer.

The PNG encoder is a few lines of ``zlib`` so that previews work in any Python (including Slicer's)
without matplotlib or an imaging plug-in. Coronal slices are resampled to square millimetres, otherwise
anisotropic volumes look squashed and realism cannot be judged.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..config import is_nodule
from ..errors import InputError

#: Common display windows as (level, width) in HU.
WINDOWS = {"lung": (-600.0, 1500.0), "mediastinum": (40.0, 400.0), "bone": (400.0, 1800.0)}


def write_png(path: Union[str, Path], image: np.ndarray) -> Path:
    """Write an 8-bit grey (H, W) or RGB (H, W, 3) array as PNG."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim == 2:
        colour_type, rows = 0, image
    elif image.ndim == 3 and image.shape[2] == 3:
        colour_type, rows = 2, image.reshape(image.shape[0], -1)
    else:
        raise InputError(f"write_png needs an (H, W) or (H, W, 3) array, got {image.shape}")
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", image.shape[1], image.shape[0], 8, colour_type, 0, 0, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    )
    return path


def apply_window(hu: np.ndarray, window: Union[str, Tuple[float, float]]) -> np.ndarray:
    level, width = WINDOWS[window] if isinstance(window, str) else window
    lo = level - width / 2.0
    return (np.clip((hu.astype(np.float32) - lo) / width, 0, 1) * 255 + 0.5).astype(np.uint8)


def _overlay(grey: np.ndarray, labels: Optional[np.ndarray]) -> np.ndarray:
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if labels is None:
        return rgb
    edge = labels != ndi.grey_erosion(labels, size=3)
    rgb[edge & is_nodule(labels)] = (255, 60, 60)
    return rgb


def montage(
    ct: sitk.Image,
    path: Union[str, Path],
    window: Union[str, Tuple[float, float]] = "lung",
    n_axial: int = 6,
    n_coronal: int = 4,
    layout: Optional[sitk.Image] = None,
    fractions: Optional[Sequence[float]] = None,
) -> Path:
    """Save a PNG with a row of axial slices and a row of coronal slices (nodule outlines in red).

    Axial slices are shown in the radiological view of an LPS volume with identity direction (patient's
    right on the left, anterior on top); coronal slices have superior on top.
    """
    arr = sitk.GetArrayFromImage(ct)
    if arr.ndim != 3:
        raise InputError(f"montage needs a 3D image, got shape {arr.shape}")
    lab = sitk.GetArrayFromImage(layout) if layout is not None else None
    sx, _, sz = ct.GetSpacing()
    nz, ny, _ = arr.shape
    fr = list(fractions) if fractions is not None else list(np.linspace(0.15, 0.9, n_axial))
    tiles_ax = []
    for f in fr:
        k = round(float(f) * (nz - 1))
        tiles_ax.append(_overlay(apply_window(arr[k], window), None if lab is None else lab[k]))
    tiles_co = []
    for f in np.linspace(0.35, 0.65, n_coronal):
        j = round(float(f) * (ny - 1))
        sl = arr[::-1, j, :]
        zoom = (sz / sx, 1.0)
        img = ndi.zoom(sl.astype(np.float32), zoom, order=1)
        ls = None if lab is None else ndi.zoom(lab[::-1, j, :], zoom, order=0)
        tiles_co.append(_overlay(apply_window(img, window), ls))

    def row(tiles):
        h = max(t.shape[0] for t in tiles)
        padded = [np.pad(t, ((0, h - t.shape[0]), (0, 4), (0, 0))) for t in tiles]
        return np.concatenate(padded, axis=1)

    rows = [row(tiles_ax), row(tiles_co)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return write_png(path, np.concatenate(rows, axis=0))
