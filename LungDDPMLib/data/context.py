"""What an ROI model may see of the real CT: the anatomy it keeps, and what passes through the part it redraws.

ROI synthesis regenerates each nodule plus a margin and keeps the rest of the patch from the real CT. A model that is
told only the layout must guess what lies in the region it redraws: a model trained that way erased the vessels that
run through ground-glass nodules and, unsure of the lung level around them, drew some ground glass darker than the
lung. Models with the :data:`~LungDDPMLib.config.CT_CHANNELS` are shown, as two extra condition channels,

* ``context``: the normalised real CT wherever it is *known* (``-1`` elsewhere), and
* ``context_known``: ``+1`` where it is known, ``-1`` where the model must draw.

Known are the voxels the sampler keeps (outside the regenerated region) and, inside it, the voxels where the real CT
is denser than aerated lung can be (:data:`SEE_THROUGH_HU`) and no opaque nodule lies: vessels and airway walls. A
vessel keeps its density through ground glass, which only adds haze; inside a solid or part-solid nodule (or one of
unstated class, drawn as solid) the real CT cannot tell a vessel from the nodule, so nothing there is known.

The rule uses only what a user's CT and layout hold, so training (patches of a CT that has the nodule) and
synthesis (a patch where a nodule is drawn anew, or redrawn) build the channels the same way.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ..config import CT_CHANNELS, LABEL_NODULE, LABEL_OF_TYPE, condition_values, is_nodule
from .masks import within_distance
from .normalize import DEFAULT_HU_WINDOW, window_forward

#: ``roi`` mode regenerates each nodule and the lung within this distance; the rest of the patch stays real. Without
#: that anchor a patch deep in the lung (almost no background voxel to keep) drifts in brightness with the sampling
#: noise (measured with the first bundled ROI model: parenchyma -430..-80 HU in place of -810 HU over four seeds).
ROI_MARGIN_MM = 3.0
#: Real-CT voxels above this inside the regenerated region are structures the model must keep (vessels, airway
#: walls): aerated lung is about -850 HU and ground glass -700..-500 HU, a vessel about +40 HU at its centre.
SEE_THROUGH_HU = -350.0
#: Labels whose real CT hides what passes through them: solid and part-solid nodules, and unstated ones (drawn solid).
OPAQUE_LABELS = (LABEL_NODULE, LABEL_OF_TYPE["solid"], LABEL_OF_TYPE["part-solid"])


def near_nodules(labels: np.ndarray, spacing: Sequence[float], margin_mm: float) -> np.ndarray:
    """Voxels of any nodule, or within ``margin_mm`` of one (``spacing`` in the array's own axis order)."""
    return within_distance(is_nodule(np.asarray(labels)), spacing, margin_mm)


def known_voxels(
    x: np.ndarray, labels: np.ndarray, regenerated: np.ndarray, window: Tuple[float, float] = DEFAULT_HU_WINDOW
) -> np.ndarray:
    """Where the model is told the real CT: outside ``regenerated``, and the see-through voxels inside it.

    ``x`` is the CT in the ``hu-window`` normalisation of ``window``; all arrays share one shape and axis order.
    """
    threshold = float(window_forward(np.float32(SEE_THROUGH_HU), window)[0])
    see_through = regenerated & (x > threshold) & ~np.isin(labels, OPAQUE_LABELS)
    return ~regenerated | see_through


def ct_channel(name: str, x: np.ndarray, known: np.ndarray) -> np.ndarray:
    """One of :data:`~LungDDPMLib.config.CT_CHANNELS` (float32, values in [-1, 1])."""
    if name == "context":
        return np.where(known, np.clip(x, -1.0, 1.0), -1.0).astype(np.float32)
    if name == "context_known":
        return np.where(known, 1.0, -1.0).astype(np.float32)
    raise ValueError(f"{name!r} is not a CT channel ({', '.join(CT_CHANNELS)})")


def condition_channels(
    names: Sequence[str],
    labels: np.ndarray,
    x: np.ndarray,
    regenerated: Optional[np.ndarray],
    untyped_as: str = "solid",
    window: Tuple[float, float] = DEFAULT_HU_WINDOW,
) -> np.ndarray:
    """Every condition channel of a model, ``(C, ...)`` float32: layout channels looked up from ``labels`` (as
    :meth:`~LungDDPMLib.diffusion.DiffusionModel.condition` does) and CT channels from ``x`` and ``regenerated``
    (a model without CT channels needs neither)."""
    labels = np.asarray(labels)
    known = known_voxels(x, labels, regenerated, window) if uses_ct(names) else None
    index = np.clip(labels.astype(np.int64), 0, None)
    out = []
    for name in names:
        if name in CT_CHANNELS:
            out.append(ct_channel(name, x, known))
        else:
            out.append(np.asarray(condition_values(name, untyped_as), np.float32)[index])
    return np.stack(out).astype(np.float32)


def uses_ct(names: Sequence[str]) -> bool:
    """Whether a model with these condition channels needs the real CT to build them."""
    return any(n in CT_CHANNELS for n in names)
