"""MedicalNet's (Med3D, Tencent) 3D ResNet-50 as a feature extractor, with weights the user supplies.

The Lung-DDPM paper reports FID on features of a pretrained 3D network, most likely Med3D's ResNet-50; its values
are comparable with ours only if the same weights (and preprocessing) are used, so nothing is ever downloaded:
the user points :meth:`Med3DExtractor.from_file` at a local ``resnet_50.pth`` from MedicalNet.

The network reproduces MedicalNet's ``resnet50`` (shortcut type B) module for module, so its files load strictly:
a 7x7x7 stride-2 stem and max-pool, then Bottleneck stages [3, 4, 6, 3] of 64/128/256/512 planes (x4 out), the
second with stride 2, the third and fourth with stride 1 and dilation 2 and 4 (MedicalNet keeps resolution for
segmentation). Features are the global average of the last stage: 2048 numbers per volume. MedicalNet's
segmentation head (``conv_seg.*``) is not part of the backbone and is ignored when loading.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import PathLike, read_checkpoint_file
from ..device import resolve_device
from ..errors import CheckpointError, InputError
from .extractor import validate_volume

DEFAULT_INPUT_SIZE = (56, 224, 224)  # (D, H, W) fed to the network
DEFAULT_WINDOW_HU = (-1000.0, 1000.0)
STAGES = ((64, 3, 1, 1), (128, 4, 2, 1), (256, 6, 1, 2), (512, 3, 1, 4))  # planes, blocks, stride, dilation


class Bottleneck(nn.Module):
    """1x1x1 reduce, 3x3x3 (strided, dilated), 1x1x1 expand (x4), plus the identity or a projected shortcut."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample: Optional[nn.Module] = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(
            planes, planes, kernel_size=3, stride=stride, dilation=dilation, padding=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Med3DResNet50(nn.Module):
    """MedicalNet ``resnet50`` backbone; ``forward`` returns ``(B, 2048)`` globally averaged features."""

    feature_dim = 512 * Bottleneck.expansion

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for k, (planes, blocks, stride, dilation) in enumerate(STAGES, start=1):
            out = planes * Bottleneck.expansion
            down = None
            if stride != 1 or inplanes != out:
                down = nn.Sequential(
                    nn.Conv3d(inplanes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(out)
                )
            layer = [Bottleneck(inplanes, planes, stride, dilation, down)]
            layer += [Bottleneck(out, planes, 1, dilation) for _ in range(1, blocks)]
            setattr(self, f"layer{k}", nn.Sequential(*layer))
            inplanes = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for k in range(1, len(STAGES) + 1):
            x = getattr(self, f"layer{k}")(x)
        return x.mean(dim=(2, 3, 4))


def _list(label: str, items: List[str]) -> str:
    more = f" (+{len(items) - 6} more)" if len(items) > 6 else ""
    return f"{label}: {', '.join(items[:6])}{more}"


def load_med3d_state_dict(path: PathLike, model: nn.Module) -> Dict[str, torch.Tensor]:
    """Read a MedicalNet file safely and return a state dict that fits ``model`` exactly.

    Accepts a raw state dict or ``{"state_dict": ...}``; strips DataParallel's ``module.`` prefix; drops the
    segmentation head ``conv_seg.*``; fills BatchNorm's ``num_batches_tracked`` (unused in eval, absent from files
    saved by old PyTorch). Every other missing, unexpected or mis-shaped key is named in a :class:`CheckpointError`.
    """
    data = read_checkpoint_file(path)  # weights_only=True; unsafe pickles -> UnsafeCheckpointError
    raw = data["state_dict"] if isinstance(data.get("state_dict"), Mapping) else data
    state: Dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        name = str(key)[len("module.") :] if str(key).startswith("module.") else str(key)
        if name.startswith("conv_seg."):
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[name] = value
    expected = model.state_dict()
    for name, value in expected.items():
        if name.endswith("num_batches_tracked") and name not in state:
            state[name] = torch.zeros_like(value)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        found = [
            _list(lab, it)
            for lab, it in (("missing", missing), ("unexpected", unexpected), ("wrong shapes", wrong))
            if it
        ]
        raise CheckpointError(
            f"{path} does not fit MedicalNet's 3D ResNet-50 (shortcut B): " + "; ".join(found) + ". "
            "Use MedicalNet's resnet_50.pth (resnet10/18/34/101... weights are other architectures)."
        )
    return state


class Med3DExtractor:
    """2048-d Med3D ResNet-50 features (``med3d-resnet50``); the paper most likely used these features.

    Comparable with the paper only if you use the same weights. Preprocessing, as in MedicalNet's data loaders
    with a CT window added:

    1. clip HU to ``window_hu`` (default [-1000, 1000]);
    2. z-score with the mean and SD (population) of the clipped HU inside ``mask`` (the whole volume without one;
       MedicalNet normalises over its foreground); a constant region is only centred;
    3. set voxels outside ``mask`` to 0 (the normalised mean), so only the region is described;
    4. resize to ``input_size`` (D, H, W; default 56x224x224) with trilinear interpolation, ignoring the
       spacing as MedicalNet does. MedicalNet's own training script defaulted to 56x448x448; pass that to match.

    Evaluation mode under ``torch.inference_mode``, no randomness: bit-identical on the CPU; on a GPU cuDNN may
    choose other algorithms between runs (float32-rounding differences).

    Example:
        >>> ex = Med3DExtractor.from_file("resnet_50.pth")  # doctest: +SKIP
        >>> ex(volume_hu, (1.25, 0.7, 0.7), layout > 0).shape  # doctest: +SKIP
        (2048,)
    """

    name = "med3d-resnet50"
    dim = Med3DResNet50.feature_dim
    comparable_with_paper = True

    def __init__(
        self,
        model: Med3DResNet50,
        input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
        window_hu: Tuple[float, float] = DEFAULT_WINDOW_HU,
        device: Union[str, torch.device] = "cpu",
    ) -> None:
        if len(input_size) != 3 or min(int(s) for s in input_size) < 1:
            raise InputError(f"input_size must be three positive sizes (D, H, W), got {tuple(input_size)}")
        if not window_hu[0] < window_hu[1]:
            raise InputError(f"window_hu must be (low, high) with low < high, got {tuple(window_hu)}")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.input_size = (int(input_size[0]), int(input_size[1]), int(input_size[2]))
        self.window_hu = (float(window_hu[0]), float(window_hu[1]))

    @classmethod
    def from_file(
        cls,
        path: PathLike,
        device: Union[str, torch.device] = "cpu",
        input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
        window_hu: Tuple[float, float] = DEFAULT_WINDOW_HU,
    ) -> Med3DExtractor:
        """Build the extractor from a local MedicalNet ``resnet_50.pth`` (loaded with ``weights_only=True``)."""
        model = Med3DResNet50()
        model.load_state_dict(load_med3d_state_dict(path, model), strict=True)
        return cls(model, input_size=input_size, window_hu=window_hu, device=device)

    def preprocess(
        self, volume_hu: np.ndarray, spacing_zyx: Sequence[float], mask: Optional[np.ndarray] = None
    ) -> torch.Tensor:
        """The network input ``(1, 1, D, H, W)`` float32 on the extractor's device (steps in the class doc)."""
        vol, _, region = validate_volume(volume_hu, spacing_zyx, mask)
        clipped = np.clip(vol, *self.window_hu).astype(np.float64)  # statistics in float64, on the CPU
        inside = clipped if region is None else clipped[region]
        sd = float(inside.std())
        x = (clipped - float(inside.mean())) / (sd if sd > 0 else 1.0)
        if region is not None:
            x[~region] = 0.0
        t = torch.from_numpy(x.astype(np.float32))[None, None].to(self.device)
        return F.interpolate(t, size=self.input_size, mode="trilinear", align_corners=False)

    def __call__(
        self, volume_hu: np.ndarray, spacing_zyx: Sequence[float], mask: Optional[np.ndarray] = None
    ) -> np.ndarray:
        with torch.inference_mode():
            feats = self.model(self.preprocess(volume_hu, spacing_zyx, mask))
        return feats[0].to("cpu", torch.float64).numpy()
