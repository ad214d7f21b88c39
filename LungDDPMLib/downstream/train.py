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


#: How MONAI's Dice term is reduced: ``per-patch`` (MONAI's default: every patch its own Dice, so a nodule-free patch
#: scores about 1 whatever is predicted) or ``batch`` (one Dice over the batch, as our own loss does).
MONAI_DICE = ("per-patch", "batch")


def make_segnet(
    kind: str, seed: int, channels: Sequence[int] = (8, 16, 32), monai_dice: str = "per-patch"
) -> Tuple[nn.Module, Callable]:
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
    if monai_dice not in MONAI_DICE:
        raise InputError(f"monai_dice must be one of {', '.join(MONAI_DICE)}, got {monai_dice!r}")
    return net, DiceCELoss(sigmoid=True, batch=monai_dice == "batch")


@dataclass
class TrainResult:
    """A trained network and how training went.

    Attributes:
        losses: mean training loss per logging window (``log_every`` steps).
        train_curve: ``(step, mean training loss since the previous point)`` at every validation (or log) step.
        validation_curve: ``(step, validation loss, validation Dice)`` per evaluation (empty without validation).
        best_step: the step whose weights ``net`` holds (the last step without validation); ``steps_run``: how
            many steps were taken before stopping.
    """

    net: nn.Module
    losses: List[float] = field(default_factory=list)
    items_per_pool: List[int] = field(default_factory=list)
    seconds: float = 0.0
    train_curve: List[Tuple[int, float]] = field(default_factory=list)
    validation_curve: List[Tuple[int, float, float]] = field(default_factory=list)
    best_step: int = 0
    steps_run: int = 0
    validation_s: float = 0.0


def _copy_state(net: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


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
    validation: Optional[Tuple[np.ndarray, np.ndarray]] = None,
    eval_every: int = 100,
    patience: Optional[int] = None,
    min_delta: float = 0.0,
    monai_dice: str = "per-patch",
    stop_on: str = "loss",
) -> TrainResult:
    """Train a fresh network (``segnet``: ``own`` or ``monai``) with Adam (cosine-decayed learning rate over
    ``steps``) on Dice plus cross-entropy.

    Args:
        pools, weights: cases to draw from and the probability of each pool per batch item
            (see :func:`LungDDPMLib.downstream.data.draw_batch`).
        steps, batch_size, patch, lr, positive_fraction: the optimisation; identical across arms. With
            ``validation`` and ``patience``, ``steps`` is the cap.
        seed: initial weights and patch sequence.
        log: called with a progress line every ``log_every`` steps (and at every validation).
        validation: fixed validation patches (:func:`~LungDDPMLib.downstream.early_stop.validation_set`), scored
            every ``eval_every`` steps; with ``patience`` training stops after that many evaluations without
            improvement and the best evaluation's weights are returned (:class:`~.early_stop.EarlyStopping`).
        monai_dice: the reduction of MONAI's Dice term (:data:`MONAI_DICE`; an ablation of the MONAI collapse).
        stop_on: ``loss`` (the validation loss) or ``dice`` (the validation patches' pooled Dice, higher better).
    """
    from .early_stop import EarlyStopping, validation_score

    rng = np.random.default_rng(seed)
    device = device if device is not None else torch.device("cpu")
    net, loss_fn = make_segnet(segnet, seed, channels, monai_dice)
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    result = TrainResult(net=net, items_per_pool=[0] * len(pools))
    stopper = EarlyStopping(patience) if validation is not None and patience is not None else None
    best_state: Optional[Dict[str, torch.Tensor]] = None
    window: List[float] = []
    since_eval: List[float] = []
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
        since_eval.append(window[-1])
        done = step + 1
        if len(window) == log_every or done == steps:
            result.losses.append(round(float(np.mean(window)), 5))
            window = []
            if log is not None:
                log(f"    step {done}/{steps}  loss {result.losses[-1]:.3f}  {time.perf_counter() - started:.0f} s")
        if validation is not None and (done % eval_every == 0 or done == steps):
            t = time.perf_counter()
            score = validation_score(net, validation, loss_fn, device)
            result.validation_s += time.perf_counter() - t
            result.train_curve.append((done, round(float(np.mean(since_eval)), 5)))
            since_eval = []
            result.validation_curve.append((done, round(score["loss"], 5), round(score["dice"], 5)))
            if log is not None:
                log(f"    step {done}  validation loss {score['loss']:.4f}  Dice {score['dice']:.3f}")
            if stopper is not None:
                stop = stopper.update(done, score["loss"] if stop_on == "loss" else -score["dice"])
                if stopper.improved:
                    best_state = _copy_state(net)
                if stop:
                    break
    result.steps_run = done
    result.best_step = done
    if stopper is not None and best_state is not None:
        net.load_state_dict(best_state)
        result.best_step = int(stopper.best_step or done)
    result.seconds = time.perf_counter() - started
    net.eval()
    return result


