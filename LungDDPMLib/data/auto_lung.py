"""The automatic lung mask: the lung found in the CT itself, for layouts that hold only nodules (or whose lung is
to be replaced). ``--auto-lung`` chooses when it is used (:data:`AUTO_LUNG_MODES`); every error about a missing lung
gives :data:`AUTO_LUNG_HINT`, the words of the option that really rescues it."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..config import LABEL_LUNG
from ..errors import InputError
from .io import Geometry

#: ``never``: the layout must hold the lung; ``if-missing``: the lung is found in the CT when the layout has none;
#: ``always``: the lung is found in the CT, the layout gives only the nodules.
AUTO_LUNG_MODES = ("never", "if-missing", "always")
#: The advice where a layout has no lung: what works on the command line and in Python alike.
AUTO_LUNG_HINT = "or let the lung be found in the CT (--auto-lung if-missing; auto_lung='if-missing' in Python)"


def check_auto_lung_mode(mode: str) -> None:
    if mode not in AUTO_LUNG_MODES:
        raise InputError(f"unknown auto_lung mode {mode!r}; choose one of {', '.join(AUTO_LUNG_MODES)}")


def auto_lung_mask(ct: sitk.Image, threshold: float = -400.0) -> sitk.Image:
    """Lung mask from a CT: air-like voxels not connected to the air around the body, the one or two
    largest such components, holes (vessels, nodules) filled slice by slice. Good enough to condition
    synthesis; the trachea and main bronchi may be included. Assumes axial slices along the array's
    first axis, as in any CT series."""
    hu = sitk.GetArrayViewFromImage(ct)
    air = hu < threshold
    labels, n = ndi.label(air)
    if n == 0:
        raise InputError(
            f"the CT has no voxels below {threshold} HU, so no lung can be found automatically; "
            "draw the lungs in the layout"
        )
    # Air outside the body touches the in-plane borders; the lungs do not, although the trachea may leave
    # the volume through its top or bottom face, so those faces do not count.
    border = np.unique(np.concatenate([labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()]))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    sizes[border] = 0
    if sizes.max() == 0:
        raise InputError(
            "no enclosed air region (lung) found in the CT; it may be cropped through the body "
            "or not contain the lungs; draw the lungs in the layout"
        )
    order = np.argsort(sizes)[::-1]
    keep = [order[0]] + [i for i in order[1:2] if sizes[i] > 0.2 * sizes[order[0]]]
    mask = np.isin(labels, keep)
    for k in range(mask.shape[0]):
        if mask[k].any():
            mask[k] = ndi.binary_fill_holes(mask[k])
    out = Geometry.of(ct).image_from_array(mask.astype(np.uint8) * LABEL_LUNG)
    return out
