"""The progress line the commands print for a person: overwritten in place on a terminal, and in a log (not a
terminal) at most every 10 s and at the end, so a batch's log stays readable."""

from __future__ import annotations

import sys
import time

#: Seconds between progress lines when stderr is not a terminal.
LOG_EVERY_S = 10.0


class ProgressLine:
    """``[item/items] name  [####      ] step/total  eta N s`` on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def show(self, where: str, step: int, total: int, eta_s: float) -> None:
        final = step == total
        if self.quiet or (not self.tty and time.monotonic() - self.last < LOG_EVERY_S and not final):
            return
        self.last = time.monotonic()
        bar = "#" * int(30 * step / total)
        line = f"{where}  [{bar:<30}] {step}/{total}  eta {eta_s:.0f} s"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def end(self) -> None:
        """Close an overwritten line before other output."""
        if self.tty and not self.quiet:
            print(file=sys.stderr)
