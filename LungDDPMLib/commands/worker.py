"""``lungddpm worker``: run a job and report it as JSON lines on stdout (the Slicer module's back end).

Exit codes (:mod:`.exit_codes`): 0 every case done (now, or found done earlier), 1 some case failed or nothing could
run, 75 nothing failed but some case is being synthesised by another live process (run again once it has finished),
130 cancelled by SIGTERM or SIGINT (no partial output is left behind).
"""

from __future__ import annotations

import argparse
import sys

from .exit_codes import EXIT_CANCELLED, EXIT_ERROR, job_exit_code
from .job_args import add_job_arguments, cancel_on_signals, job_from_args, rank_and_world, remember_done


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a synthesis job, printing one JSON event per line (for GUIs and scripts)")
    add_job_arguments(p, job_file=True)
    p.add_argument(
        "--metrics", action="store_true", help="after each result, a 'metrics' event (paired metrics, HU histograms)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Every outcome reaches the caller as events: a failure before or outside the cases is one ``error`` event
    followed by ``done`` (a front end never has to parse a traceback from stderr)."""
    from ..errors import SamplingCancelled
    from ..worker import classify_error, emit_json_lines, error_message, run_job

    emit = emit_json_lines(sys.stdout)
    should_stop, restore = cancel_on_signals()
    try:
        job = job_from_args(args)
        rank, world = rank_and_world()
        if getattr(args, "metrics", False):
            from ..gui_tasks import with_metrics

            emit = with_metrics(emit, job)
        emit, done = remember_done(emit)
        run_job(job, emit, should_stop, rank, world)
        return job_exit_code(done)
    except SamplingCancelled:
        return EXIT_CANCELLED
    except Exception as exc:
        kind = classify_error(exc)
        message = error_message(exc, kind)
        if kind == "internal":
            message = f"{type(exc).__name__}: {message} (a bug; please report it with the job file)"
        emit({"type": "error", "kind": kind, "message": message})
        emit({"type": "done", "ok": 0, "skipped": 0, "failed": [], "locked": [], "cancelled": False, "elapsed_s": 0.0})
        return EXIT_ERROR
    finally:
        restore()
