"""Denoiser forward latency and peak memory per preset and grid size, on the chosen device.

Usage: python benchmarks/forward_latency.py [--presets lung-ddpm small] [--sizes 64 128] [--device cpu] [--repeats 3]
Prints one JSON line per (preset, size). CPU peak memory is the process's max RSS growth during the run.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

from LungDDPMLib.config import preset
from LungDDPMLib.device import autocast_context, resolve_device
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.model import count_parameters


def max_rss_mb() -> float:
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024 / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["lung-ddpm", "small"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = resolve_device(args.device)
    for name in args.presets:
        model = DiffusionModel(preset(name)).to(device).eval()
        for size in args.sizes:
            x = torch.randn(1, 1, size, size, size, device=device)
            cond = model.condition(torch.zeros(1, size, size, size, dtype=torch.long, device=device))
            t = torch.tensor([100], device=device)
            rss0 = max_rss_mb()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            with torch.inference_mode(), autocast_context(device, args.precision):
                for _ in range(args.repeats + 1):  # the first call warms up allocators and kernels
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    start = time.perf_counter()
                    model.eps(x, t, cond)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    times.append(time.perf_counter() - start)
            row = {
                "preset": name,
                "parameters": count_parameters(model.denoise_fn),
                "size": size,
                "device": str(device),
                "precision": args.precision,
                "threads": torch.get_num_threads(),
                "forward_s_median": sorted(times[1:])[len(times[1:]) // 2],
                "forward_s_min": min(times[1:]),
                "peak_rss_growth_mb": round(max_rss_mb() - rss0, 1),
            }
            if device.type == "cuda":
                row["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
