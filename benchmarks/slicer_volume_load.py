"""What the Slicer module does on Slicer's main thread per 512 x 512 x 300 volume, timed on a headless scene.

Why: users saw the GUI freeze about 5 s per loaded volume of that size. Everything the module runs on the main
thread for a synthesis is timed here by stage, on a real MRML scene from ``slicer-core`` (no Qt, no worker: the
worker's output file is written here, so only the module's own work is measured):

- ``check``: checking the CT and building the layout from the segments (``SynthesisRun.check_inputs``);
- ``write``: writing the CT and the layout for the worker (``SynthesisRun.write_inputs``, in ``prepare``);
- ``load/volume``: loading each synthetic volume into the scene (``finish``), per volume, and the layout.

Usage: ``python benchmarks/slicer_volume_load.py [--size 512 512 300] [--samples 2] [--repeats 2]`` (needs
slicer-core; about 2 GB of memory). Prints one line per stage, the best of the repeats, in seconds.

Measured on the 2-core development machine under a load of about 9 (four agents), best of 2, two runs each,
before (commit 1c7b15c) -> after: check 2.4-5.2 s -> 0.6-1.2 s, write 0.57-0.80 s -> 0.47-0.58 s, load per volume
2.0-2.9 s -> 0.43-0.60 s; one run with one sample about 5.2 s -> 1.5 s of main-thread time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "Testing" / "Python"), str(ROOT / "LungDDPM")]


def chest(size_ijk: List[int], seed: int = 0) -> Dict[str, np.ndarray]:
    """A CT-like int16 volume (air, body, two lungs, noise) and its lung and nodule masks, ``(K, J, I)``."""
    i, j, k = size_ijk
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[-1 : 1 : k * 1j, -1 : 1 : j * 1j, -1 : 1 : i * 1j]
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 <= 1.0
    lung = (((x - 0.4) / 0.3) ** 2 + (y / 0.45) ** 2 + (z / 0.9) ** 2 <= 1.0) | (
        ((x + 0.4) / 0.3) ** 2 + (y / 0.45) ** 2 + (z / 0.9) ** 2 <= 1.0
    )
    nodule = ((x - 0.4) ** 2 + y**2 + z**2) <= 0.08**2
    ct = np.full((k, j, i), -1000, np.int16)
    ct[np.broadcast_to(body, ct.shape)] = 40
    ct[lung] = -850
    ct[nodule] = 20
    ct += rng.integers(-20, 20, ct.shape, dtype=np.int16)
    return {"ct": ct, "lung": lung.astype(np.uint8), "nodule": nodule.astype(np.uint8)}


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 300], metavar=("I", "J", "K"))
    parser.add_argument("--samples", type=int, default=2, help="synthetic volumes loaded per run (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many (default 2)")
    args = parser.parse_args(argv)

    import conftest_slicer

    slicer = conftest_slicer.setup_headless()
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import scene_outputs as so
    from LungDDPMLogic.synthesis_run import RunSettings, SynthesisRun
    from LungDDPMLogic.worker_launcher import WorkerProcess, write_volume_nrrd

    data = chest(args.size)
    scene = slicer.mrmlScene
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    ct.SetSpacing(0.7, 0.7, 1.0)
    slicer.util.updateVolumeFromArray(ct, data["ct"])
    ct.CreateDefaultDisplayNodes()
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Layout")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    for name in ("lung", "nodule"):
        sid = seg.GetSegmentation().AddEmptySegment("", name.capitalize(), [0.5, 0.5, 0.5])
        slicer.util.updateSegmentBinaryLabelmapFromArray(data[name], seg, sid, ct)

    results: Dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        run = SynthesisRun(ct, seg, RunSettings(num_samples=args.samples))
        results["check"] = best_of(args.repeats, run.check_inputs)
        results["write"] = best_of(args.repeats, lambda: run.write_inputs(folder))
        geometry = mb.sitk_geometry(ct)
        rng = np.random.default_rng(1)
        paths = []
        for n in range(args.samples):
            out = (data["ct"] + rng.integers(-5, 5, data["ct"].shape, dtype=np.int16)).astype(np.int16)
            paths.append(str(write_volume_nrrd(out, geometry, Path(folder) / f"synthetic_{n}.nrrd")))
        provenance = {"seeds": list(range(args.samples)), "sampler": "dpm++", "steps": 20}

        def load() -> None:
            run.worker = WorkerProcess(workdir=str(Path(folder) / "work"))
            run.results = [{"type": "result", "case": 0, "paths": paths, "provenance": provenance}]
            run._raise_if_failed = lambda: None  # the worker is not run here; its output files are
            outputs = run.finish()
            so.remove_folder(outputs.folder)

        results["load"] = best_of(args.repeats, load)
    results["load/volume"] = results["load"] / args.samples
    for stage, seconds in results.items():
        print(f"{stage:12s} {seconds:7.2f} s")
    print(json.dumps({"size": args.size, "samples": args.samples, "seconds": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
