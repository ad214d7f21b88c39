"""Serialisable configuration: the denoiser architecture, the noise schedule and the named presets.

Configurations are frozen dataclasses so that a checkpoint can store exactly what built it (as JSON) and
rebuild it later without guessing; presets name the architectures users meet (the published Lung-DDPM,
its Lung-DDPM+ successor, and a small one that runs on a CPU).

Example:
    >>> from LungDDPMLib.config import preset
    >>> cfg = preset("lung-ddpm")
    >>> cfg.unet.channel_mult
    (1, 1, 2, 3, 4)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

from .errors import InputError

#: The layout channels of the published models (and the default), in the order they are stacked.
LAYOUT_CHANNELS = ("lung", "nodule")
#: Channels made from the real CT rather than the layout (:mod:`LungDDPMLib.data.context`): what the model may see of
#: the region it regenerates and around it - the kept CT, and the vessels that pass through a ground-glass nodule.
CT_CHANNELS = ("context", "context_known")
#: Every channel a model can be conditioned on: the two above, ``nodule_type`` (the density class of each nodule
#: voxel, see :func:`condition_values`), which only models trained with it have, and the CT channels.
TYPED_LAYOUT_CHANNELS = ("lung", "nodule", "nodule_type")
CONDITION_CHANNELS = (*TYPED_LAYOUT_CHANNELS, *CT_CHANNELS)
#: Label values in a layout volume: background, lung, nodule of unspecified type.
LABEL_BACKGROUND, LABEL_LUNG, LABEL_NODULE = 0, 1, 2
#: Density classes of nodules, as screening guidelines grade them (LIDC-IDRI texture 1-2 ground glass, 3-4 part
#: solid, 5 solid), and the layout label value of a nodule of each class. A nodule labelled 2 has no stated class.
NODULE_TYPES = ("solid", "part-solid", "ground-glass")
LABEL_OF_TYPE = {"solid": 3, "part-solid": 4, "ground-glass": 5}
TYPE_OF_LABEL = {v: k for k, v in LABEL_OF_TYPE.items()}
#: Every label value that is a nodule, typed or not.
NODULE_LABELS = (LABEL_NODULE, *LABEL_OF_TYPE.values())
#: Every label value a layout may hold.
LAYOUT_LABELS = (LABEL_BACKGROUND, LABEL_LUNG, *NODULE_LABELS)
#: Value of the ``nodule_type`` channel per class: ordered by density, so that neighbouring classes are near and
#: every class is distinct from "no nodule" (-1).
TYPE_CHANNEL_VALUE = {"ground-glass": -1.0 / 3.0, "part-solid": 1.0 / 3.0, "solid": 1.0}


def is_nodule(labels: Any) -> Any:
    """Boolean mask of nodule voxels (any type) of a label array (numpy or torch)."""
    return (labels >= LABEL_NODULE) & (labels <= max(NODULE_LABELS))


def condition_values(name: str, untyped_as: str = "solid") -> Tuple[float, ...]:
    """Value of layout channel ``name`` for each label value 0..max(LAYOUT_LABELS): a lookup table.

    ``lung`` and ``nodule`` are +1 on their labels and -1 elsewhere, as published (a typed nodule is a nodule);
    ``nodule_type`` is -1 outside nodules and :data:`TYPE_CHANNEL_VALUE` inside, with untyped nodules (label 2)
    drawn as ``untyped_as``.
    """
    table = [-1.0] * (max(LAYOUT_LABELS) + 1)
    if name == "lung":
        table[LABEL_LUNG] = 1.0
    elif name == "nodule":
        for v in NODULE_LABELS:
            table[v] = 1.0
    elif name == "nodule_type":
        table[LABEL_NODULE] = TYPE_CHANNEL_VALUE[untyped_as]
        for kind, v in LABEL_OF_TYPE.items():
            table[v] = TYPE_CHANNEL_VALUE[kind]
    elif name in CT_CHANNELS:
        raise InputError(
            f"channel {name!r} is made from the real CT, not from the layout: pass the model's condition channels "
            "(LungDDPMLib.data.context.condition_channels) to the sampler"
        )
    else:
        raise InputError(f"unknown layout channel {name!r}; known: {', '.join(CONDITION_CHANNELS)}")
    return tuple(table)


#: Axis orders a network can be trained on, named by the NIfTI voxel axes (i, j, k) that become the tensor's
#: (D, H, W): ``kji`` is SimpleITK's array order (ours), ``ikj`` is what the published pipelines feed (nibabel's
#: (i, j, k) array transposed to (j, k, i), resized, then with axes 1 and 3 of the tensor swapped).
AXIS_ORDERS = ("kji", "ikj")
#: Names stored by earlier versions, read as the order they meant.
LEGACY_AXIS_ORDERS = {"zyx": "kji", "xyz": "ikj"}
#: How the layout reaches the model grid: ``labels-nearest`` (ours: the label map is resampled with nearest
#: neighbour and AAS keeps the voxels labelled background) or ``channels-linear`` (published: each +-1 layout channel
#: is resized with linear interpolation, so boundaries are fractional, and AAS keeps only the voxels where every
#: channel is exactly -1).
LAYOUT_RESIZES = ("labels-nearest", "channels-linear")


def reject_unknown_fields(cls: type, data: Dict[str, Any], what: str) -> None:
    """Stored settings with a key the dataclass does not know are an error, so typos never pass silently."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown {what} {unknown}; known: {', '.join(sorted(known))}")


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the 3D UNet denoiser (guided-diffusion layout, ``dims=3``).

    Attributes:
        model_channels: base width; level ``i`` has ``model_channels * channel_mult[i]`` channels.
        channel_mult: width multipliers, one per resolution level (len - 1 downsamplings).
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_levels: level indices (0 = full resolution) that get self-attention; the
            middle block always has attention.
        num_heads: attention heads (the published model uses 1).
        layout_channels: which layout channels are stacked after the noisy image (``lung``, ``nodule``).
        out_channels: predicted channels (1: epsilon of the CT).
        dropout: dropout inside residual blocks.
        max_period: period of the sinusoidal time embedding (the published model uses 1000).
    """

    model_channels: int = 64
    channel_mult: Tuple[int, ...] = (1, 1, 2, 3, 4)
    num_res_blocks: int = 1
    attention_levels: Tuple[int, ...] = (3,)
    num_heads: int = 1
    layout_channels: Tuple[str, ...] = LAYOUT_CHANNELS
    out_channels: int = 1
    dropout: float = 0.0
    max_period: float = 1000.0

    def __post_init__(self) -> None:
        if self.model_channels < 1 or self.num_res_blocks < 1 or self.num_heads < 1:
            raise InputError(f"model_channels, num_res_blocks and num_heads must be >= 1, got {self}")
        if not self.channel_mult:
            raise InputError("channel_mult must name at least one level")
        if any(int(m) < 1 for m in self.channel_mult):
            raise InputError(f"channel_mult entries must be >= 1, got {self.channel_mult}")
        bad = [lvl for lvl in self.attention_levels if not 0 <= lvl < len(self.channel_mult)]
        if bad:
            raise InputError(f"attention_levels {bad} outside 0..{len(self.channel_mult) - 1}")
        unknown = [c for c in self.layout_channels if c not in CONDITION_CHANNELS]
        if unknown or len(set(self.layout_channels)) != len(self.layout_channels):
            raise InputError(
                f"layout_channels must be distinct names from {CONDITION_CHANNELS}, got {self.layout_channels}"
            )

    @staticmethod
    def num_groups(width: int) -> int:
        """GroupNorm groups for a width: 32 as published, fewer for the narrow test models."""
        for groups in (32, 16, 8, 4, 2, 1):
            if width % groups == 0:
                return groups
        return 1

    @property
    def in_channels(self) -> int:
        """Input channels: the noisy image plus one channel per layout map."""
        return self.out_channels + len(self.layout_channels)

    @property
    def downsample_factor(self) -> int:
        """Every spatial size must be a multiple of this."""
        return 2 ** (len(self.channel_mult) - 1)


@dataclass(frozen=True)
class ScheduleConfig:
    """The forward noising process: a cosine schedule over ``timesteps`` discrete levels."""

    timesteps: int = 250
    kind: str = "cosine"
    cosine_s: float = 0.008
    max_beta: float = 0.999

    def __post_init__(self) -> None:
        if self.timesteps < 2:
            raise InputError(f"timesteps must be >= 2, got {self.timesteps}")
        if self.kind != "cosine":
            raise InputError(f"unknown schedule kind {self.kind!r}; only 'cosine' is supported")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model and to feed it correctly.

    Attributes:
        unet: the denoiser architecture.
        schedule: the noise schedule it was trained with.
        grid: spatial size (D, H, W) the model was trained on.
        normalization: how CT intensities map to [-1, 1] (``hu-window`` or ``lungddpm-compat``).
        spatial_mode: ``full`` (whole volume resized to the grid) or ``roi`` (nodule-centred crops).
        crop: in ``full`` mode, resample the whole ``volume`` or the ``lung`` bounding box (plus a margin).
        crop_margin_mm: margin around the lung box.
        array_order: which NIfTI voxel axes are the network's (D, H, W): ``kji`` (SimpleITK's array order, ours) or
            ``ikj`` (the published models, for training and sampling alike); see :mod:`LungDDPMLib.data.axes`.
        layout_resize: ``labels-nearest`` (ours) or ``channels-linear`` (published); see :data:`LAYOUT_RESIZES`.
        nodule_types: the nodule density classes the model was trained to draw (models conditioned on
            ``nodule_type`` only; empty otherwise). The first is how nodules of unstated type are drawn.
        preset: the preset name this was built from, if any (informational).
    """

    unet: UNetConfig = field(default_factory=UNetConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    grid: Tuple[int, int, int] = (128, 128, 128)
    normalization: str = "lungddpm-compat"
    spatial_mode: str = "full"
    crop: str = "volume"
    crop_margin_mm: float = 10.0
    array_order: str = "kji"
    layout_resize: str = "labels-nearest"
    nodule_types: Tuple[str, ...] = ()
    preset: str = ""

    def __post_init__(self) -> None:
        typed = "nodule_type" in self.unet.layout_channels
        unknown_types = [t for t in self.nodule_types if t not in NODULE_TYPES]
        if unknown_types or len(set(self.nodule_types)) != len(self.nodule_types):
            raise InputError(f"nodule_types must be distinct names from {NODULE_TYPES}, got {self.nodule_types}")
        if typed != bool(self.nodule_types):
            raise InputError(
                "a model conditioned on 'nodule_type' must list the nodule_types it was trained on, and only such a "
                f"model may list them (layout_channels {self.unet.layout_channels}, nodule_types {self.nodule_types})"
            )
        if typed and self.layout_resize != "labels-nearest":
            raise InputError("nodule_type conditioning needs layout_resize 'labels-nearest'")
        if any(c in CT_CHANNELS for c in self.unet.layout_channels) and (
            self.spatial_mode != "roi" or self.normalization != "hu-window" or self.layout_resize != "labels-nearest"
        ):
            raise InputError(
                "the CT channels (context, context_known) are built on native ROI patches in the hu-window "
                "normalisation: such a model needs spatial_mode 'roi', normalization 'hu-window' and layout_resize "
                "'labels-nearest'"
            )
        if len(self.grid) != 3 or any(int(g) < 1 for g in self.grid):
            raise InputError(f"grid must be three positive sizes, got {self.grid}")
        factor = self.unet.downsample_factor
        if any(int(g) % factor for g in self.grid):
            raise InputError(
                f"grid {tuple(self.grid)} must be divisible by {factor} for {len(self.unet.channel_mult)} levels"
            )
        if self.normalization not in ("hu-window", "lungddpm-compat"):
            raise InputError(f"unknown normalization {self.normalization!r}")
        if self.spatial_mode not in ("full", "roi"):
            raise InputError(f"unknown spatial_mode {self.spatial_mode!r}")
        if self.crop not in ("volume", "lung"):
            raise InputError(f"unknown crop {self.crop!r}; use 'volume' or 'lung'")
        if self.array_order not in AXIS_ORDERS:
            raise InputError(f"unknown array_order {self.array_order!r}; use one of {', '.join(AXIS_ORDERS)}")
        if self.layout_resize not in LAYOUT_RESIZES:
            raise InputError(f"unknown layout_resize {self.layout_resize!r}; use one of {', '.join(LAYOUT_RESIZES)}")

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], trained_here: bool = False) -> ModelConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error so typos do not pass silently.

        ``trained_here``: the record comes from a checkpoint our trainer wrote. It decides what the legacy order
        name ``xyz`` meant: before the orders were named by NIfTI axes, our trainer never reordered axes, so such a
        model learnt SimpleITK order (``kji``) on nearest-neighbour labels; anywhere else (the released weights
        exported to our format) ``xyz`` was the published order.
        """
        reject_unknown_fields(cls, data, "model configuration fields")
        unet = dict(data.get("unet", {}))
        reject_unknown_fields(UNetConfig, unet, "model configuration fields (unet)")
        reject_unknown_fields(ScheduleConfig, data.get("schedule", {}), "model configuration fields (schedule)")
        for key in ("channel_mult", "attention_levels", "layout_channels"):
            if key in unet:
                unet[key] = tuple(unet[key])
        rest = {k: v for k, v in data.items() if k not in ("unet", "schedule")}
        if "nodule_types" in rest:
            rest["nodule_types"] = tuple(rest["nodule_types"])
        if rest.get("array_order") in LEGACY_AXIS_ORDERS:
            legacy = rest["array_order"]
            if legacy == "xyz" and trained_here:
                rest["array_order"] = "kji"
                rest.setdefault("layout_resize", "labels-nearest")
            else:
                if legacy == "xyz":
                    rest.setdefault("layout_resize", "channels-linear")
                rest["array_order"] = LEGACY_AXIS_ORDERS[legacy]
        if "grid" in rest:
            rest["grid"] = tuple(int(g) for g in rest["grid"])
        return cls(unet=UNetConfig(**unet), schedule=ScheduleConfig(**data.get("schedule", {})), **rest)

    @classmethod
    def from_json(cls, text: str, trained_here: bool = False) -> ModelConfig:
        return cls.from_dict(json.loads(text), trained_here)


_PRESETS: Dict[str, ModelConfig] = {
    # The published Lung-DDPM: 40,226,433 parameters, 128^3, lung + nodule layout.
    "lung-ddpm": ModelConfig(array_order="ikj", layout_resize="channels-linear", preset="lung-ddpm"),
    # Lung-DDPM+: nodule-only layout, 64^3 crops at native resolution, attention at 16^3.
    "lung-ddpm-plus": ModelConfig(
        unet=UNetConfig(channel_mult=(1, 2, 3, 4), attention_levels=(2,), layout_channels=("nodule",)),
        grid=(64, 64, 64),
        spatial_mode="roi",
        array_order="ikj",
        layout_resize="channels-linear",
        preset="lung-ddpm-plus",
    ),
    # A CPU-friendly model: same topology, a fraction of the width, 64^3 grid, our HU window.
    "small": ModelConfig(
        unet=UNetConfig(model_channels=16, channel_mult=(1, 2, 2, 4), attention_levels=(3,), num_heads=2),
        grid=(64, 64, 64),
        normalization="hu-window",
        crop="lung",
        preset="small",
    ),
    # The native-resolution nodule model: nodule-centred patches of 32 x 48 x 48 voxels (z, y, x) at the CT's own
    # spacing (about 48 x 38 x 38 mm at 1.5 x 0.8 x 0.8 mm), conditioned on lung, nodule and nodule type.
    "roi-small": ModelConfig(
        unet=UNetConfig(
            model_channels=16,
            channel_mult=(1, 2, 2, 4),
            attention_levels=(3,),
            num_heads=2,
            layout_channels=TYPED_LAYOUT_CHANNELS,
        ),
        grid=(32, 48, 48),
        normalization="hu-window",
        spatial_mode="roi",
        nodule_types=NODULE_TYPES,
        preset="roi-small",
    ),
    # About 0.1 M parameters, for tests and smoke runs; attention only in the middle block (at grid/4),
    # because attention over 16^3 tokens dominates a CPU step.
    "tiny": ModelConfig(
        unet=UNetConfig(model_channels=8, channel_mult=(1, 2, 2), attention_levels=(), num_heads=1),
        grid=(32, 32, 32),
        normalization="hu-window",
        preset="tiny",
    ),
}


# roi-small that also sees the real CT it keeps and the vessels inside the region it regenerates
# (LungDDPMLib.data.context): the bundled ROI model from version 2 on.
_PRESETS["roi-context"] = dataclasses.replace(
    _PRESETS["roi-small"],
    unet=dataclasses.replace(_PRESETS["roi-small"].unet, layout_channels=CONDITION_CHANNELS),
    preset="roi-context",
)


def preset_names() -> Tuple[str, ...]:
    return tuple(_PRESETS)


def preset(name: str, **overrides: Any) -> ModelConfig:
    """Return a named configuration, optionally with top-level fields replaced (e.g. ``grid``)."""
    try:
        cfg = _PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(_PRESETS)}") from None
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
