"""The state of one kind of background task (a synthesis, an FID/MMD computation) and of the button that drives it.

Why a qt-free class: ``slicer.util.tryWithErrorDisplay`` shows an error and re-raises it, so a widget that resets
its state after the call never resets it when the call fails; the button then keeps saying *Cancel* and the next
press starts a new run. Here every transition restores the state in ``finally`` before any exception leaves, and
the widget only mirrors :attr:`TaskSlot.button_text` / :attr:`TaskSlot.button_enabled`. It is tested on a real
MRML scene with real worker processes, no Qt needed.

States: ``idle`` -> :meth:`TaskSlot.start` -> ``running`` -> (finished) -> ``idle``;
``running`` -> :meth:`TaskSlot.cancel` -> ``stopping`` (button disabled until the process tree is gone) -> ``idle``.
The GUI's timer polls through :func:`tick_safely`, which reports a failure instead of letting it escape.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Dict, List, Optional, Protocol


class Task(Protocol):
    """What :class:`~.synthesis_run.SynthesisRun` and :class:`~.set_metrics_run.SetMetricsRun` provide."""

    def poll(self) -> Any: ...

    @property
    def finished(self) -> bool: ...

    def cancel(self) -> None: ...

    def discard(self) -> None: ...


class State(str, Enum):
    IDLE = "idle"
    RUNNING = "running"
    STOPPING = "stopping"


@dataclass
class Outcome:
    """How a task ended: ``done`` (``value`` is what ``on_done`` returned) or ``cancelled``."""

    kind: str
    value: Any = None
    events: List[Dict[str, Any]] = field(default_factory=list)


class TaskSlot:
    """At most one task of a kind; its state, and the text and enabled state of the button that starts/stops it."""

    def __init__(self, idle_text: str, running_text: str = "Cancel", stopping_text: str = "Stopping...") -> None:
        self.texts = {State.IDLE: idle_text, State.RUNNING: running_text, State.STOPPING: stopping_text}
        self.state = State.IDLE
        self.task: Optional[Any] = None

    @property
    def busy(self) -> bool:
        return self.state is not State.IDLE

    @property
    def button_text(self) -> str:
        return self.texts[self.state]

    @property
    def button_enabled(self) -> bool:
        """False while stopping: a press then would neither cancel again nor start a second run."""
        return self.state is not State.STOPPING

    def start(self, make_task: Callable[[], Any]) -> Any:
        """Create and start a task (``make_task`` checks inputs and starts its process); the slot stays idle if
        that raises."""
        if self.busy:
            raise RuntimeError(f"a task is already {self.state.value}; cancel it first")
        task = make_task()
        self.task, self.state = task, State.RUNNING
        return task

    def cancel(self) -> None:
        """Ask the running task to stop (returns at once); :meth:`tick` finishes the stop."""
        if self.state is not State.RUNNING or self.task is None:
            return
        self.state = State.STOPPING
        try:
            self.task.cancel()
        except BaseException:
            self._drop()
            raise

    def abort(self) -> None:
        """Stop and forget the task now, killing its process tree (the scene or the application is closing)."""
        if self.task is not None:
            self._drop()

    def _drop(self) -> None:
        task, self.task, self.state = self.task, None, State.IDLE
        if task is not None:
            task.discard()

    def tick(
        self, on_done: Callable[[Any], Any], on_event: Optional[Callable[[Dict[str, Any]], None]] = None
    ) -> Optional[Outcome]:
        """Poll the task; when it has finished, call ``on_done(task)`` (load results) and return an
        :class:`Outcome`, else None. The slot is idle again before ``on_done``'s exception, if any, propagates."""
        if self.task is None:
            self.state = State.IDLE
            return None
        events = list(self.task.poll() or [])
        if on_event is not None:
            for event in events:
                on_event(event)
        if not self.task.finished:
            return None
        task, stopping = self.task, self.state is State.STOPPING
        try:
            if stopping:
                return Outcome("cancelled", events=events)
            return Outcome("done", on_done(task), events)
        finally:
            self.task, self.state = None, State.IDLE
            task.discard()


def tick_safely(tick: Callable[[], Any], report: Callable[[str, str], None], what: str) -> Any:
    """One poll of a background task (``tick``, e.g. ``lambda: slot.tick(load)``); returns what it returns.

    A failure is logged (``what``, the error and its traceback) and handed to ``report(message, details)``, the
    error's one line and the traceback (the GUI shows them after the tick); the poll returns None, and the slot is
    idle again (:meth:`TaskSlot.tick`). Why not ``slicer.util.tryWithErrorDisplay(waitCursor=True)``: that is for a
    user's action; around a poll that runs every 200 ms it set and reset the wait cursor on every tick, and it
    re-raised into Qt's timer slot.
    """
    try:
        return tick()
    except Exception as exc:  # a poll must never raise into the timer
        details = traceback.format_exc()
        logging.error("LungDDPM: %s %s\n%s", what, exc, details)
        report(str(exc), details)
        return None
