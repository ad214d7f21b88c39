"""The diffusion model object: the UNet (``denoise_fn``) plus the schedule buffers.

Its ``state_dict`` has exactly the published checkpoint's layout (13 schedule buffers at the top level and the
UNet's weights under ``denoise_fn.``), so the released Lung-DDPM weights load into it with ``strict=True``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CT_CHANNELS, LAYOUT_LABELS, NODULE_TYPES, ModelConfig, condition_values
from ..errors import InputError
from ..model import UNet3D
from .schedule import SCHEDULE_BUFFERS, NoiseSchedule


def _flatten_schedule_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for name in SCHEDULE_BUFFERS:
        key = prefix + "schedule." + name
        if key in state_dict:
            state_dict[prefix + name] = state_dict.pop(key)


def _nest_schedule_keys(state_dict: dict, prefix: str, *args: object) -> None:
    for name in SCHEDULE_BUFFERS:
        if prefix + name in state_dict:
            state_dict[prefix + "schedule." + name] = state_dict.pop(prefix + name)


class DiffusionModel(nn.Module):
    """Conditional epsilon-prediction diffusion model over 3D volumes.

    Example:
        >>> from LungDDPMLib.config import preset
        >>> m = DiffusionModel(preset("tiny"))
        >>> layout = torch.zeros(1, 32, 32, 32, dtype=torch.long)
        >>> m.eps(torch.randn(1, 1, 32, 32, 32), torch.tensor([10]), m.condition(layout)).shape
        torch.Size([1, 1, 32, 32, 32])
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.denoise_fn = UNet3D(config.unet)
        self.schedule = NoiseSchedule(config.schedule)
        # The published file stores the schedule tables at the wrapper's top level, not under "schedule.".
        # Hooks (rather than overriding state_dict) keep that layout when this module sits inside DDP or another
        # module, since those recurse through the hooks and not through an overridden method.
        self._register_state_dict_hook(_flatten_schedule_keys)
        self._register_load_state_dict_pre_hook(_nest_schedule_keys)

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def condition(self, layout: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Turn a label layout (B, D, H, W) into the model's layout channels in [-1, 1].

        Channel ``lung`` is (label == 1) and ``nodule`` is (any nodule label), each scaled to {-1, 1}, as published;
        ``nodule_type`` holds each nodule voxel's density class (:func:`LungDDPMLib.config.condition_values`).
        """
        if layout.dim() != 4:
            raise InputError(f"layout must have shape (B, D, H, W), got {tuple(layout.shape)}")
        if any(name in CT_CHANNELS for name in self.config.unet.layout_channels):
            raise InputError(
                f"this model is conditioned on the real CT too ({', '.join(self.config.unet.layout_channels)}): pass "
                "its condition channels (LungDDPMLib.data.context.condition_channels), the layout alone is not enough"
            )
        untyped = self.config.nodule_types[0] if self.config.nodule_types else NODULE_TYPES[0]
        index = layout.long().clamp(0, max(LAYOUT_LABELS))
        chans = [
            torch.tensor(condition_values(name, untyped), dtype=dtype, device=layout.device)[index]
            for name in self.config.unet.layout_channels
        ]
        return torch.stack(chans, dim=1)

    @staticmethod
    def network_input(x_t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The UNet's input ``[x_t, layout channels]``; shared with the compiled and graph-replayed runners."""
        return torch.cat([x_t, cond.to(x_t.dtype)], dim=1)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predicted noise for noisy images ``x_t`` (B, 1, D, H, W) at levels ``t`` (B,) given ``cond``."""
        return self.denoise_fn(self.network_input(x_t, cond), t)

    def loss(
        self,
        x0: torch.Tensor,
        cond: torch.Tensor,
        *,
        generator: Optional[torch.Generator] = None,
        kind: str = "l1",
        t: Optional[torch.Tensor] = None,
        noise: Optional[torch.Tensor] = None,
        weight: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Training loss: noise ``x0`` to levels ``t`` and compare predicted with true noise (L1 as published).

        ``weight`` (B, 1, D, H, W), non-negative, makes each sample's loss a weighted mean over its voxels; the batch
        loss is then the mean over samples, so it does not depend on how a batch is split (uniform weights give the
        published loss exactly).

        ``t`` and ``noise`` are drawn from ``generator`` when not given (levels first, then noise); the trainer
        passes its own per-sample draws so that results do not depend on how a batch is split across processes.
        Without either, there is no seeded source of randomness, which is an error rather than a silent use of
        torch's global RNG.
        """
        if kind not in ("l1", "l2"):
            raise InputError(f"unknown loss {kind!r}; use 'l1' or 'l2'")
        if generator is None and (t is None or noise is None):
            raise InputError("pass generator= (a seeded torch.Generator), or both t= and noise=")
        if t is None:
            t = torch.randint(0, self.num_timesteps, (x0.shape[0],), device=x0.device, generator=generator)
        if noise is None:
            noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        pred = self.eps(self.schedule.q_sample(x0, t, noise), t, cond).float()
        if weight is None:
            if kind == "l1":
                return (pred - noise.float()).abs().mean()
            return F.mse_loss(pred, noise.float())
        if tuple(weight.shape) != (x0.shape[0], 1, *x0.shape[2:]) or bool((weight < 0).any()):
            raise InputError(f"loss weight must be non-negative with shape (B, 1, D, H, W), got {tuple(weight.shape)}")
        err = (pred - noise.float()).abs() if kind == "l1" else (pred - noise.float()) ** 2
        w = weight.float().expand_as(err).flatten(1)
        return ((err.flatten(1) * w).sum(1) / w.sum(1).clamp_min(1e-12)).mean()
