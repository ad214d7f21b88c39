"""Training datasets: paired CT/layout files from folders, and phantoms generated on the fly.

Both preprocess each volume once (cached in memory and optionally on disk, because reading, resampling and
phantom generation cost far more than a training step) and then augment on every access with random crops and
flips. ``full`` models get the whole volume on the model grid, as synthesis resamples it; ``roi`` models get, per
access, a patch of the model grid's size at the CT's own spacing around one of the volume's nodules, shifted by up
to a quarter patch and normalised on its own, exactly as synthesis prepares each nodule's patch. Augmentation
draws from a Generator seeded by ``(seed, epoch, index)``, so runs are reproducible and DataLoader workers do not
repeat each other. Items are dicts: ``ct`` float32 ``(1, D, H, W)`` in [-1, 1], ``layout`` int64 ``(D, H, W)`` with
0 background, 1 lung, 2-5 nodule (unstated, solid, part-solid, ground-glass), ``name``, and for models trained
on linearly resized layout channels ``condition`` float32 ``(C, D, H, W)``.
Arrays are in the model's axis order (the same
:func:`~LungDDPMLib.data.pipeline.preprocess` that synthesis uses puts them there), so a model trains on the
orientation it will be sampled with.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage as ndi
from torch.utils.data import Dataset

from ..config import is_nodule
from ..errors import InputError
from .axes import native_grid, permutation, to_model_order
from .context import ROI_MARGIN_MM, condition_channels, near_nodules, uses_ct
from .io import PathLike, read_ct
from .layout import layout_labels, load_layout
from .normalize import DEFAULT_HU_WINDOW, minmax_per_slice
from .normalize import forward as normalize_forward
from .pairing import CT_TAGS, LAYOUT_TAGS, pair_files  # noqa: F401  (re-exported for callers)
from .pipeline import model_options, preprocess
from .plus_crop import choose_cube
from .spatial import PAD_HU, Box, extract

#: Part of every disk-cache key: bump it when preprocessing changes what it produces for the same options.
CACHE_FORMAT = 4
#: How ``roi`` items are cut: ``ours`` (a patch centred on a nodule's box, shifted by up to a quarter patch, scaled on
#: its own) or ``published`` (Lung-DDPM+'s ``dataset.py``: the volume min-max scaled per NIfTI-k slice, then a cube
#: around a random nodule voxel, clipped inside the volume; see :mod:`.plus_crop`).
ROI_CROPS = ("ours", "published")


def model_data_options(config: Any) -> Dict[str, Any]:
    """Dataset options that make training data match what synthesis feeds a model of this ``ModelConfig``
    (grid, intensities, spatial mode, crop, axis order, layout resize and the channels it is conditioned on)."""
    from ..recognition import published_family

    options = model_options(config)
    return {
        "roi_crop": "published" if published_family(config) == "lung-ddpm-plus" else "ours",
        "grid": options.pop("grid"),
        "normalization": options.pop("normalization"),
        "spatial_mode": options.pop("spatial_mode"),
        "preprocess_options": options,
        "layout_channels": tuple(config.unet.layout_channels),
        "untyped_as": config.nodule_types[0] if config.nodule_types else "solid",
    }


class _PreprocessedDataset(Dataset):
    """Shared caching and augmentation; subclasses implement :meth:`_prepare` and :meth:`_cache_key`."""

    def __init__(
        self,
        grid: Sequence[int] = (64, 64, 64),
        normalization: str = "hu-window",
        crop_size: Optional[Sequence[int]] = None,
        nodule_crop_prob: float = 0.8,
        flip_axes: Sequence[int] = (2,),
        flip_prob: float = 0.5,
        seed: int = 0,
        cache_dir: Optional[PathLike] = None,
        cache_in_memory: bool = True,
        preprocess_options: Optional[Dict[str, Any]] = None,
        layout_channels: Sequence[str] = ("lung", "nodule"),
        spatial_mode: str = "full",
        untyped_as: str = "solid",
        roi_crop: str = "ours",
    ) -> None:
        self.grid = tuple(int(g) for g in grid)
        if roi_crop not in ROI_CROPS:
            raise InputError(f"unknown roi_crop {roi_crop!r}; use one of {', '.join(ROI_CROPS)}")
        if roi_crop == "published" and (spatial_mode != "roi" or len(set(self.grid)) != 1):
            raise InputError(f"roi_crop 'published' cuts cubes for roi models; got {spatial_mode} mode, grid {grid}")
        self.roi_crop = roi_crop
        if spatial_mode not in ("full", "roi"):
            raise InputError(f"unknown spatial_mode {spatial_mode!r}; use 'full' or 'roi'")
        if spatial_mode == "roi" and crop_size is not None:
            raise InputError("roi datasets crop a patch of the model grid around a nodule; crop_size does not apply")
        self.spatial_mode = spatial_mode
        self.untyped_as = untyped_as
        if crop_size is not None and (len(crop_size) != 3 or any(c > g or c < 1 for c, g in zip(crop_size, self.grid))):
            raise InputError(f"crop_size {crop_size} must be three sizes no larger than the grid {self.grid}")
        if any(a not in (0, 1, 2) for a in flip_axes):
            raise InputError(f"flip_axes {flip_axes} must be SimpleITK array axes 0 (z, k), 1 (y, j) or 2 (x, i)")
        self.normalization = normalization
        self.crop_size = tuple(int(c) for c in crop_size) if crop_size is not None else None
        self.nodule_crop_prob = float(nodule_crop_prob)
        self.flip_axes = tuple(flip_axes)
        self.flip_prob = float(flip_prob)
        self.seed = int(seed)
        self.epoch = 0
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cache_in_memory = cache_in_memory
        self.preprocess_options = dict(preprocess_options or {})
        self.layout_channels = tuple(layout_channels)
        # Flips are given on the patient's axes (SimpleITK order); the arrays are in the model's order.
        perm = permutation(self.preprocess_options.get("array_order", "kji"))
        self._model_flip_axes = tuple(perm.index(a) for a in self.flip_axes)
        self._memory: Dict[int, Tuple[np.ndarray, ...]] = {}

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (call once per epoch)."""
        self.epoch = int(epoch)

    # ---- to implement ----------------------------------------------------------------------------------
    def _prepare(self, index: int) -> Tuple[Any, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _cache_key(self, index: int) -> Dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def name(self, index: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- caching -----------------------------------------------------------------------------------------
    def _roi_grid(self) -> Tuple[int, int, int]:
        """The patch in native voxels, SimpleITK order (z, y, x)."""
        return tuple(int(g) for g in native_grid(self.grid, self.preprocess_options.get("array_order", "kji")))

    def _preprocess(self, ct, layout) -> Tuple[np.ndarray, ...]:
        if self.roi_crop == "published":
            return self._preprocess_published(ct, layout)
        if self.spatial_mode == "roi":
            return self._preprocess_roi(ct, layout)
        options = {"crop": "volume", "window": DEFAULT_HU_WINDOW, **self.preprocess_options}
        items, _ = preprocess(ct, layout, self.normalization, "full", self.grid, **options)
        channels = items[0].condition(self.layout_channels)
        return (items[0].ct, items[0].layout) + (() if channels is None else (channels,))

    def _preprocess_published(self, ct, layout) -> Tuple[np.ndarray, ...]:
        """``dataset.read_image``: the whole CT min-max scaled per NIfTI-k slice (SimpleITK axis 0) to [0, 1]."""
        labels = layout_labels(layout)
        if not is_nodule(labels).any():
            raise InputError("an roi model trains on nodule-centred patches, but this case has no nodule")
        scaled, _, _ = minmax_per_slice(sitk.GetArrayViewFromImage(ct), axis=0)
        return scaled, labels.astype(np.uint8), np.asarray(ct.GetSpacing()[::-1], dtype=np.float64)

    def _published_item(self, arrays: Tuple[np.ndarray, ...], rng: np.random.Generator) -> Tuple[np.ndarray, ...]:
        """``dataset.__getitem__`` for two input channels: the cube around a random nodule voxel, ``* 2 - 1``."""
        cube = choose_cube(arrays[1], self.grid[0], rng)
        sl = cube.slices_zyx()
        order = self.preprocess_options.get("array_order", "kji")
        x = arrays[0][sl] * np.float32(2.0) - np.float32(1.0)
        labels = to_model_order(arrays[1][sl], order)
        window = self.preprocess_options.get("window", DEFAULT_HU_WINDOW)
        out = (to_model_order(x, order), labels)
        return (*out, condition_channels(self.layout_channels, labels, out[0], None, self.untyped_as, window))

    def _preprocess_roi(self, ct, layout) -> Tuple[np.ndarray, ...]:
        """Per nodule, the HU and labels of a box a quarter patch larger on every side than the patch, centred on
        the nodule's bounding box, padded like synthesis pads (stacked: ``(N, z, y, x)``). Normalisation waits for
        the final crop, because per-patch normalisations depend on the crop."""
        hu = sitk.GetArrayViewFromImage(ct).astype(np.float32)
        labels = layout_labels(layout)
        components, n = ndi.label(is_nodule(labels))
        if n == 0:
            raise InputError("an roi model trains on nodule-centred patches, but this case has no nodule")
        patch = np.asarray(self._roi_grid())
        size = patch + 2 * (patch // 4)
        cts, lays = [], []
        for box in ndi.find_objects(components):
            centre = np.array([(b.start + b.stop) / 2.0 for b in box])
            start = np.floor(centre - size / 2.0 + 0.5).astype(int)
            crop = Box(tuple(int(v) for v in start[::-1]), tuple(int(v) for v in size[::-1]))
            cts.append(extract(hu, crop, PAD_HU))
            lays.append(extract(labels, crop, 0))
        spacing_zyx = np.asarray(ct.GetSpacing()[::-1], dtype=np.float64)  # for the regenerated region of CT channels
        return np.stack(cts).astype(np.float32), np.stack(lays).astype(np.uint8), spacing_zyx

    def _roi_item(self, arrays: Tuple[np.ndarray, ...], rng: np.random.Generator) -> Tuple[np.ndarray, ...]:
        """One patch around a random nodule of the volume, shifted by up to a quarter patch, in model order."""
        patch = np.asarray(self._roi_grid())
        k = int(rng.integers(arrays[0].shape[0]))
        offset = [int(rng.integers(0, 2 * (p // 4) + 1)) for p in patch]
        sl = tuple(slice(o, o + p) for o, p in zip(offset, patch))
        hu, labels = arrays[0][k][sl], arrays[1][k][sl]
        window = self.preprocess_options.get("window", DEFAULT_HU_WINDOW)
        x, _ = normalize_forward(hu, self.normalization, window)
        order = self.preprocess_options.get("array_order", "kji")
        out = (to_model_order(np.clip(x, -1.0, 1.0).astype(np.float32), order), to_model_order(labels, order))
        if uses_ct(self.layout_channels) or self.preprocess_options.get("layout_resize") == "channels-linear":
            # Channels built from the patch exactly as synthesis builds them: native patches are not resized, so the
            # published linear resize leaves layout channels exact; CT channels see nodules + ROI_MARGIN_MM redrawn.
            regenerated = None
            if uses_ct(self.layout_channels):
                regenerated = to_model_order(near_nodules(labels, arrays[2], ROI_MARGIN_MM), order)
            channels = condition_channels(self.layout_channels, out[1], out[0], regenerated, self.untyped_as, window)
            out = (*out, channels)
        return out

    def _cache_path(self, index: int) -> Path:
        key = {
            "format": CACHE_FORMAT,
            "spatial_mode": self.spatial_mode,
            "grid": self.grid,
            "normalization": self.normalization,
            "options": self.preprocess_options,
            "layout_channels": self.layout_channels,
            **({"roi_crop": self.roi_crop} if self.roi_crop != "ours" else {}),
            **self._cache_key(index),
        }
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return self.cache_dir / f"{self.name(index)}-{digest}.npz"

    def arrays(self, index: int) -> Tuple[np.ndarray, ...]:
        """Preprocessed (not augmented) CT and layout of item ``index`` (and its layout channels, if any)."""
        if index in self._memory:
            return self._memory[index]
        path = self._cache_path(index) if self.cache_dir is not None else None
        names = ("ct", "layout", "spacing") if self.spatial_mode == "roi" else ("ct", "layout", "condition")
        if path is not None and path.exists():
            with np.load(path) as data:
                arrays = tuple(data[n] for n in names if n in data)
        else:
            arrays = self._preprocess(*self._prepare(index))
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npz")
                np.savez_compressed(tmp, **dict(zip(names, arrays)))
                tmp.replace(path)
        if self.cache_in_memory:
            self._memory[index] = arrays
        return arrays

    # ---- augmentation --------------------------------------------------------------------------------------
    def _crop(self, arrays: Tuple[np.ndarray, ...], rng: np.random.Generator) -> Tuple[np.ndarray, ...]:
        """The same random box of every array (the last three axes), centred near a nodule with probability
        ``nodule_crop_prob``."""
        layout = arrays[1]
        size = np.asarray(self.crop_size)
        shape = np.asarray(layout.shape)
        nodules = np.argwhere(is_nodule(layout)) if rng.random() < self.nodule_crop_prob else np.zeros((0, 3))
        if len(nodules):
            centre = nodules[rng.integers(len(nodules))] + rng.integers(-(size // 4), size // 4 + 1)
        else:
            centre = np.array([rng.integers(0, n) for n in shape])
        start = np.clip(centre - size // 2, 0, shape - size)
        sl = (Ellipsis, *(slice(int(a), int(a + n)) for a, n in zip(start, size)))
        return tuple(a[sl] for a in arrays)

    #: The trainer's sampler may pass ``(index, epoch)`` so that crops and flips change every epoch even in
    #: DataLoader worker processes, which never see :meth:`set_epoch` calls made in the main process.
    accepts_epoch = True

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        if not 0 <= index < len(self):
            raise IndexError(index)
        arrays = self.arrays(index)
        rng = np.random.default_rng([self.seed, epoch, index])
        if self.roi_crop == "published":
            arrays = self._published_item(arrays, rng)
        elif self.spatial_mode == "roi":
            arrays = self._roi_item(arrays, rng)
        elif self.crop_size is not None:
            arrays = self._crop(arrays, rng)
        for axis in self._model_flip_axes:
            if rng.random() < self.flip_prob:
                arrays = tuple(np.flip(a, a.ndim - 3 + axis) for a in arrays)
        item = {
            "ct": torch.from_numpy(np.ascontiguousarray(arrays[0], dtype=np.float32)[None]),
            "layout": torch.from_numpy(np.ascontiguousarray(arrays[1]).astype(np.int64)),
            "name": self.name(index),
        }
        if len(arrays) > 2:
            item["condition"] = torch.from_numpy(np.ascontiguousarray(arrays[2], dtype=np.float32))
        return item


class PairedFolderDataset(_PreprocessedDataset):
    """CT/layout pairs from folders (see :func:`pair_files`), layouts read like the CLI reads them."""

    def __init__(
        self,
        ct_dir: PathLike,
        layout_dir: Optional[PathLike] = None,
        lung_labels: Union[int, Sequence[int], None] = None,
        nodule_labels: Union[int, Sequence[int], None] = None,
        auto_lung: str = "if-missing",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pairs = pair_files(ct_dir, layout_dir)
        self.lung_labels, self.nodule_labels, self.auto_lung = lung_labels, nodule_labels, auto_lung

    def __len__(self) -> int:
        return len(self.pairs)

    def name(self, index: int) -> str:
        return self.pairs[index][0]

    def _prepare(self, index: int):
        _, ct_path, layout_path = self.pairs[index]
        ct = read_ct(ct_path)
        return ct, load_layout(layout_path, ct, self.lung_labels, self.nodule_labels, auto_lung=self.auto_lung)

    def _cache_key(self, index: int) -> Dict[str, Any]:
        out = {"labels": [self.lung_labels, self.nodule_labels, self.auto_lung]}
        for role, path in zip(("ct", "layout"), self.pairs[index][1:]):
            st = path.stat()
            out[role] = [str(path.resolve()), st.st_size, st.st_mtime_ns]
        return out


class PhantomDataset(_PreprocessedDataset):
    """``length`` phantoms, phantom ``i`` generated with seed ``base_seed + i`` (on first access)."""

    def __init__(
        self,
        length: int,
        phantom_size: Sequence[int] = (128, 128, 80),
        phantom_spacing: Sequence[float] = (1.6, 1.6, 3.0),
        base_seed: int = 0,
        nodules: Any = None,
        nodule_mix: Optional[Dict[str, float]] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.nodule_mix = dict(nodule_mix) if nodule_mix else None
        if length < 1:
            raise InputError(f"PhantomDataset length must be >= 1, got {length}")
        self.length = int(length)
        self.phantom_size = tuple(int(v) for v in phantom_size)
        self.phantom_spacing = tuple(float(v) for v in phantom_spacing)
        self.base_seed = int(base_seed)
        self.nodules = nodules

    def __len__(self) -> int:
        return self.length

    def name(self, index: int) -> str:
        return f"phantom{self.base_seed + index:05d}"

    def _prepare(self, index: int):
        from ..phantom import make_phantom

        ph = make_phantom(
            self.phantom_size,
            self.phantom_spacing,
            seed=self.base_seed + index,
            nodules=self.nodules,
            nodule_mix=self.nodule_mix,
        )
        return ph.ct, ph.layout

    def _cache_key(self, index: int) -> Dict[str, Any]:
        key = {"phantom": [self.phantom_size, self.phantom_spacing, self.base_seed + index, repr(self.nodules)]}
        if self.nodule_mix:
            key["nodule_mix"] = self.nodule_mix
        return key
