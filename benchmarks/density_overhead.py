"""What the density control costs: one held-out case drawn by the bundled ROI model with ``--density off`` and
``auto``, alternating, same seed, in one process.

Usage: OMP_NUM_THREADS=1 python benchmarks/density_overhead.py [--case 1] [--repeats 2] [--out overhead.json]

Reports the process CPU seconds of ``synthesize_case`` (wall seconds too; on a shared machine the CPU seconds are the
figure to compare) and the ratio auto / off.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from LungDDPMLib.checkpoint import load_checkpoint
from LungDDPMLib.data.axes import native_grid
from LungDDPMLib.evaluation.heldout import heldout_case
from LungDDPMLib.nodule_density import parse_density
from LungDDPMLib.registry import ROI_FILE
from LungDDPMLib.sampling import SamplerConfig
from LungDDPMLib.synthesis import synthesize_case


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    ckpt = load_checkpoint(ROI_FILE)
    case = heldout_case(args.case, tuple(native_grid(ckpt.config.grid, ckpt.config.array_order)))
    ph = case.phantom
    times = {"off": [], "auto": []}
    for _ in range(args.repeats):
        for name in ("off", "auto"):
            cpu, wall = time.process_time(), time.perf_counter()
            synthesize_case(ph.ct, ph.layout, ckpt.model, sampler=SamplerConfig("dpm++", steps=20), seeds=[0],
                            density=parse_density(name))  # fmt: skip
            times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
    result = {
        "command": f"python benchmarks/density_overhead.py --case {args.case} --repeats {args.repeats}",
        "nodules": len(case.nodules),
        **{f"{k}_cpu_s": [round(c, 2) for c, _ in v] for k, v in times.items()},
        **{f"{k}_wall_s": [round(w, 2) for _, w in v] for k, v in times.items()},
    }
    result["ratio_cpu_median"] = round(
        float(np.median([c for c, _ in times["auto"]]) / np.median([c for c, _ in times["off"]])), 3
    )
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
