"""Figures for evaluation reports: a slice montage (real | synthetic | difference) and HU histograms per region.

A figure is read away from the report that explains it, so each says what it shows: the montage is titled with the
case, the sample, the slices and the window, and carries colour bars in HU (:func:`montage_figure`); the histograms
have labels and a legend. Both use matplotlib when it is installed (object API with the Agg canvas: no pyplot, no
global backend change). Without it the montage falls back to plain numpy and the project's PNG writer (untitled,
so that it still works in any Python), the histogram values still go to the report's CSV and
:func:`histogram_figure` returns ``None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage as ndi

from ..config import is_nodule
from ..data.preview import WINDOWS, apply_window, write_png

#: Difference colour scale: |synthetic - real| from 0 (black) to this many HU (white-hot).
DIFF_SCALE_HU = 300.0
#: HU histogram bins shared by every region (8 HU wide, from air to dense bone).
HIST_EDGES = np.arange(-1024.0, 1024.0 + 8.0, 8.0)


def focus(layout: Optional[np.ndarray], shape: Tuple[int, int, int]) -> Tuple[int, int, str]:
    """(z, y, what) through the centre of the largest nodule, else of the lung, else of the volume."""
    if layout is not None:
        for target, what in ((is_nodule(layout), "the largest nodule"), (layout == 1, "the lung")):
            if target.any():
                parts, n = ndi.label(target)
                if n > 1:  # the centroid of several components lies between them: use the largest
                    sizes = ndi.sum_labels(target, parts, index=range(1, n + 1))
                    target = parts == 1 + int(np.argmax(sizes))
                z, y, _ = (round(float(c)) for c in ndi.center_of_mass(target))
                return z, y, what
    return shape[0] // 2, shape[1] // 2, "the volume's centre"


def focus_slices(layout: Optional[np.ndarray], shape: Tuple[int, int, int]) -> Tuple[int, int]:
    """(z, y) of :func:`focus`."""
    return focus(layout, shape)[:2]


def _hot(diff: np.ndarray) -> np.ndarray:
    """Black-red-yellow-white colour map for absolute differences in HU."""
    v = np.clip(diff / DIFF_SCALE_HU, 0, 1)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def montage_figure(
    real: np.ndarray,
    synthetic: np.ndarray,
    layout: Optional[np.ndarray],
    spacing_zyx: Sequence[float],
    window: str = "lung",
    case: str = "",
    sample: str = "",
) -> Any:
    """The montage as a matplotlib ``Figure``: real | synthetic | |difference|, axial on top, coronal below.

    Titled with the case, the sample, the slices (through the largest nodule, else the lung) and the window; one
    colour bar in HU for the CT window and one for the difference (fixed 0..300 HU, so that montages of different
    runs compare by eye). Pixels keep their physical aspect (the coronal slice's is its z spacing). Raises
    ImportError without matplotlib.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    z, y, what = focus(layout, real.shape)
    level, width = WINDOWS[window]
    diff = np.abs(synthetic.astype(np.float32) - real.astype(np.float32))
    fig = Figure(figsize=(10.0, 6.6), dpi=100, constrained_layout=True)  # room for the titles and the bars
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    shown: Dict[str, Any] = {}
    for row, (plane, aspect) in enumerate(
        ((f"axial z={z}", spacing_zyx[1] / spacing_zyx[2]), (f"coronal y={y}", spacing_zyx[0] / spacing_zyx[2]))
    ):
        for col, (name, vol) in enumerate((("real", real), ("synthetic", synthetic), ("|synthetic - real|", diff))):
            sl = vol[z] if row == 0 else vol[::-1, y, :]  # coronal: superior on top
            ax = axes[row, col]
            if name.startswith("|"):
                shown["diff"] = ax.imshow(sl, cmap="hot", vmin=0.0, vmax=DIFF_SCALE_HU, aspect=aspect)
            else:
                shown["ct"] = ax.imshow(sl, cmap="gray", vmin=level - width / 2, vmax=level + width / 2, aspect=aspect)
            ax.set_title(f"{name}, {plane}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(shown["ct"], ax=list(axes[:, :2].ravel()), shrink=0.8).set_label("HU", fontsize=8)
    fig.colorbar(shown["diff"], ax=list(axes[:, 2]), shrink=0.8, extend="max").set_label("|difference| HU", fontsize=8)
    head = ", ".join(t for t in (f"case {case}" if case else "", f"sample {sample}" if sample else "") if t)
    fig.suptitle(
        f"{head + ': ' if head else ''}slices through {what}; {window} window (level {level:g}, width {width:g} HU)",
        fontsize=10,
    )
    return fig


def comparison_montage(
    real: np.ndarray,
    synthetic: np.ndarray,
    layout: Optional[np.ndarray],
    spacing_zyx: Sequence[float],
    path: Union[str, Path],
    window: str = "lung",
    case: str = "",
    sample: str = "",
) -> Path:
    """PNG with real | synthetic | |difference|, axial slice on top and coronal below, through a nodule.

    Arrays are ``(z, y, x)`` in HU. With matplotlib this is :func:`montage_figure` (titles and colour bars);
    without it an untitled tile image (coronal slices resampled to square millimetres, superior on top). The
    difference uses a fixed scale (0..300 HU) so that montages of different runs compare by eye.
    """
    try:
        fig = montage_figure(real, synthetic, layout, spacing_zyx, window, case, sample)
    except ImportError:
        fig = None
    if fig is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        return path
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
