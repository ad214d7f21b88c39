"""``lungddpm synthesize``: one case or a resumable folder batch, with a progress line in the terminal."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict

from .exit_codes import EXIT_CANCELLED, EXIT_ERROR, EXIT_LOCKED, EXIT_OK, job_exit_code
from .job_args import add_job_arguments, cancel_on_signals, job_from_args, rank_and_world, remember_done
from .terminal import ProgressLine


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synthesize",
        help="synthesise CTs for a layout (one case, or a folder batch that can be resumed)",
        description="Writes the synthetic CT(s) in HU at the input's geometry, plus a provenance JSON per case. "
        "A batch skips cases done earlier with the same inputs, model and settings, goes on past bad cases and ends "
        "with a summary; under `torchrun --nproc-per-node K -m LungDDPMLib synthesize ...` each process takes its "
        "share of cases. A case done earlier with other settings is redone: its earlier outputs are replaced, with "
        "a warning that names them and what changed (files LungDDPM did not write are never replaced). Exit codes: "
        f"{EXIT_OK} done, {EXIT_ERROR} an error or a failed case, {EXIT_LOCKED} nothing failed but some case is being "
        f"synthesised by another live process (run again once it has finished), {EXIT_CANCELLED} cancelled.",
    )
    add_job_arguments(p, job_file=False)
    p.add_argument("--quiet", action="store_true", help="no progress or information lines (warnings, errors stay)")
    p.set_defaults(func=run)


class _Terminal:
    """Human-readable rendering of the worker's events: the progress line of :mod:`.terminal`, results as JSON."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.line = ProgressLine(quiet)

    def __call__(self, event: Dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "progress":
            where = f"[{event['case'] + 1}/{event['cases']}] {event['name']}"
            self.line.show(where, event["step"], event["total"], event["eta_s"])
        elif kind == "result":
            self.line.end()
            print(json.dumps({"name": event["name"], "paths": event["paths"]}), flush=True)
        elif kind == "skipped" and (not self.quiet or event.get("reason") != "done"):  # locked: not a success
            if event.get("reason") == "done":
                why = "already done with these inputs and settings"
            else:
                why = f"{event['message']}; its outputs are not there yet"
            print(f"{event['name']}: skipped ({why})", file=sys.stderr, flush=True)
        elif kind == "error":
            where = f"{event['name']}: " if "name" in event else ""
            print(f"error: {where}{event['message']}", file=sys.stderr, flush=True)
        elif kind == "log" and event.get("level") == "warning":
            print(f"warning: {event['message']}", file=sys.stderr, flush=True)
        elif kind == "log" and not self.quiet:
            print(event["message"], file=sys.stderr, flush=True)
        elif kind == "done" and not self.quiet:
            failed = event["failed"]
            print(
                f"done: {event['ok']} synthesised, {event['skipped']} skipped, {len(failed)} failed"
                + (f" ({', '.join(failed)})" if failed else "")
                + f" in {event['elapsed_s']:.1f} s",
                file=sys.stderr,
                flush=True,
            )


def run(args: argparse.Namespace) -> int:
    from ..errors import SamplingCancelled
    from ..worker import run_job

    job = job_from_args(args)
    should_stop, restore = cancel_on_signals()
    try:
        rank, world = rank_and_world()
        emit, done = remember_done(_Terminal(args.quiet))
        run_job(job, emit, should_stop, rank, world)
        code = job_exit_code(done)
        if code == EXIT_LOCKED:  # not a success: say so even with --quiet, as an error would be
            print(
                f"not finished: {', '.join(done['locked'])} still being synthesised by another process (see above); "
                f"run the same command again once it has finished (exit code {EXIT_LOCKED})",
                file=sys.stderr,
                flush=True,
            )
        return code
    except SamplingCancelled:
        print("cancelled: no partial outputs were written", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        restore()
