"""A montage of every nodule of a fidelity run: one row per nodule, real | each seed, lung window, with a HU bar.

Numbers alone hid a ground-glass nodule drawn as a dark hole; this is the picture that shows it. Each tile is the
axial slice through the nodule's centre, a fixed field of view around it, the layout's outline on the real tile;
each row is titled with its case, class, diameter and the mean HU of the real nodule and of each drawing.
Needs matplotlib (the ``report`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from ..data.preview import WINDOWS

#: Field of view of a tile (mm), enough for a 25 mm nodule and the lung around it.
FOV_MM = 40.0


def nodule_tiles(
    real: np.ndarray, synthetic: Sequence[np.ndarray], centre_zyx: Sequence[int], spacing_zyx: Sequence[float]
) -> list:
    """The axial tiles (HU, float32) through ``centre_zyx``: real first, then each synthetic CT."""
    z, y, x = (int(v) for v in centre_zyx)
    hy, hx = (round(FOV_MM / 2.0 / s) for s in spacing_zyx[1:])
    tiles = []
    for volume in (real, *synthetic):
        tile = np.full((2 * hy, 2 * hx), -1000.0, np.float32)
        src = volume[z, max(y - hy, 0) : y + hy, max(x - hx, 0) : x + hx]
        oy, ox = max(hy - y, 0), max(hx - x, 0)
        tile[oy : oy + src.shape[0], ox : ox + src.shape[1]] = src
        tiles.append(tile)
    return tiles


def write_montage(
    rows: Sequence[Dict[str, Any]], path: Union[str, Path], title: str, names: Optional[Sequence[str]] = None
) -> Path:
    """Write ``rows`` (each: ``tiles`` from :func:`nodule_tiles`, ``label`` str, ``means`` per tile) as a PNG;
    ``names`` titles the columns (default: real, seed 0, seed 1, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    level, width = WINDOWS["lung"]
    lo, hi = level - width / 2.0, level + width / 2.0
    cols = max(len(r["tiles"]) for r in rows)
    if names is not None and len(names) < cols:
        raise ValueError(f"{len(names)} column names for {cols} columns")
    for row in rows:
        per_tile = row.get("labels")
        if per_tile is not None and (not per_tile or len(row["tiles"]) % len(per_tile)):
            raise ValueError(f"{len(row['tiles'])} tiles cannot be split evenly among {len(per_tile)} labels")
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols + 0.9, 2.0 * len(rows) + 0.6), squeeze=False)
    image = None
    for i, row in enumerate(rows):
        # ``labels``: several nodules in one row, each group of tiles with its own label; else ``label`` on the first
        labels = row.get("labels") or [row["label"]]
        group = len(row["tiles"]) // len(labels) if row.get("labels") else cols
        for j in range(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row["tiles"]):
                ax.axis("off")
                continue
            image = ax.imshow(row["tiles"][j], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            name = names[j] if names is not None else "real" if j == 0 else f"seed {j - 1}"
            ax.set_title(f"{name}: {row['means'][j]:.0f} HU", fontsize=7)
            if j % group == 0:
                ax.set_ylabel(labels[j // group].replace(", ", "\n", 1), fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.86, 0.98))
    if image is not None:
        bar = fig.add_axes((0.88, 0.1, 0.02, 0.8))
        fig.colorbar(image, cax=bar).set_label("HU (lung window)", fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
