"""The ``lungddpm`` command.

Each subcommand lives in its own module under ``commands/``; errors a user can fix print as one line
(``error: ...``) with a non-zero exit code, and ``--debug`` shows the traceback instead. The exit codes are in
:mod:`LungDDPMLib.commands.exit_codes` (re-exported here), where every subcommand can import them without a circle.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import __version__
from .commands import (
    augment,
    demo,
    distill,
    downstream,
    evaluate,
    export,
    import_lidc,
    info,
    phantom,
    probe,
    synthesize,
    train,
    worker,
)
from .commands.exit_codes import EXIT_CANCELLED, EXIT_ERROR
from .errors import LungDDPMError

__all__ = ["EXIT_CANCELLED", "EXIT_ERROR", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lungddpm",
        description="Synthesise 3D thoracic CT from lung/nodule layouts with a Lung-DDPM-compatible diffusion model.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    for module in (synthesize, augment, import_lidc, demo, evaluate, train, distill, phantom, info, export, worker):
        module.add_parser(sub)
    for module in (downstream, probe):
        module.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:
        if args.debug:
            raise
        from .worker import classify_error, error_message

        kind = classify_error(exc)
        known = isinstance(exc, LungDDPMError) or kind == "out-of-memory"
        text = (
            error_message(exc, kind)
            if known
            else f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)"
        )
        print(f"error: {text}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
