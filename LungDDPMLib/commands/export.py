"""``lungddpm export RUN/last.pt OUT.pt``: keep one set of weights for inference (no optimiser state)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write an inference-only copy of a checkpoint (EMA weights by default)")
    p.add_argument("source", help="a training checkpoint (e.g. RUN/last.pt)")
    p.add_argument("target", help="the file to write")
    p.add_argument("--weights", choices=("ema", "model"), default="ema")
    p.add_argument(
        "--storage",
        choices=("float32", "float16"),
        default="float32",
        help="how the parameters are stored; float16 halves the file (loading casts back to float32)",
    )
    p.add_argument(
        "--levels",
        default=None,
        metavar="T1,T2,..",
        help="students only: the DDIM levels to run at by default, a schedule chosen on validation phantoms",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import export_weights, file_sha256
    from ..errors import InputError

    levels = None
    if args.levels is not None:
        try:
            levels = [int(t) for t in args.levels.split(",")]
        except ValueError:
            raise InputError(f"--levels takes comma-separated integer levels, got {args.levels!r}") from None
    path = export_weights(args.source, args.target, weights=args.weights, storage=args.storage, levels=levels)
    print(json.dumps({"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}))
    return 0
