"""Figures for evaluation reports: a slice montage (real | synthetic | difference) and HU histograms per region.

The montage is plain numpy + the project's PNG writer, so it works in any Python (Slicer's included). The
histograms need labels and a legend to be readable, so they use matplotlib when it is installed (object API
with the Agg canvas: no pyplot, no global backend change); without it the histogram values still go to the
report's CSV and :func:`histogram_figure` returns ``None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage as ndi

from ..config import is_nodule
from ..data.preview import apply_window, write_png

#: Difference colour scale: |synthetic - real| from 0 (black) to this many HU (white-hot).
DIFF_SCALE_HU = 300.0
#: HU histogram bins shared by every region (8 HU wide, from air to dense bone).
HIST_EDGES = np.arange(-1024.0, 1024.0 + 8.0, 8.0)


def focus_slices(layout: Optional[np.ndarray], shape: Tuple[int, int, int]) -> Tuple[int, int]:
    """(z, y) through the centre of the largest nodule, else of the lung, else of the volume."""
    if layout is not None:
        for target in (is_nodule(layout), layout == 1):
            if target.any():
                parts, n = ndi.label(target)
                if n > 1:  # the centroid of several components lies between them: use the largest
                    sizes = ndi.sum_labels(target, parts, index=range(1, n + 1))
                    target = parts == 1 + int(np.argmax(sizes))
                z, y, _ = (round(float(c)) for c in ndi.center_of_mass(target))
                return z, y
    return shape[0] // 2, shape[1] // 2


def _hot(diff: np.ndarray) -> np.ndarray:
    """Black-red-yellow-white colour map for absolute differences in HU."""
    v = np.clip(diff / DIFF_SCALE_HU, 0, 1)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def comparison_montage(
    real: np.ndarray,
    synthetic: np.ndarray,
    layout: Optional[np.ndarray],
    spacing_zyx: Sequence[float],
    path: Union[str, Path],
    window: str = "lung",
) -> Path:
    """PNG with real | synthetic | |difference|, axial slice on top and coronal below, through a nodule.

    Arrays are ``(z, y, x)`` in HU; coronal slices are resampled to square millimetres (superior on top).
    The difference uses a fixed scale (0..300 HU) so that montages of different runs compare by eye.
    """
    z, y = focus_slices(layout, real.shape)
    diff = np.abs(synthetic.astype(np.float32) - real.astype(np.float32))
    rows = []
    for axial in (True, False):
        tiles = []
        for kind, vol in (("ct", real), ("ct", synthetic), ("diff", diff)):
            sl = vol[z] if axial else vol[::-1, y, :]
            if not axial:
                sl = ndi.zoom(sl.astype(np.float32), (spacing_zyx[0] / spacing_zyx[2], 1.0), order=1)
            tile = _hot(sl) if kind == "diff" else np.repeat(apply_window(sl, window)[..., None], 3, axis=2)
            tiles.append(np.pad(tile, ((0, 4), (0, 4), (0, 0))))
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return write_png(path, np.concatenate(rows, axis=0))


def region_histograms(
    real: np.ndarray, synthetic: np.ndarray, masks: Dict[str, np.ndarray]
) -> Dict[str, Optional[Dict[str, np.ndarray]]]:
    """HU histograms (voxel counts per 8 HU bin, clipped to the bin range) per region; None if empty.

    Counts rather than fractions so that histograms of several pairs can be summed; plots normalise them.
    """
    out: Dict[str, Optional[Dict[str, np.ndarray]]] = {}
    for name, m in masks.items():
        if not m.any():
            out[name] = None
            continue
        h = {}
        for key, vol in (("real", real), ("synthetic", synthetic)):
            counts, _ = np.histogram(np.clip(vol[m], HIST_EDGES[0], HIST_EDGES[-1]), bins=HIST_EDGES)
            h[key] = counts.astype(np.int64)
        out[name] = h
    return out


def histogram_figure(
    histograms: Dict[str, Optional[Dict[str, np.ndarray]]], path: Union[str, Path], title: str = ""
) -> Optional[Path]:
    """One panel per non-empty region, real (blue) against synthetic (orange); None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    names = [n for n, h in histograms.items() if h is not None]
    if not names:
        return None
    fig = Figure(figsize=(3.2 * len(names), 2.8), dpi=100)
    FigureCanvasAgg(fig)
    centres = (HIST_EDGES[:-1] + HIST_EDGES[1:]) / 2
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        counts = histograms[name]
        assert counts is not None
        h = {k: v / max(1, v.sum()) for k, v in counts.items()}
        for key, colour in (("real", "tab:blue"), ("synthetic", "tab:orange")):
            ax.plot(centres, h[key], color=colour, lw=1.2, label=key)
        both = h["real"] + h["synthetic"]
        nz = np.nonzero(both > 1e-4)[0]
        if nz.size:
            ax.set_xlim(centres[nz[0]] - 20, centres[nz[-1]] + 20)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("HU", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.set_ylabel("fraction of voxels", fontsize=8)
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