def _starts(length: int, tile: int, overlap: float = 0.5) -> List[int]:
    """Window starts covering ``length`` with tiles overlapping by ``overlap`` of a tile (the last flush with the
    end)."""
    starts = list(range(0, length - tile + 1, max(int(tile * (1 - overlap)), 1)))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


@torch.inference_mode()
def predict_probability(
    net: nn.Module,
    case: Case,
    patch: Patch,
    device: Optional[torch.device] = None,
    tiles_per_batch: int = 8,
    overlap: Optional[float] = None,
) -> Tuple[np.ndarray, Tuple[slice, ...]]:
    """Nodule probability over the lung box (plus 2 voxels) of a case, and that box.

    Tiles of the training size; MONAI networks through MONAI's Gaussian-weighted sliding window (``overlap``
    default 0.25), our network by the mean over tiles that overlap by ``overlap`` of a tile (default 0.5).
    """
    device = device if device is not None else next(net.parameters()).device
    box = lung_box(case)
    if not isinstance(net, SegNet3D):
        from monai.inferers import sliding_window_inference

        region = torch.from_numpy(np.ascontiguousarray(case.image[box]))[None, None].to(device)
        share = 0.25 if overlap is None else overlap
        logits = sliding_window_inference(region, tuple(patch), tiles_per_batch, net, overlap=share, mode="gaussian")
        return torch.sigmoid(logits).float().cpu().numpy()[0, 0], box
    region = case.image[box]
    tile = tuple(min(p, n) for p, n in zip(patch, region.shape))
    share = 0.5 if overlap is None else overlap
    corners = [
        (z, y, x)
        for z in _starts(region.shape[0], tile[0], share)
        for y in _starts(region.shape[1], tile[1], share)
        for x in _starts(region.shape[2], tile[2], share)
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
    return prob / count, box


def predict_volume(
    net: nn.Module,
    case: Case,
    patch: Patch,
    device: Optional[torch.device] = None,
    tiles_per_batch: int = 8,
    overlap: Optional[float] = None,
) -> np.ndarray:
    """Nodule mask of a whole case: :func:`predict_probability` thresholded at 0.5; nothing outside the lung box."""
    prob, box = predict_probability(net, case, patch, device, tiles_per_batch, overlap)
    mask = np.zeros(case.image.shape, dtype=bool)
    mask[box] = prob > 0.5
    return mask


#: Edges of the output-probability histograms recorded per run (20 bins over [0, 1]).
HISTOGRAM_EDGES = np.linspace(0.0, 1.0, 21)


def evaluate(
    net: nn.Module,
    cases: Sequence[Case],
    patch: Patch,
    device: torch.device,
    overlap: Optional[float] = None,
    histogram: Optional[Dict[str, List[int]]] = None,
) -> List[Dict[str, object]]:
    """Per-case metrics (:func:`LungDDPMLib.downstream.metrics.case_metrics`, per nodule class too, and one record
    per nodule) with the case seed. With ``histogram`` (a dict), the counts of the output probabilities in
    :data:`HISTOGRAM_EDGES` are added to it, over nodule voxels (``nodule``) and other voxels of the lung box
    (``background``): where a collapsed network puts its nodule voxels."""
    from .metrics import case_metrics, nodule_records

    out = []
    for c in cases:
        prob, box = predict_probability(net, c, patch, device, overlap=overlap)
        mask = np.zeros(c.image.shape, dtype=bool)
        mask[box] = prob > 0.5
        if histogram is not None:
            truth = c.nodule[box]
            for name, where in (("nodule", truth), ("background", ~truth)):
                counts = np.histogram(prob[where], bins=HISTOGRAM_EDGES)[0]
                old = histogram.get(name, [0] * len(counts))
                histogram[name] = [int(a + b) for a, b in zip(old, counts)]
        metrics = case_metrics(mask, c.nodule, c.classes)
        if c.classes is not None:
            metrics["nodule_list"] = nodule_records(mask, c.classes, c.spacing)
        out.append({"case_seed": c.seed, **metrics})
    return out
