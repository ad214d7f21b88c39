"""The phantom's coordinate frame: voxel grid, physical millimetres and the body-size scale.

All phantom anatomy is written in *adult millimetres* and scaled to the field of view, so that one
description serves a 256-voxel demo volume and a 96-voxel test volume alike; nodules and vessel radii, on
the other hand, stay in real millimetres because their size is what users ask for.

Conventions (shared by every phantom module):
    * arrays are SimpleITK order ``(z, y, x)``;
    * physical axes are DICOM LPS with an identity direction: ``x`` grows toward the patient's left,
      ``y`` toward posterior, ``z`` toward superior, so an axial slice displayed with row 0 on top is in
      the usual radiological view (patient's right on the image left, anterior on top);
    * points are ``numpy`` arrays ``(z_mm, y_mm, x_mm)`` with the volume centre at the origin;
    * ``w`` is the height as a fraction of the volume (0 = most inferior slice, 1 = most superior).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

#: Half width (x) of the adult chest the anatomy constants are written for, in mm.
ADULT_HALF_WIDTH_MM = 165.0
#: Craniocaudal extent the anatomy fractions (``w``) were tuned for, in mm.
ADULT_HEIGHT_MM = 300.0


@dataclass(frozen=True)
class Frame:
    """Grid geometry plus the scale factors that map adult millimetres onto this field of view.

    Attributes:
        shape: array shape ``(nz, ny, nx)``.
        spacing: voxel size in mm, array order ``(sz, sy, sx)``.
        scale: in-plane factor applied to every adult anatomical length (x and y).
        scale_z: factor for craniocaudal anatomical lengths (vertebra height, disc thickness...).
    """

    shape: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    scale: float
    scale_z: float

    @classmethod
    def create(cls, shape: Tuple[int, int, int], spacing: Tuple[float, float, float]) -> Frame:
        """Fit an adult-proportioned body into the field of view (at most adult size, 92 % of the width)."""
        nz, ny, nx = shape
        sz, sy, sx = spacing
        half_width = min(ADULT_HALF_WIDTH_MM, 0.46 * nx * sx, 0.46 * ny * sy / 0.70)
        scale = half_width / ADULT_HALF_WIDTH_MM
        scale_z = nz * sz / ADULT_HEIGHT_MM
        return cls(tuple(int(v) for v in shape), tuple(float(v) for v in spacing), scale, scale_z)

    # ---- coordinate axes (broadcastable) -------------------------------------------------------------
    def axis_mm(self, axis: int) -> np.ndarray:
        """Physical coordinate of every index along ``axis`` (0 = z, 1 = y, 2 = x), centred on the volume."""
        n = self.shape[axis]
        return ((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * self.spacing[axis]).astype(np.float32)

    @property
    def z(self) -> np.ndarray:
        return self.axis_mm(0)[:, None, None]

    @property
    def y(self) -> np.ndarray:
        return self.axis_mm(1)[None, :, None]

    @property
    def x(self) -> np.ndarray:
        return self.axis_mm(2)[None, None, :]

    @property
    def w(self) -> np.ndarray:
        """Height fraction per slice, shape ``(nz, 1, 1)``."""
        nz = self.shape[0]
        return (np.arange(nz, dtype=np.float32) / max(nz - 1, 1))[:, None, None]

    @property
    def height_mm(self) -> float:
        return self.shape[0] * self.spacing[0]

    @property
    def voxel_mm(self) -> float:
        """Mean voxel edge, used to turn distances into partial-volume fractions."""
        return float(np.cbrt(np.prod(self.spacing)))

    # ---- conversions ---------------------------------------------------------------------------------
    def point(self, x_adult: float, y_adult: float, w: float) -> np.ndarray:
        """A landmark given in adult mm (x, y) and height fraction, as a physical ``(z, y, x)`` point."""
        z_mm = (w - 0.5) * (self.shape[0] - 1) * self.spacing[0]
        return np.array([z_mm, y_adult * self.scale, x_adult * self.scale], dtype=np.float64)

    def w_to_mm(self, w: float) -> float:
        return (w - 0.5) * (self.shape[0] - 1) * self.spacing[0]

    def to_index(self, point: np.ndarray) -> np.ndarray:
        """Continuous array index of a physical ``(z, y, x)`` point."""
        centre = (np.asarray(self.shape, dtype=np.float64) - 1) / 2.0
        return np.asarray(point, dtype=np.float64) / np.asarray(self.spacing) + centre

    def to_mm(self, index: np.ndarray) -> np.ndarray:
        centre = (np.asarray(self.shape, dtype=np.float64) - 1) / 2.0
        return (np.asarray(index, dtype=np.float64) - centre) * np.asarray(self.spacing)

    def box(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> Tuple[slice, slice, slice]:
        """Index slices covering the physical box ``[lo, hi]`` (clipped to the volume; may be empty)."""
        lo = np.floor(self.to_index(lo_mm)).astype(int)
        hi = np.ceil(self.to_index(hi_mm)).astype(int) + 1
        lo = np.clip(lo, 0, self.shape)
        hi = np.clip(hi, 0, self.shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))

    def box_coords(self, box: Tuple[slice, slice, slice]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable physical coordinates ``(z, y, x)`` of the voxels in ``box``."""
        return (
            self.axis_mm(0)[box[0]][:, None, None],
            self.axis_mm(1)[box[1]][None, :, None],
            self.axis_mm(2)[box[2]][None, None, :],
        )

    def origin_xyz(self) -> Tuple[float, float, float]:
        """SimpleITK origin (x, y, z) of voxel (0, 0, 0) so that physical coordinates match ``axis_mm``."""
        return tuple(float(self.axis_mm(a)[0]) for a in (2, 1, 0))

    def spacing_xyz(self) -> Tuple[float, float, float]:
        return (self.spacing[2], self.spacing[1], self.spacing[0])
