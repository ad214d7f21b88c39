"""Exit codes of the ``lungddpm`` command, in one module that the CLI and every subcommand import.

They live apart from :mod:`LungDDPMLib.cli` because the subcommands need them too, and a subcommand that imported
the CLI would close an import circle (the CLI imports every subcommand to build its parser).

* ``0`` - everything asked for is done (synthesised now, or found done with the same inputs and settings);
* ``1`` - an error: a bad input or setting, or some case failed;
* ``75`` - nothing failed, but some case is being synthesised by another live process (its lock is held), so its
  outputs are not there yet: run the same command again once that process has finished (``EX_TEMPFAIL`` of
  ``sysexits.h``: a temporary failure, the user is invited to retry);
* ``130`` - stopped by SIGTERM or SIGINT (no partial output left; training wrote a checkpoint to resume from).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_LOCKED = 75
EXIT_CANCELLED = 130


def job_exit_code(done: dict) -> int:
    """The exit code of a synthesis job from its ``done`` event: a failure wins over a case left to another
    process, which wins over success (a run that only skipped cases another process holds must not look done)."""
    if done.get("failed"):
        return EXIT_ERROR
    if done.get("locked"):
        return EXIT_LOCKED
    return EXIT_OK
