"""Start a model from a trained one that has fewer condition channels (``lungddpm train --init-from``).

Our 2-core development CPU trains a 2 M-parameter ROI model at about one step a second, so a new conditioning (for
example the CT channels of ``roi-context``) is worth adding to a model that already draws nodules rather than
learnt from scratch. Every weight whose name and shape agree is copied; the network's first convolution, whose input
channels are the noisy image followed by the condition channels, gets the trained weights of each channel the source
model knows and zero weights for the new ones - so at step 0 the new model computes exactly what the source model
computes, and training only has to learn what the new channels add.
"""

from __future__ import annotations

from typing import Any, Dict, List

import torch

from ..diffusion import DiffusionModel
from ..errors import InputError

#: The first convolution of :class:`~LungDDPMLib.model.UNet3D` (input: noisy image + condition channels).
FIRST_CONV = "denoise_fn.input_blocks.0.0.weight"


def _input_names(model: DiffusionModel) -> List[str]:
    """Names of the first convolution's input channels: the noisy image's (by position), then the conditions."""
    image = [f"x_t[{i}]" for i in range(model.config.unet.out_channels)]
    return image + list(model.config.unet.layout_channels)


def warm_start(model: DiffusionModel, source: DiffusionModel) -> Dict[str, Any]:
    """Copy ``source``'s weights into ``model`` in place; returns what was copied (for the run record).

    Raises InputError when the two differ in anything but the condition channels (another width, depth, grid or
    schedule), since then no weight would carry its meaning over.
    """
    mine, theirs = model.config, source.config
    for field in ("model_channels", "channel_mult", "num_res_blocks", "attention_levels", "num_heads", "out_channels"):
        if getattr(mine.unet, field) != getattr(theirs.unet, field):
            raise InputError(
                f"--init-from: the source model's {field} is {getattr(theirs.unet, field)}, this preset's is "
                f"{getattr(mine.unet, field)}; a warm start needs the same architecture except condition channels"
            )
    for field in ("schedule", "normalization", "grid", "spatial_mode", "array_order", "nodule_types"):
        if getattr(mine, field) != getattr(theirs, field):
            raise InputError(
                f"--init-from: the source model's {field} is {getattr(theirs, field)}, this preset's is "
                f"{getattr(mine, field)}; its weights would not mean the same here"
            )
    names, source_names = _input_names(model), _input_names(source)
    missing = [n for n in source_names if n not in names]
    if missing:
        raise InputError(f"--init-from: the source model is conditioned on {missing}, which this preset lacks")
    target = model.state_dict()
    state = source.state_dict()
    if set(target) != set(state):
        raise InputError("--init-from: the source model's layers differ from this preset's")
    with torch.no_grad():
        for key, value in state.items():
            if key == FIRST_CONV:
                weight = torch.zeros_like(target[key])
                for i, name in enumerate(names):
                    if name in source_names:
                        weight[:, i] = value[:, source_names.index(name)]
                target[key].copy_(weight)
            elif target[key].shape != value.shape:
                raise InputError(
                    f"--init-from: layer {key} has shape {tuple(value.shape)}, expected {tuple(target[key].shape)}"
                )
            else:
                target[key].copy_(value)
    model.load_state_dict(target)
    new = [n for n in names if n not in source_names]
    return {"copied_layers": len(state), "new_input_channels": new}
