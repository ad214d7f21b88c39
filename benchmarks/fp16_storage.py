"""What storing a model's weights in float16 changes in its output (the bundle's 20 MB budget).

Usage: OMP_NUM_THREADS=1 python benchmarks/fp16_storage.py [--checkpoint LungDDPMLib/models/lungddpm-roi.pt]
    [--mode roi|full] [--phantom-seed 8] [--nodules 3] [--seeds 0 1] [--out fp16.json]

Exports the checkpoint twice (``lungddpm export --storage float32`` and ``float16``), draws the same phantom with
both (``synthesize --mode MODE --precision fp32``, same seeds; ``full`` for the whole-lung demo model), and reports
the file sizes and, per seed, how many voxels differ, the largest and 99th-percentile difference, and per nodule
class the mean HU of both. Computation is fp32 either way: only the stored weights are rounded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LungDDPMLib.config import LABEL_OF_TYPE
from LungDDPMLib.registry import ROI_FILE


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "LungDDPMLib", *args], check=True, capture_output=True, text=True)


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROI_FILE))
    ap.add_argument("--mode", choices=("roi", "full"), default="roi", help="synthesize's mode for this model")
    ap.add_argument("--phantom-seed", type=int, default=8)
    ap.add_argument("--nodules", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", type=Path, default=None, help="JSON to write (default: print only)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = {s: work / f"{s}.pt" for s in ("float32", "float16")}
        for storage, path in files.items():
            _cli("export", args.checkpoint, str(path), "--storage", storage)
        _cli("phantom", str(work / "ph"), "--seed", str(args.phantom_seed), "--nodules", str(args.nodules))
        ct, layout = next((work / "ph").glob("*_ct.nrrd")), next((work / "ph").glob("*_layout.nrrd"))
        labels = _array(layout)
        report = {
            "checkpoint": args.checkpoint,
            "mode": args.mode,
            "bytes": {s: p.stat().st_size for s, p in files.items()},
            "seeds": {},
        }
        for seed in args.seeds:
            outs = {}
            for storage, path in files.items():
                outs[storage] = work / f"out-{storage}-{seed}.nrrd"
                _cli("synthesize", "--mode", args.mode, "--checkpoint", str(path), "--ct", str(ct), "--layout",
                     str(layout), "--out", str(outs[storage]), "--seed", str(seed), "--precision", "fp32",
                     "--device", "cpu", "--quiet")  # fmt: skip
            a, b = _array(outs["float32"]), _array(outs["float16"])
            diff = np.abs(a - b)
            changed = diff > 0
            classes = {}
            for name, value in LABEL_OF_TYPE.items():
                mask = labels == value
                if mask.any():
                    classes[name] = {"mean_fp32": float(a[mask].mean()), "mean_fp16": float(b[mask].mean()),
                                     "max_abs_diff": float(diff[mask].max())}  # fmt: skip
            report["seeds"][str(seed)] = {
                "voxels": int(diff.size),
                "voxels_changed": int(changed.sum()),
                "max_abs_diff_hu": float(diff.max()),
                "p99_changed_hu": float(np.percentile(diff[changed], 99)) if changed.any() else 0.0,
                "classes": classes,
            }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
