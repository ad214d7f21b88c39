"""A short question to the engine (``lungddpm probe devices|model FILE``) in a worker process, polled like a run.

Why: listing devices imports torch (and ``cuda.mem_get_info`` creates a CUDA context that would hold GPU memory in
Slicer's process for the whole session); describing a model file hashes it (a second or more for the published
160 MB weights). Both would freeze the GUI or break a stock Slicer, so they run outside and report one JSON event.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .worker_launcher import WorkerProcess


class Probe:
    """Run ``lungddpm probe <args>`` and keep the event of type ``answer`` it prints; never blocks."""

    def __init__(self, args: List[str], answer: str, python: Optional[str] = None) -> None:
        self.args = list(args)
        self.answer = answer
        self.worker = WorkerProcess(python=python)
        self.result: Optional[Dict[str, Any]] = None
        self.error = ""
        self.done = False
        self.worker.start_command(["probe", *self.args])

    def poll(self) -> bool:
        """Collect events; True once the process has finished (then :attr:`result` or :attr:`error` is set)."""
        if self.done:
            return True
        for event in self.worker.poll():
            if event.get("type") == self.answer:
                self.result = event
        if not self.worker.finished():
            return False
        for event in self.worker.poll():
            if event.get("type") == self.answer:
                self.result = event
        if self.result is None:
            tail = self.worker.stderr_text().strip().splitlines()[-1:]
            self.error = tail[0] if tail else f"'lungddpm probe {' '.join(self.args)}' gave no answer"
        self.worker.cleanup()
        self.done = True
        return True

    def wait(self, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """Block until answered (scripts and tests); returns :attr:`result`."""
        self.worker.wait(timeout)
        self.poll()
        return self.result

    def cancel(self) -> None:
        """Kill the probe and remove its files (the question is no longer of interest)."""
        self.worker.kill_now()
        self.worker.cleanup()
        self.done = True
