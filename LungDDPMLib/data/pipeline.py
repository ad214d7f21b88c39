"""Preprocessing for the model and its inverse, with a JSON record of every parameter.

``preprocess`` turns a CT and its layout into model inputs: one item in ``full`` mode, one per nodule patch
in ``roi`` mode, each a float32 ``(D, H, W)`` CT in [-1, 1] plus a uint8 layout on the model grid (and, for
models trained on linearly resized layout channels, those channels), in the model's axis order
(:mod:`LungDDPMLib.data.axes`). ``postprocess`` takes the model's outputs back to HU on the native grid and
composites them into the original CT. The :class:`PreprocessRecord` in between holds everything needed for the
inverse (boxes, grid geometry, HU window or per-slice ranges, axis order); it is plain JSON, so it can be stored
as provenance with the result and the inverse can run in another process.

Arrays are SimpleITK order ``(k, j, i)`` = ``(z, y, x)`` up to the moment they are handed to the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..config import AXIS_ORDERS, LABEL_LUNG, LAYOUT_CHANNELS, LAYOUT_RESIZES, is_nodule
from ..errors import InputError
from . import normalize as N
from .axes import from_model_order, native_grid, to_model_order
from .io import Geometry
from .layout import layout_labels
from .spatial import (
    PAD_HU,
    Box,
    composite,
    crop_geometry,
    extract,
    full_box,
    grid_geometry,
    layout_region,
    lung_box,
    nodule_boxes,
    resample,
)

RECORD_VERSION = 1
SPATIAL_MODES = ("full", "roi")
CROPS = ("volume", "lung")


@dataclass
class PatchRecord:
    box: Box
    grid_geometry: Geometry
    norm: N.NormRecord
    nodule_ids: List[int] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "start": list(self.box.start),
            "size": list(self.box.size),
            "grid_geometry": self.grid_geometry.to_dict(),
            "norm": self.norm.to_dict(),
            "nodule_ids": list(self.nodule_ids),
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> PatchRecord:
        return cls(
            Box(tuple(d["start"]), tuple(d["size"])),
            Geometry.from_dict(d["grid_geometry"]),
            N.NormRecord.from_dict(d["norm"]),
            list(d.get("nodule_ids", [])),
        )


@dataclass
class PreprocessRecord:
    """Everything :func:`preprocess` did, to undo it and to document a result."""

    normalization: str
    spatial_mode: str
    grid: Tuple[int, int, int]
    native: Geometry
    pixel_type: str
    patches: List[PatchRecord]
    compat_order: str = N.COMPAT_ORDERS[0]
    crop: str = "volume"
    margin_mm: float = 0.0
    roi_merge: bool = True
    array_order: str = "kji"
    layout_resize: str = "labels-nearest"
    version: int = RECORD_VERSION

    def to_dict(self) -> Dict[str, Any]:
        return {
            "version": self.version,
            "normalization": self.normalization,
            "spatial_mode": self.spatial_mode,
            "grid": list(self.grid),
            "native": self.native.to_dict(),
            "pixel_type": self.pixel_type,
            "compat_order": self.compat_order,
            "crop": self.crop,
            "margin_mm": self.margin_mm,
            "roi_merge": self.roi_merge,
            "array_order": self.array_order,
            "layout_resize": self.layout_resize,
            "patches": [p.to_dict() for p in self.patches],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> PreprocessRecord:
        if d.get("version") != RECORD_VERSION:
            raise InputError(
                f"preprocessing record version {d.get('version')} is not supported (expected {RECORD_VERSION})"
            )
        return cls(
            d["normalization"],
            d["spatial_mode"],
            tuple(int(g) for g in d["grid"]),
            Geometry.from_dict(d["native"]),
            d["pixel_type"],
            [PatchRecord.from_dict(p) for p in d["patches"]],
            d.get("compat_order", N.COMPAT_ORDERS[0]),
            d.get("crop", "volume"),
            float(d.get("margin_mm", 0.0)),
            bool(d.get("roi_merge", True)),
            d.get("array_order", "kji"),
            d.get("layout_resize", "labels-nearest"),
        )

    @classmethod
    def from_json(cls, text: str) -> PreprocessRecord:
        return cls.from_dict(json.loads(text))


@dataclass
class ModelInput:
    """One item for the model, in its axis order on its grid ``(D, H, W)``.

    Attributes:
        ct: float32 CT in [-1, 1].
        layout: uint8 labels (0 background, 1 lung, 2-5 nodule: unstated, solid, part-solid, ground-glass), resized
            with nearest neighbour.
        patch: index of the patch in the record.
        channels: ``channels-linear`` models only: float32 ``(len(LAYOUT_CHANNELS), D, H, W)``, each layout channel
            (label == 1, label == 2) resized linearly and mapped to [-1, 1] as published; ``None`` otherwise.
    """

    ct: np.ndarray
    layout: np.ndarray
    patch: int
    channels: Optional[np.ndarray] = None

    def condition(self, names: Sequence[str]) -> Optional[np.ndarray]:
        """The named layout channels (e.g. a model's ``unet.layout_channels``), or ``None`` without channels."""
        if self.channels is None:
            return None
        return np.ascontiguousarray(self.channels[[LAYOUT_CHANNELS.index(n) for n in names]])


def linear_channels(labels: np.ndarray, src: Geometry, dst: Geometry) -> np.ndarray:
    """Layout channels as the published code makes them: ``(label == value)`` as float64, resized linearly,
    cast to float32, then ``* 2 - 1`` in float32 (that order decides which voxels are exactly -1)."""
    masks = {"lung": labels == LABEL_LUNG, "nodule": is_nodule(labels)}
    out = []
    for name in LAYOUT_CHANNELS:
        mask = masks[name].astype(np.float64)
        resized = resample(mask, src, dst, linear=True, fill=0.0).astype(np.float32)
        out.append(resized * np.float32(2.0) - np.float32(1.0))
    return np.stack(out)


def _check(normalization: str, spatial_mode: str, grid: Sequence[int], crop: str, compat_order: str) -> None:
    N.check_mode(normalization)
    if spatial_mode not in SPATIAL_MODES:
        raise InputError(f"unknown spatial_mode {spatial_mode!r}; choose one of {', '.join(SPATIAL_MODES)}")
    if len(grid) != 3 or any(int(g) < 2 for g in grid):
        raise InputError(f"grid must be three sizes (D, H, W) >= 2, got {tuple(grid)}")
    if crop not in CROPS:
        raise InputError(f"unknown crop {crop!r}; choose one of {', '.join(CROPS)}")
    if compat_order not in N.COMPAT_ORDERS:
        raise InputError(f"unknown compat_order {compat_order!r}; choose one of {', '.join(N.COMPAT_ORDERS)}")


def model_options(config: Any) -> Dict[str, Any]:
    """The :func:`preprocess` arguments that a :class:`~LungDDPMLib.config.ModelConfig` fixes: what the network
    was trained on (grid, intensities, crop, axis order, layout resize). Synthesis and the training datasets
    (``full`` mode) both take them from here, and the trainer refuses a dataset prepared otherwise."""
    return {
        "normalization": config.normalization,
        "spatial_mode": config.spatial_mode,
        "grid": tuple(config.grid),
        "crop": config.crop,
        "margin_mm": config.crop_margin_mm,
        "array_order": config.array_order,
        "layout_resize": config.layout_resize,
    }


def preprocess(
    ct: sitk.Image,
    layout: sitk.Image,
    normalization: str = "lungddpm-compat",
    spatial_mode: str = "full",
    grid: Sequence[int] = (128, 128, 128),
    crop: str = "volume",
    margin_mm: float = 10.0,
    window: Tuple[float, float] = N.DEFAULT_HU_WINDOW,
    compat_order: str = N.COMPAT_ORDERS[0],
    roi_merge: bool = True,
    array_order: str = "kji",
    layout_resize: str = "labels-nearest",
) -> Tuple[List[ModelInput], PreprocessRecord]:
    """CT (HU) + layout on the same grid -> model inputs and the record that inverts them.

    Args:
        grid: model grid ``(D, H, W)``; in ``roi`` mode also the patch size in native voxels.
        crop: ``full`` mode only: ``volume`` (whole image, as published) or ``lung`` (layout bounding box
            plus ``margin_mm``).
        compat_order: ``lungddpm-compat`` only: ``scale-then-resize`` (published training: per axial slice k at
            the native grid) or ``resize-then-scale`` (published sampling script: per NIfTI-i slice of the resized
            volume).
        roi_merge: ``roi`` mode: nodules that fit one patch share it.
        array_order: the model's axis order (``kji`` ours, ``ikj`` published); see :mod:`LungDDPMLib.data.axes`.
        layout_resize: ``labels-nearest`` or ``channels-linear`` (also fills :attr:`ModelInput.channels`).
    Example:
        >>> from LungDDPMLib.phantom import make_phantom
        >>> ph = make_phantom((40, 36, 28), (2.0, 2.0, 3.0), seed=0)
        >>> items, rec = preprocess(ph.ct, ph.layout, grid=(32, 32, 32), array_order="ikj",
        ...                         layout_resize="channels-linear")
        >>> items[0].ct.shape, items[0].channels.shape, rec.array_order
        ((32, 32, 32), (2, 32, 32, 32), 'ikj')
    """
    _check(normalization, spatial_mode, grid, crop, compat_order)
    if array_order not in AXIS_ORDERS:
        raise InputError(f"unknown array_order {array_order!r}; choose one of {', '.join(AXIS_ORDERS)}")
    if layout_resize not in LAYOUT_RESIZES:
        raise InputError(f"unknown layout_resize {layout_resize!r}; choose one of {', '.join(LAYOUT_RESIZES)}")
    native = Geometry.of(ct)
    if not Geometry.of(layout).matches(native, tol=1e-5):
        raise InputError("the layout is not on the CT grid; resample it first (data.layout.load_layout does)")
    hu = sitk.GetArrayViewFromImage(ct).astype(np.float32)
    lay = layout_labels(layout)
    grid = tuple(int(g) for g in grid)
    grid_kji = native_grid(grid, array_order)  # resampled in SimpleITK order, then permuted for the model
    if spatial_mode == "full":
        boxes = [(full_box(native.size) if crop == "volume" else lung_box(lay, native.spacing, margin_mm), [])]
    else:
        boxes = nodule_boxes(lay, grid_kji[::-1], roi_merge)
    items, patches = [], []
    for index, (box, ids) in enumerate(boxes):
        crop_geo = crop_geometry(native, box)
        grid_geo = grid_geometry(crop_geo, grid_kji)
        ct_crop = extract(hu, box, PAD_HU)
        lay_crop = extract(lay, box, 0)
        lay_grid = resample(lay_crop, crop_geo, grid_geo, linear=False)
        if normalization == "lungddpm-compat" and compat_order == "resize-then-scale":
            resized = resample(ct_crop, crop_geo, grid_geo, linear=True, fill=PAD_HU)
            x, norm = N.forward(resized, normalization, slice_axis=N.SCRIPT_SLICE_AXIS)
        else:
            x, norm = N.forward(ct_crop, normalization, window)
            x = resample(x, crop_geo, grid_geo, linear=True, fill=-1.0)
        channels = linear_channels(lay_crop, crop_geo, grid_geo) if layout_resize == "channels-linear" else None
        items.append(
            ModelInput(
                to_model_order(np.clip(x, -1.0, 1.0).astype(np.float32), array_order),
                to_model_order(lay_grid, array_order),
                index,
                None if channels is None else to_model_order(channels, array_order),
            )
        )
        patches.append(PatchRecord(box, grid_geo, norm, ids))
    record = PreprocessRecord(
        normalization,
        spatial_mode,
        grid,
        native,
        ct.GetPixelIDTypeAsString(),
        patches,
        compat_order,
        crop if spatial_mode == "full" else "roi",
        float(margin_mm),
        bool(roi_merge),
        array_order,
        layout_resize,
    )
    return items, record


def to_native_hu(output: np.ndarray, record: PreprocessRecord, patch: int = 0) -> np.ndarray:
    """One model output ``(D, H, W)`` in [-1, 1], in the model's axis order -> HU on its native box ``(z, y, x)``."""
    p = record.patches[patch]
    if tuple(output.shape) != tuple(record.grid):
        raise InputError(f"model output has shape {tuple(output.shape)}, the record expects {record.grid}")
    crop_geo = crop_geometry(record.native, p.box)
    x = from_model_order(np.clip(np.asarray(output, dtype=np.float32), -1.0, 1.0), record.array_order)
    if record.normalization == "lungddpm-compat" and record.compat_order == "resize-then-scale":
        return resample(N.inverse(x, p.norm), p.grid_geometry, crop_geo, linear=True, fill=PAD_HU)
    return N.inverse(resample(x, p.grid_geometry, crop_geo, linear=True, fill=-1.0), p.norm)


def _owned(components: np.ndarray, ids: Sequence[int], spacing_zyx: Sequence[float]) -> np.ndarray:
    """Voxels whose nearest nodule (component label, 0 = none) is one of ``ids``."""
    if not components.any():
        return np.ones(components.shape, bool)
    nearest = ndi.distance_transform_edt(components == 0, sampling=spacing_zyx, return_distances=False,
                                         return_indices=True)  # fmt: skip
    return np.isin(components[tuple(nearest)], list(ids))


def postprocess(
    outputs: Sequence[np.ndarray],
    record: PreprocessRecord,
    original: sitk.Image,
    layout: sitk.Image,
    feather_mm: float = 0.0,
    region: Optional[np.ndarray] = None,
) -> sitk.Image:
    """Model outputs -> HU at the original geometry, composited into the original CT.

    The original CT is kept bit-exact outside ``region`` (default: the layout's lung and nodules, limited
    to the patches that were synthesised); the result has the original's pixel type and geometry.
    """
    if len(outputs) != len(record.patches):
        raise InputError(f"{len(outputs)} model output(s) for {len(record.patches)} patch(es) in the record")
    if not Geometry.of(original).matches(record.native, tol=1e-5):
        raise InputError("the original CT is not the one this record was made from (different geometry)")
    shape = record.native.size[::-1]
    synthetic = np.zeros(shape, dtype=np.float32)
    coverage = np.zeros(shape, dtype=bool)
    components = None
    if any(p.nodule_ids for p in record.patches):
        components = ndi.label(is_nodule(sitk.GetArrayViewFromImage(layout)))[0]
    for i, out in enumerate(outputs):
        patch = record.patches[i]
        hu = to_native_hu(np.asarray(out), record, i)[patch.box.slices_zyx(shape)[1]]
        vol = patch.box.slices_zyx(shape)[0]
        write = np.ones(hu.shape, bool)
        if components is not None and patch.nodule_ids:
            # A patch also draws the pieces of neighbouring nodules its box cuts; where patches overlap, each voxel
            # comes from the patch of the nodule nearest to it, which drew that nodule whole.
            write = ~coverage[vol] | _owned(components[vol], patch.nodule_ids, record.native.spacing[::-1])
        synthetic[vol][write] = hu[write]
        coverage[vol] |= True
    if region is None:
        region = layout_region(sitk.GetArrayViewFromImage(layout))
    return composite(original, synthetic, region, feather_mm, coverage)
