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
