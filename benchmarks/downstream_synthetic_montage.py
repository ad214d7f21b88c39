"""Look at the downstream experiment's synthetic cases: every nodule drawn by the phantom generator | by the model.

Usage:
    python benchmarks/downstream_synthetic_montage.py --phantom-cache DIR --model-cache DIR [--seeds 4000 ...]
        --out montage.png

Both caches hold ``synthetic<seed>_ct.nrrd`` / ``_layout.nrrd`` of the same layouts (the phantom-drawn ablation's
cache and the model's, under ``runs/downstream-powered/cache/``). Per nodule (connected component of the layout), a
pair of tiles, three pairs to a row: the axial slice through its centre, lung window, titled with the mean HU inside
the layout's nodule mask.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from LungDDPMLib.config import TYPE_OF_LABEL, is_nodule
from LungDDPMLib.data.io import read_image
from LungDDPMLib.evaluation.nodule_montage import nodule_tiles, write_montage


def _array(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(read_image(path)).astype(np.float32)


def rows_for(seed: int, phantom: Path, model: Path) -> list:
    import SimpleITK as sitk

    layout_image = read_image(phantom / f"synthetic{seed}_layout.nrrd")
    layout = sitk.GetArrayFromImage(layout_image)
    other = sitk.GetArrayFromImage(read_image(model / f"synthetic{seed}_layout.nrrd"))
    if not np.array_equal(layout, other):
        raise SystemExit(f"layout seed {seed}: the two caches hold different layouts, so they are not one ablation")
    drawn = [_array(phantom / f"synthetic{seed}_ct.nrrd"), _array(model / f"synthetic{seed}_ct.nrrd")]
    spacing = tuple(layout_image.GetSpacing())[::-1]
    components, n = ndi.label(is_nodule(layout))
    rows = []
    for k in range(1, n + 1):
        mask = components == k
        centre = [round(float(c)) for c in ndi.center_of_mass(mask)]
        kind = TYPE_OF_LABEL.get(int(np.bincount(layout[mask]).argmax()), "nodule")
        diameter = (6.0 * mask.sum() * np.prod(spacing) / np.pi) ** (1.0 / 3.0)
        rows.append(
            {
                "tiles": nodule_tiles(drawn[0], drawn[1:], centre, spacing),
                "label": f"layout {seed}, {kind}, {diameter:.0f} mm",
                "means": [float(v[mask].mean()) for v in drawn],
            }
        )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phantom-cache", type=Path, required=True)
    ap.add_argument("--model-cache", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(4000, 4008)))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    nodules = [row for seed in args.seeds for row in rows_for(seed, args.phantom_cache, args.model_cache)]
    rows = []  # three nodules side by side per row, so that the picture is not one long strip
    for i in range(0, len(nodules), 3):
        group = nodules[i : i + 3]
        rows.append(
            {
                "tiles": [t for r in group for t in r["tiles"]],
                "label": " | ".join(r["label"] for r in group),
                "means": [m for r in group for m in r["means"]],
                "labels": [r["label"] for r in group],
            }
        )
    title = "downstream synthetic cases: the phantom's own drawing | the bundled ROI model's (DPM-Solver++ 20)"
    write_montage(rows, args.out, title, names=["phantom", "model"] * 3)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
