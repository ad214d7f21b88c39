"""Which published network a state dict is: read from its key layout and shapes, never from the file name.

The released files carry no configuration, and Lung-DDPM+'s is called ``best_model.pt``, so the name says little.
The weights say a lot: the first convolution gives the base width and the input channels (noisy CT + layout
channels), the stride-2 ``op`` convolutions count the resolution levels, the residual blocks' convolutions give
each level's width and the ``qkv`` weights where attention sits. :func:`describe_layout` reads those, and
:func:`recognise` names the family (Lung-DDPM: 3 inputs, 5 levels; Lung-DDPM+: 2 inputs, 4 levels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

PREFIX = "denoise_fn."
#: Family -> (title, input channels, levels, attention levels) of the released networks.
FAMILIES: Dict[str, Tuple[str, int, int, Tuple[int, ...]]] = {
    "lung-ddpm": ("Lung-DDPM (whole lung, 128^3)", 3, 5, (3,)),
    "lung-ddpm-plus": ("Lung-DDPM+ (nodule cube, 64^3)", 2, 4, (2,)),
}


@dataclass(frozen=True)
class KeyLayout:
    """What a guided-diffusion 3D UNet state dict shows of its architecture."""

    in_channels: int
    model_channels: int
    widths: Tuple[int, ...]  # one per level, from the residual blocks on the way down
    attention_levels: Tuple[int, ...]
    res_blocks: int

    def text(self) -> str:
        att = ", ".join(str(a) for a in self.attention_levels) or "none"
        return (
            f"{self.in_channels} input channels, {len(self.widths)} levels of widths "
            f"{'-'.join(str(w) for w in self.widths)}, attention at level {att} and in the middle"
        )


def _shape(state: Mapping[str, Any], key: str) -> Optional[Tuple[int, ...]]:
    value = state.get(PREFIX + key)
    return None if value is None else tuple(int(s) for s in getattr(value, "shape", ()))


def describe_layout(state: Mapping[str, Any]) -> Optional[KeyLayout]:
    """The architecture the keys show, or ``None`` when they are not a guided-diffusion 3D UNet's."""
    first = _shape(state, "input_blocks.0.0.weight")
    if first is None or len(first) != 5:
        return None
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"denoise_fn\.input_blocks\.(\d+)\.", str(k)))})
    widths: List[int] = []
    attention: List[int] = []
    per_level: List[int] = [0]
    for n in blocks[1:]:
        if _shape(state, f"input_blocks.{n}.0.op.weight") is not None:
            per_level.append(0)
            continue
        conv = _shape(state, f"input_blocks.{n}.0.in_layers.2.weight")
        if conv is None:
            return None
        level = len(per_level) - 1
        per_level[-1] += 1
        if len(widths) <= level:
            widths.append(conv[0])
        if _shape(state, f"input_blocks.{n}.1.qkv.weight") is not None and level not in attention:
            attention.append(level)
    if not widths or len(set(per_level)) != 1:
        return None
    return KeyLayout(first[1], first[0], tuple(widths), tuple(attention), per_level[0])


def recognise(state: Mapping[str, Any]) -> Tuple[Optional[str], str]:
    """``(family, evidence)``: the published family whose key layout the state dict has, and what showed it.

    Input channels, level count and attention placement decide the family; widths do not (a narrow network in
    the published layout is still that family, and loading then names the widths that differ).
    """
    layout = describe_layout(state)
    if layout is None:
        return None, "no guided-diffusion 3D UNet key layout (denoise_fn.input_blocks.*)"
    for family, (_title, in_ch, levels, att) in FAMILIES.items():
        if (layout.in_channels, len(layout.widths), layout.attention_levels) == (in_ch, levels, att):
            return family, f"architecture and key layout: {layout.text()}"
    for family, (_title, in_ch, _levels, _att) in FAMILIES.items():
        if layout.in_channels == in_ch:
            return family, f"input channels only ({layout.text()}; the released network differs)"
    return None, f"no published network has this layout: {layout.text()}"


def title(family: Optional[str]) -> Optional[str]:
    return None if family is None else FAMILIES[family][0]


def published_family(config: Any) -> Optional[str]:
    """``lung-ddpm`` or ``lung-ddpm-plus`` for a model built with the published data handling, else ``None``.

    Decided from what the network takes and how it was trained to see data (layout channels, spatial mode, axis
    order), not from the file name, so a narrow model in the published layout (tests, distillations) counts too.
    """
    if config.array_order != "ikj" or config.layout_resize != "channels-linear":
        return None
    channels = tuple(config.unet.layout_channels)
    if channels == ("lung", "nodule") and config.spatial_mode == "full":
        return "lung-ddpm"
    if channels == ("nodule",) and config.spatial_mode == "roi":
        return "lung-ddpm-plus"
    return None
