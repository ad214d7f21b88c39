"""The ``lungddpm`` command.

Each subcommand lives in a small function; errors a user can fix print as one line (``error: ...``) with a
non-zero exit code, and ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from . import __version__
from .errors import LungDDPMError

EXIT_USAGE, EXIT_ERROR, EXIT_CANCELLED = 2, 1, 130


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a checkpoint as JSON without trusting it (weights_only loading)."""
    from .checkpoint import load_checkpoint
    from .model import count_parameters

    ckpt = load_checkpoint(args.checkpoint, weights=args.weights)
    cfg = ckpt.config
    info = {
        "path": ckpt.path,
        "format": ckpt.format,
        "preset": cfg.preset or None,
        "parameters": count_parameters(ckpt.model.denoise_fn),
        "timesteps": cfg.schedule.timesteps,
        "layout_channels": list(cfg.unet.layout_channels),
        "normalization": cfg.normalization,
        "spatial_mode": cfg.spatial_mode,
        "grid": list(cfg.grid),
        "step": ckpt.step,
        "weights": ckpt.weights,
        "sha256": ckpt.sha256,
        "provenance": ckpt.provenance,
    }
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lungddpm",
        description="Synthesise 3D thoracic CT from lung/nodule layouts with a Lung-DDPM-compatible diffusion model.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    info = sub.add_parser("info", help="describe a checkpoint (format, architecture, sha256) as JSON")
    info.add_argument("checkpoint", help="a .pt file: a LungDDPM checkpoint or the published Lung-DDPM file")
    info.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights to inspect")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except LungDDPMError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
