"""What the trainer reads: the (CT, layout) item format, a tiny in-memory dataset, a toy set, and the data order.

Any ``torch.utils.data.Dataset`` whose items are ``{"ct": float32 (1, D, H, W) in [-1, 1], "layout": long (D, H, W)}``
can be trained on; real folder and phantom datasets produce the same items. The order in which items are drawn is
owned by :class:`StreamSampler`, a pure function of (seed, epoch, position), so a resumed run continues exactly
where it stopped and every process of a distributed run reads its own shard.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..config import LABEL_BACKGROUND, LABEL_LUNG, LABEL_NODULE, LAYOUT_LABELS, ModelConfig
from ..errors import InputError

ArrayLike = Union[np.ndarray, torch.Tensor]
#: Intensities of the toy set, per label: background, lung, nodule (normalised CT units).
TOY_VALUES = {LABEL_BACKGROUND: -0.6, LABEL_LUNG: -0.2, LABEL_NODULE: 0.8}


def derive_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed from a base seed and keys, identical on every platform and process (unlike ``hash``)."""
    text = repr((int(seed), *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def check_item(item: Any, where: str, config: ModelConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate one dataset item against the model and return its (ct, layout) tensors.

    Raises:
        InputError: not a dict with ``ct`` and ``layout``, wrong ranks or dtypes, ct and layout of different sizes,
            sizes not divisible by the model's downsample factor or different from the model grid.
    """
    if not isinstance(item, dict) or "ct" not in item or "layout" not in item:
        raise InputError(f"{where} must be a dict with 'ct' and 'layout', got {type(item).__name__}")
    ct, layout = item["ct"], item["layout"]
    if not isinstance(ct, torch.Tensor) or not isinstance(layout, torch.Tensor):
        raise InputError(f"{where}: 'ct' and 'layout' must be torch tensors")
    if ct.dim() != 4 or ct.shape[0] != 1 or not ct.is_floating_point():
        raise InputError(f"{where}: 'ct' must be a float tensor of shape (1, D, H, W), got {tuple(ct.shape)}")
    if layout.dim() != 3 or layout.is_floating_point():
        raise InputError(f"{where}: 'layout' must be an integer tensor of shape (D, H, W), got {tuple(layout.shape)}")
    if tuple(ct.shape[1:]) != tuple(layout.shape):
        raise InputError(f"{where}: ct size {tuple(ct.shape[1:])} differs from layout size {tuple(layout.shape)}")
    factor = config.unet.downsample_factor
    if any(s % factor for s in layout.shape):
        raise InputError(f"{where}: size {tuple(layout.shape)} must be divisible by {factor} on every axis")
    if tuple(layout.shape) != tuple(config.grid):
        raise InputError(f"{where}: size {tuple(layout.shape)} differs from the model grid {tuple(config.grid)}")
    return ct, layout


def check_dataset_preparation(dataset: Any, config: ModelConfig) -> None:
    """A dataset that says how it prepared its volumes (``preprocess_options``, as the folder and phantom datasets
    do) must have prepared them as the model expects: a different axis order or layout resize would train the
    network on an orientation or conditioning it is never sampled with."""
    options = getattr(dataset, "preprocess_options", None)
    if not isinstance(options, dict):
        return
    wanted = {"array_order": config.array_order, "layout_resize": config.layout_resize}
    got = {k: options.get(k, default) for k, default in (("array_order", "kji"), ("layout_resize", "labels-nearest"))}
    wanted["spatial_mode"] = config.spatial_mode
    got["spatial_mode"] = getattr(dataset, "spatial_mode", "full")
    if got != wanted:
        raise InputError(
            f"the dataset was prepared with {got} but the model expects {wanted}; build it with "
            "data.datasets.model_data_options(model.config)"
        )


def dataset_augmentation(dataset: Any) -> Optional[Dict[str, Any]]:
    """The random flips a dataset applies (``flip_axes`` as SimpleITK array axes, 2 = x = NIfTI i, and
    ``flip_prob``), for the checkpoint's record; None for a dataset that does not say (it may still augment)."""
    axes, prob = getattr(dataset, "flip_axes", None), getattr(dataset, "flip_prob", None)
    if axes is None or prob is None:
        return None
    return {"flip_axes": [int(a) for a in axes], "flip_prob": float(prob)}


def _stack(name: str, values: Union[ArrayLike, Sequence[ArrayLike]]) -> List[torch.Tensor]:
    if isinstance(values, (np.ndarray, torch.Tensor)):
        values = list(values)
    out = []
    for v in values:
        if isinstance(v, np.ndarray):
            out.append(torch.from_numpy(np.array(v, copy=True)))
        elif isinstance(v, torch.Tensor):
            out.append(v.detach().clone().cpu())
        else:
            raise InputError(f"{name} entries must be numpy arrays or torch tensors, got {type(v).__name__}")
    return out


class InMemoryPairs(Dataset):
    """(CT, layout) pairs held in memory (copied, so later changes to the inputs do not leak in).

    Args:
        cts: N volumes (D, H, W) or (1, D, H, W), normalised to [-1, 1].
        layouts: N label volumes (D, H, W) with 0 background, 1 lung, 2 nodule.
    Example:
        >>> ds = InMemoryPairs(torch.zeros(2, 8, 8, 8), torch.zeros(2, 8, 8, 8, dtype=torch.long))
        >>> len(ds), ds[0]["ct"].shape, ds[0]["layout"].dtype
        (2, torch.Size([1, 8, 8, 8]), torch.int64)
    """

    def __init__(self, cts: Union[ArrayLike, Sequence[ArrayLike]], layouts: Union[ArrayLike, Sequence[ArrayLike]]):
        ct_list, lay_list = _stack("cts", cts), _stack("layouts", layouts)
        if len(ct_list) != len(lay_list):
            raise InputError(f"got {len(ct_list)} CTs but {len(lay_list)} layouts")
        self.cts: List[torch.Tensor] = []
        self.layouts: List[torch.Tensor] = []
        for i, (ct, lay) in enumerate(zip(ct_list, lay_list)):
            ct = ct.float()
            if ct.dim() == 3:
                ct = ct[None]
            if lay.is_floating_point() and not torch.equal(lay, lay.round()):
                raise InputError(f"layout {i} must hold integer labels")
            lay = lay.long()
            if ct.dim() != 4 or lay.dim() != 3 or tuple(ct.shape[1:]) != tuple(lay.shape):
                raise InputError(f"pair {i}: ct {tuple(ct.shape)} and layout {tuple(lay.shape)} do not match")
            if not torch.isfinite(ct).all() or float(ct.abs().max()) > 1.001:
                raise InputError(f"ct {i} must be finite and normalised to [-1, 1]")
            bad = sorted(set(torch.unique(lay).tolist()) - set(LAYOUT_LABELS))
            if bad:
                raise InputError(f"layout {i} has labels {bad[:5]}; only {list(LAYOUT_LABELS)} are allowed")
            self.cts.append(ct)
            self.layouts.append(lay)

    def __len__(self) -> int:
        return len(self.cts)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        return {"ct": self.cts[index], "layout": self.layouts[index]}


def toy_layout(grid: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Two ball-shaped 'lungs' with one spherical nodule inside one of them, jittered by ``generator``."""
    d, h, w = (int(g) for g in grid)
    zz, yy, xx = torch.meshgrid(
        torch.arange(d, dtype=torch.float32),
        torch.arange(h, dtype=torch.float32),
        torch.arange(w, dtype=torch.float32),
        indexing="ij",
    )

    def jitter(scale: float) -> float:
        return float((torch.rand((), generator=generator) * 2 - 1) * scale)

    layout = torch.zeros((d, h, w), dtype=torch.long)
    radius = 0.22 * min(d, h, w)
    centres = []
    for side in (0.28, 0.72):
        c = (d / 2 + jitter(0.05 * d), h / 2 + jitter(0.05 * h), side * w + jitter(0.03 * w))
        r = radius * (1 + jitter(0.1))
        layout[((zz - c[0]) / r) ** 2 + ((yy - c[1]) / r) ** 2 + ((xx - c[2]) / r) ** 2 <= 1] = LABEL_LUNG
        centres.append((c, r))
    (c, r) = centres[int(torch.randint(0, 2, (), generator=generator))]
    nr = max(1.5, 0.15 * min(d, h, w) * (1 + jitter(0.2)))
    offset = max(0.0, r - nr - 1)
    nc = tuple(ci + jitter(offset / math.sqrt(3)) for ci in c)
    layout[(zz - nc[0]) ** 2 + (yy - nc[1]) ** 2 + (xx - nc[2]) ** 2 <= nr**2] = LABEL_NODULE
    return layout


def toy_ct(layout: torch.Tensor, generator: torch.Generator, noise: float = 0.02) -> torch.Tensor:
    """A CT that is a fixed function of the layout (see :data:`TOY_VALUES`) plus a little Gaussian noise."""
    ct = torch.full(layout.shape, TOY_VALUES[LABEL_BACKGROUND])
    for label in (LABEL_LUNG, LABEL_NODULE):
        ct[layout == label] = TOY_VALUES[label]
    ct = ct + noise * torch.randn(layout.shape, generator=generator)
    return ct.clamp(-1, 1)[None]


def make_toy_pairs(n: int, grid: Sequence[int], seed: int = 0, noise: float = 0.02) -> InMemoryPairs:
    """``n`` toy (CT, layout) pairs on ``grid``; the same seed always gives the same set."""
    if n < 1:
        raise InputError(f"a toy set needs at least one pair, got {n}")
    gen = torch.Generator().manual_seed(derive_seed(seed, "toy"))
    layouts = [toy_layout(grid, gen) for _ in range(n)]
    return InMemoryPairs([toy_ct(lay, gen, noise) for lay in layouts], layouts)


class StreamSampler(Sampler):
    """An endless, sharded, reshuffled-every-epoch stream of dataset indices that can start anywhere.

    Epoch ``e`` is a permutation drawn from ``derive_seed(seed, "data", e)``, padded by wrapping (like
    ``DistributedSampler``) to a multiple of ``world_size``; process ``rank`` takes every ``world_size``-th
    index. The state is just ``start`` (items already taken by this process), so resuming needs no pickled
    generator and every process agrees on the order without communicating.
    """

    def __init__(
        self, size: int, seed: int, *, rank: int = 0, world_size: int = 1, start: int = 0, with_epoch: bool = False
    ) -> None:
        if size < 1:
            raise InputError("the dataset is empty: there is nothing to train on")
        assert 0 <= rank < world_size and start >= 0
        self.size, self.seed, self.rank, self.world_size, self.start = size, seed, rank, world_size, start
        self.with_epoch = with_epoch  # yield (index, epoch) for datasets that draw augmentation per epoch
        self.per_rank = math.ceil(size / world_size)

    def epoch_order(self, epoch: int) -> List[int]:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "data", epoch))
        perm = torch.randperm(self.size, generator=gen).tolist()
        total = self.per_rank * self.world_size
        perm = (perm * math.ceil(total / self.size))[:total]
        return perm[self.rank :: self.world_size]

    def position(self, taken: int) -> Tuple[int, int]:
        """(epoch, offset) after ``taken`` items."""
        return divmod(taken, self.per_rank)

    def __iter__(self) -> Iterator[int]:
        epoch, offset = self.position(self.start)
        while True:
            for index in self.epoch_order(epoch)[offset:]:
                yield (index, epoch) if self.with_epoch else index  # type: ignore[misc]
            epoch, offset = epoch + 1, 0
