"""Exceptions that LungDDPM raises for problems a user can fix.

Every user-facing failure is a subclass of :class:`LungDDPMError`, so the CLI and the Slicer module can show
one clear line instead of a traceback, while programming errors (bugs) still surface as ordinary exceptions.
"""

from __future__ import annotations


class LungDDPMError(Exception):
    """Base class for errors caused by inputs, files or settings rather than by a bug."""


class InputError(LungDDPMError, ValueError):
    """An input array, option or argument is not acceptable (wrong shape, NaN, out of range...)."""


class CheckpointError(LungDDPMError):
    """A checkpoint file cannot be used: unreadable, unsafe, or made for another architecture."""


class UnsafeCheckpointError(CheckpointError):
    """The file is a pickle that would run code when loaded; we refuse to load it."""


class DiskFullError(LungDDPMError, OSError):
    """The output folder has no room (or no write permission) for the outputs; nothing was written there."""


class NumericalError(LungDDPMError):
    """A computation produced NaN or infinite values (damaged weights, or a precision too low for the model)."""


class CaseLockedError(LungDDPMError):
    """Another live process is synthesising the same case into the same output folder."""

    def __init__(self, message: str, owner: dict) -> None:
        super().__init__(message)
        self.owner = owner


class SamplingCancelled(LungDDPMError):
    """Raised inside a sampling loop when the caller asked to stop. Nothing partial is returned."""

    def __init__(self, step: int, total: int) -> None:
        super().__init__(f"sampling cancelled at step {step} of {total}")
        self.step = step
        self.total = total


def classify_error(exc: BaseException) -> str:
    """Error kinds for the worker protocol: what a front end needs to choose its message and its remedy."""
    if isinstance(exc, CheckpointError):
        return "checkpoint"
    if isinstance(exc, DiskFullError):
        return "disk-full"
    if isinstance(exc, NumericalError):
        return "numerical"
    if isinstance(exc, InputError):
        return "input"
    text = str(exc).lower()
    if (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or "out of memory" in text
        or "can't allocate memory" in text
        or "defaultcpuallocator" in text
    ):
        return "out-of-memory"
    return "internal"


def error_message(exc: BaseException, kind: str) -> str:
    """The line a user reads for an error of ``kind``: for running out of memory, what to change."""
    if kind == "out-of-memory":
        if type(exc).__name__ == "OutOfMemoryError" or "cuda" in str(exc).lower():
            return (
                "the GPU ran out of memory; try --mode roi (small patches), fewer samples per call (--batch-size 1), "
                "--precision bf16, or --device cpu"
            )
        return (
            "the computer ran out of memory; use fewer samples per case (--num-samples), fewer per call "
            "(--batch-size 1), or crop the CT to the chest"
        )
    return str(exc) or type(exc).__name__
