"""Training the segmentation network on patches, and sliding-window inference over a whole case.

Every arm of the experiment goes through :func:`train_segnet` with the same seed, number of steps, batch size and
learning-rate schedule; only the pools of cases they draw from differ. The seed fixes the initial weights and the
whole patch sequence (a ``numpy.random.Generator``), and no global RNG is touched, so a run is reproducible.

Two networks can be trained: ``monai`` - the field's standard stack, MONAI's 3D ``UNet`` (16-32-64-128 channels,
residual units, instance norm) with ``DiceCELoss`` and Gaussian-weighted ``sliding_window_inference``, so a reader
can trust the numbers - and ``own``, our dependency-free :class:`~LungDDPMLib.downstream.segnet.SegNet3D`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .data import Case, Patch, draw_batch, lung_box
from .segnet import SegNet3D, dice_bce_loss

SEGNETS = ("monai", "own")
#: Channels per level of the MONAI U-Net (three stride-2 downsamplings: patches must be multiples of 8).
MONAI_CHANNELS = (16, 32, 64, 128)


def make_segnet(kind: str, seed: int, channels: Sequence[int] = (8, 16, 32)) -> Tuple[nn.Module, Callable]:
    """A fresh network with weights drawn from ``seed`` (the global RNG is restored), and its loss."""
    if kind == "own":
        return SegNet3D(channels, seed=seed), dice_bce_loss
    if kind != "monai":
        raise InputError(f"unknown segmentation network {kind!r}; choose one of {', '.join(SEGNETS)}")
    try:
        from monai.losses import DiceCELoss
        from monai.networks.nets import UNet
    except ImportError:
        raise InputError(
            "the MONAI segmentation network needs MONAI: pip install 'lungddpm[seg]' (or monai), or use --segnet own"
        ) from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=1,
            channels=MONAI_CHANNELS,
            strides=(2, 2, 2),
            num_res_units=1,
            norm="instance",
        )
    return net, DiceCELoss(sigmoid=True)


@dataclass
class TrainResult:
    """A trained network and how training went: mean loss per logging window, items drawn per pool, seconds."""

    net: nn.Module
    losses: List[float] = field(default_factory=list)
    items_per_pool: List[int] = field(default_factory=list)
    seconds: float = 0.0


def train_segnet(
    pools: Sequence[Sequence[Case]],
    weights: Sequence[float],
    *,
    steps: int,
    batch_size: int,
    patch: Patch,
    seed: int,
    lr: float = 5e-3,
    positive_fraction: float = 0.5,
    channels: Sequence[int] = (8, 16, 32),
    device: Optional[torch.device] = None,
    log: Optional[Callable[[str], None]] = None,
    log_every: int = 50,
    segnet: str = "own",
) -> TrainResult:
    """Train a fresh network (``segnet``: ``own`` or ``monai``) with Adam (cosine-decayed learning rate) on Dice
    plus cross-entropy.

    Args:
        pools, weights: cases to draw from and the probability of each pool per batch item
            (see :func:`LungDDPMLib.downstream.data.draw_batch`).
        steps, batch_size, patch, lr, positive_fraction: the optimisation; identical across arms.
        seed: initial weights and patch sequence.
        log: called with a progress line every ``log_every`` steps.
    """
    rng = np.random.default_rng(seed)
    device = device if device is not None else torch.device("cpu")
    net, loss_fn = make_segnet(segnet, seed, channels)
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    result = TrainResult(net=net, items_per_pool=[0] * len(pools))
    window: List[float] = []
    started = time.perf_counter()
    net.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        x, y, sources = draw_batch(pools, weights, batch_size, patch, positive_fraction, rng)
        for k in sources:
            result.items_per_pool[k] += 1
        loss = loss_fn(net(torch.from_numpy(x).to(device)), torch.from_numpy(y).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(float(loss.detach()))
        if len(window) == log_every or step == steps - 1:
            result.losses.append(round(float(np.mean(window)), 5))
            window = []
            if log is not None:
                elapsed = time.perf_counter() - started
                log(f"    step {step + 1}/{steps}  loss {result.losses[-1]:.3f}  {elapsed:.0f} s")
    result.seconds = time.perf_counter() - started
    net.eval()
    return result


def _starts(length: int, tile: int) -> List[int]:
    """Window starts covering ``length`` with half-overlapping tiles (the last one flush with the end)."""
    starts = list(range(0, length - tile + 1, max(tile // 2, 1)))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


@torch.inference_mode()
def predict_volume(
    net: nn.Module, case: Case, patch: Patch, device: Optional[torch.device] = None, tiles_per_batch: int = 8
) -> np.ndarray:
    """Nodule mask of a whole case: half-overlapping tiles of the training size over the lung box, mean
    probability where tiles overlap (Gaussian-weighted, by MONAI's sliding window, for MONAI networks),
    thresholded at 0.5. Outside the lung box (plus 2 voxels) nothing is predicted.
    """
    device = device if device is not None else next(net.parameters()).device
    box = lung_box(case)
    if not isinstance(net, SegNet3D):
        from monai.inferers import sliding_window_inference

        region = torch.from_numpy(np.ascontiguousarray(case.image[box]))[None, None].to(device)
        logits = sliding_window_inference(region, tuple(patch), tiles_per_batch, net, overlap=0.25, mode="gaussian")
        mask = np.zeros(case.image.shape, dtype=bool)
        mask[box] = torch.sigmoid(logits).float().cpu().numpy()[0, 0] > 0.5
        return mask
    region = case.image[box]
    tile = tuple(min(p, n) for p, n in zip(patch, region.shape))
    corners = [
        (z, y, x)
        for z in _starts(region.shape[0], tile[0])
        for y in _starts(region.shape[1], tile[1])
        for x in _starts(region.shape[2], tile[2])
    ]
    prob = np.zeros(region.shape, dtype=np.float32)
    count = np.zeros(region.shape, dtype=np.float32)
    for i in range(0, len(corners), tiles_per_batch):
        chunk = corners[i : i + tiles_per_batch]
        views = [tuple(slice(c, c + t) for c, t in zip(corner, tile)) for corner in chunk]
        x = torch.from_numpy(np.stack([region[v] for v in views])[:, None]).to(device)
        p = torch.sigmoid(net(x)).float().cpu().numpy()[:, 0]
        for v, pv in zip(views, p):
            prob[v] += pv
            count[v] += 1
    mask = np.zeros(case.image.shape, dtype=bool)
    mask[box] = prob / count > 0.5
    return mask


def evaluate(net: nn.Module, cases: Sequence[Case], patch: Patch, device: torch.device) -> List[Dict[str, object]]:
    """Per-case metrics (:func:`LungDDPMLib.downstream.metrics.case_metrics`, per nodule class too) with the case
    seed."""
    from .metrics import case_metrics

    return [
        {"case_seed": c.seed, **case_metrics(predict_volume(net, c, patch, device), c.nodule, c.classes)} for c in cases
    ]
