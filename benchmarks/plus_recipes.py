"""One nodule with each recipe on a seeded Lung-DDPM+-architecture model: wall time, network calls, insertion.

Usage: OMP_NUM_THREADS=1 python benchmarks/plus_recipes.py [--width 8] [--cube 64] [--threads 1]

The model has the Lung-DDPM+ layout (4 levels, attention at level 2 and in the middle, nodule-only input) at a
narrow width with seeded weights, so the numbers say what the recipes cost relative to each other, not what the
released 39 M-parameter network costs. Two synthetic CTs (100 x 96 x 90 voxels, 0.8 x 0.8 x 1.25 mm): one nodule
well inside, one at the edge of the volume. For each: ``--recipe lungddpm`` (DPM-Solver++ 2M, 20 steps, composite of
nodule + 3 mm) and ``--recipe published`` (the authors' sample.py: 100 network calls, hard paste of the cube), and
the two insertion rules applied to the same published model output (the cube pasted whole, against the cube's
nodule + 3 mm composited into the real CT). Prints one JSON line per case.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import SimpleITK as sitk
import torch

from LungDDPMLib.config import preset
from LungDDPMLib.data.context import near_nodules
from LungDDPMLib.data.spatial import layout_region
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.synthesis import synthesize_case


def model(width: int, cube: int) -> DiffusionModel:
    torch.manual_seed(0)
    base = preset("lung-ddpm-plus")
    m = DiffusionModel(
        preset("lung-ddpm-plus", grid=(cube,) * 3, unet=dataclasses.replace(base.unet, model_channels=width))
    )
    with torch.no_grad():
        for p in m.denoise_fn.parameters():
            p.normal_(0.0, 0.2 if p.dim() > 1 else 0.05)
    return m.eval()


def case(nodule_zyx) -> tuple:
    shape = (90, 96, 100)  # (z, y, x)
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    lung = ((y - 48) / 40) ** 2 + ((x - 50) / 44) ** 2 < 1
    ct = np.where(lung, -850.0, 40.0) + rng.normal(0, 25, shape)
    lay = lung.astype(np.uint8)
    zc, yc, xc = nodule_zyx
    ball = (z - zc) ** 2 / 4 + (y - yc) ** 2 + (x - xc) ** 2 <= 16
    lay[ball] = 2
    ct[ball] = -20.0
    image = sitk.GetImageFromArray(ct.astype(np.int16))
    image.SetSpacing((0.8, 0.8, 1.25))
    layout = sitk.GetImageFromArray(lay)
    layout.CopyInformation(image)
    return image, layout


def run(m: DiffusionModel, ct, layout, recipe: str) -> dict:
    calls = []
    handle = m.denoise_fn.register_forward_pre_hook(lambda mod, args: calls.append(1))
    t0, c0 = time.perf_counter(), time.process_time()
    result = synthesize_case(ct, layout, m, seeds=[0], recipe=recipe, precision="fp32")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    handle.remove()
    # CPU seconds of this (one-thread) process stay meaningful on a shared machine; wall seconds do not.
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "network_calls": len(calls), "result": result}


def insertion_difference(ct, layout, published) -> dict:
    """The published output cube inserted whole vs composited over nodule + 3 mm only (our rule)."""
    real = sitk.GetArrayFromImage(ct).astype(np.float64)
    pasted = sitk.GetArrayFromImage(published.images[0]).astype(np.float64)
    cube = published.recipe["cubes"][0]
    box = tuple(slice(s, s + cube["size"]) for s in cube["start_zyx"])
    labels = sitk.GetArrayFromImage(layout)
    region = near_nodules(labels, ct.GetSpacing()[::-1], 3.0) & layout_region(labels)
    ours = real.copy()
    ours[region] = pasted[region]
    diff = pasted[box] - ours[box]
    return {
        "cube_start_zyx": cube["start_zyx"],
        "mean_hu_difference": round(float(diff.mean()), 1),
        "mean_abs_hu_difference": round(float(np.abs(diff).mean()), 1),
        "voxels_differing_pct": round(100 * float((diff != 0).mean()), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--cube", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = model(args.width, args.cube)
    for name, nodule in (("inside", (45, 48, 40)), ("edge", (86, 40, 4))):
        ct, layout = case(nodule)
        ours = run(m, ct, layout, "lungddpm")
        theirs = run(m, ct, layout, "published")
        row = {
            "case": name,
            "threads": args.threads,
            "width": args.width,
            "cube": args.cube,
            "lungddpm": {k: v for k, v in ours.items() if k != "result"},
            "published": {k: v for k, v in theirs.items() if k != "result"},
            "insertion": insertion_difference(ct, layout, theirs["result"]),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
