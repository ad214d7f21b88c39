"""``lungddpm phantom OUTDIR``: write procedural thoracic CT phantoms with their layouts."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write phantom CTs (HU) with layouts (0 background, 1 lung, nodules 3 solid / 4 part-solid / "
        "5 ground-glass) and Slicer segmentations",
    )
    p.add_argument("outdir", help="output folder")
    p.add_argument("--n", type=int, default=1, help="how many phantoms (seeds seed, seed+1, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, nargs=3, default=(256, 256, 160), metavar=("X", "Y", "Z"))
    p.add_argument("--spacing", type=float, nargs=3, default=(0.8, 0.8, 1.5), metavar=("X", "Y", "Z"), help="mm")
    p.add_argument("--nodules", type=int, default=None, help="nodules per phantom (default: 2 random)")
    p.add_argument("--format", choices=("nrrd", "nii.gz"), default="nrrd")
    p.add_argument("--no-seg", action="store_true", help="do not write .seg.nrrd segmentations")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..phantom import make_phantom, save_phantom

    if args.n < 1:
        raise InputError(f"--n must be >= 1, got {args.n}")
    for i in range(args.n):
        seed = args.seed + i
        ph = make_phantom(tuple(args.size), tuple(args.spacing), seed=seed, nodules=args.nodules)
        paths = save_phantom(args.outdir, ph, name=f"phantom{seed:04d}", fmt=args.format, seg_nrrd=not args.no_seg)
        print(json.dumps({k: str(v) for k, v in paths.items()}), flush=True)
    return 0
