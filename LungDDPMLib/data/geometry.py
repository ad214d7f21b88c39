"""Where a volume's voxels are in patient space, captured from every input so that outputs land on its grid.

Precision: NRRD and MetaImage store geometry as decimal text and round-trip to ~1e-15; NIfTI stores it in
float32, so spacing/origin/direction round-trip to ~1e-7 relative (hence the tolerance of :meth:`Geometry.matches`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputError


@dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels are in patient space (SimpleITK conventions, LPS, (x, y, z) order)."""

    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        return cls(
            tuple(int(v) for v in image.GetSize()),
            tuple(float(v) for v in image.GetSpacing()),
            tuple(float(v) for v in image.GetOrigin()),
            tuple(float(v) for v in image.GetDirection()),
        )

    def apply(self, image: sitk.Image) -> sitk.Image:
        """Stamp this geometry on ``image`` (whose size must match) and return it."""
        if tuple(image.GetSize()) != self.size:
            raise InputError(f"array of size {image.GetSize()} cannot take the geometry of size {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def image_from_array(self, array: np.ndarray) -> sitk.Image:
        """A SimpleITK image from a ``(z, y, x)`` array with this geometry."""
        return self.apply(sitk.GetImageFromArray(np.ascontiguousarray(array)))

    def matches(self, other: Geometry, tol: float = 1e-4) -> bool:
        """Same grid up to ``tol`` (relative for spacing, mm for origin, absolute for direction)."""
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, rtol=tol, atol=0)
            and np.allclose(self.origin, other.origin, atol=tol * max(1.0, max(self.spacing)))
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def index_to_physical(self, index: np.ndarray) -> np.ndarray:
        """Physical points of continuous ``(x, y, z)`` indices, shape (..., 3)."""
        index = np.asarray(index, dtype=np.float64)
        return np.asarray(self.origin) + (index * np.asarray(self.spacing)) @ self.direction_matrix.T

    def physical_bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """Axis-aligned physical box around the voxel centres (for overlap checks and messages)."""
        n = np.asarray(self.size) - 1
        corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], dtype=float)
        pts = self.index_to_physical(corners)
        return pts.min(axis=0), pts.max(axis=0)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Geometry:
        return cls(
            tuple(int(v) for v in data["size"]),
            tuple(float(v) for v in data["spacing"]),
            tuple(float(v) for v in data["origin"]),
            tuple(float(v) for v in data["direction"]),
        )

    def describe(self) -> str:
        lo, hi = self.physical_bounds()
        return (
            f"size {self.size}, spacing {tuple(round(s, 4) for s in self.spacing)} mm, "
            f"extent {np.round(lo, 1).tolist()}..{np.round(hi, 1).tolist()} mm"
        )


def same_geometry(images: Sequence[sitk.Image], tol: float = 1e-4) -> bool:
    first = Geometry.of(images[0])
    return all(first.matches(Geometry.of(img), tol) for img in images[1:])
