"""The class densities of :data:`LungDDPMLib.sampling.density.DEFAULT_DENSITY`, measured on training phantoms.

Usage: python benchmarks/density_priors.py [--first 1000] [--cases 24] [--out docs/results/density-priors.json]

Phantoms of the ROI model's training seeds (from 1000; the held-out fidelity cases are seeds 0-11), each with one
nodule of each class as in :func:`LungDDPMLib.evaluation.heldout.heldout_case`. Per nodule the mean HU of the real
CT over the regions the density control sets (interior; for part-solid the solid core at the default fraction and
the rest), with vessels through ground glass left out as the sampler keeps them; per class the median over nodules.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LungDDPMLib.data.context import OPAQUE_LABELS, SEE_THROUGH_HU
from LungDDPMLib.evaluation.heldout import heldout_case
from LungDDPMLib.nodule_density import DEFAULT_DENSITY
from LungDDPMLib.sampling.density import region_means


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first", type=int, default=1000)
    ap.add_argument("--cases", type=int, default=24)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for seed in range(args.first, args.first + args.cases):
        ph = heldout_case(seed).phantom
        hu = sitk.GetArrayFromImage(ph.ct).astype(np.float32)
        labels = sitk.GetArrayFromImage(ph.layout)
        drawn = ~((hu > SEE_THROUGH_HU) & ~np.isin(labels, OPAQUE_LABELS))  # what the sampler keeps, as in synthesis
        fraction = DEFAULT_DENSITY["part-solid"].core_fraction
        for row in region_means(hu, labels, ph.ct.GetSpacing()[::-1], drawn, fraction):
            rows.append({"seed": seed, **row})
    summary = {}
    for kind in ("solid", "part-solid", "ground-glass"):
        mine = [r for r in rows if r["class"] == kind]
        summary[kind] = {
            key: {"median": round(float(np.median(v)), 1), "iqr": np.round(np.percentile(v, (25, 75)), 1).tolist()}
            for key in ("interior_hu", "core_hu", "interior_sd_hu", "core_sd_hu")
            if (v := [r[key] for r in mine if key in r])
        }
        summary[kind]["nodules"] = len(mine)
    options = " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None)
    result = {"command": f"python benchmarks/density_priors.py {options}", "summary": summary, "nodules": rows}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
