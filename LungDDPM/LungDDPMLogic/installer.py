"""Install the worker's packages in the worker's own Python, one step after another, polled like a run.

Why a subprocess: installing PyTorch through the PyTorch extension (``PyTorchUtils.installTorch``) ran pip on
Slicer's main thread and then ``import torch`` in Slicer's process, which froze the GUI for minutes and loaded
torch where the module never otherwise loads it. Here each step (pip, light-the-torch, the final import check)
runs in a separate Python (PythonSlicer inside Slicer: the same site-packages) through
:class:`.worker_launcher.WorkerProcess`; its output lines stream to the GUI's log as ``log`` events, and
:attr:`InstallRun.status` says which step of how many runs. The final step imports every installed package in
that Python and reports the versions, so a package that installed but does not import is reported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from LungDDPMLib.errors import LungDDPMError

from .worker_launcher import WorkerProcess

#: Runs in the worker's Python: imports each name given, prints one JSON event (``installed`` or ``error``).
CHECK_CODE = (
    "import importlib, json, sys\n"
    "versions, failed = {}, {}\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        module = importlib.import_module(name)\n"
    "        versions[name] = str(getattr(module, '__version__', ''))\n"
    "    except Exception as exc:\n"
    "        failed[name] = f'{type(exc).__name__}: {exc}'\n"
    "if failed:\n"
    "    text = '; '.join(f'{n}: {e}' for n, e in failed.items())\n"
    "    print(json.dumps({'type': 'error', 'message': 'still not importable after installing: ' + text}))\n"
    "    sys.exit(1)\n"
    "print(json.dumps({'type': 'installed', 'versions': versions}))\n"
)
#: No question to PyPI about pip itself on every step (offline it would only add a delay).
STEP_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}


class DependencyError(LungDDPMError):
    """A package is missing and was not installed; the message says how to install it."""


@dataclass(frozen=True)
class InstallStep:
    """One command in the worker's Python: ``python -u <args>``."""

    title: str
    args: List[str]


def check_step(names: Sequence[str]) -> InstallStep:
    """The last step: import ``names`` in the worker's Python and report their versions."""
    return InstallStep("checking that " + ", ".join(names) + " import", ["-c", CHECK_CODE, *names])


class InstallRun:
    """The steps run one after another (a failed step ends the run); the task protocol of ``run_control.Task``."""

    def __init__(self, steps: Sequence[InstallStep], python: Optional[str] = None) -> None:
        if not steps:
            raise ValueError("nothing to install")
        self.steps, self.python = list(steps), python
        self.index = 0
        self.log: List[str] = []
        self.error = ""
        self.versions: Dict[str, str] = {}
        self.cancelled = False
        self._done = False
        self.worker = self._start(0)

    def _start(self, index: int) -> WorkerProcess:
        self.index = index
        worker = WorkerProcess(python=self.python)
        worker.start_python(self.steps[index].args, extra_env=STEP_ENV)
        return worker

    @property
    def finished(self) -> bool:
        return self._done

    @property
    def fraction(self) -> float:
        """The share of steps done (for a progress bar)."""
        return 1.0 if self._done else self.index / len(self.steps)

    @property
    def status(self) -> str:
        if self._done:
            return "cancelled" if self.cancelled else ("failed" if self.error else "installed")
        step = self.steps[self.index].title
        return f"installing in the background, step {self.index + 1} of {len(self.steps)}: {step}"

    def poll(self) -> List[Dict[str, Any]]:
        """The step's output as events (``log`` lines for the GUI's log); starts the next step when one ends."""
        if self._done:
            return []
        ended = self.worker.finished()
        events = self.worker.poll()
        for event in events:
            if event.get("type") == "installed":
                self.versions.update({str(k): str(v) for k, v in (event.get("versions") or {}).items()})
            elif event.get("type") == "error" and not self.error:
                self.error = str(event.get("message", ""))
            elif event.get("type") == "log":
                self.log.append(str(event.get("message", "")))
        if ended:
            self._step_ended()
        return events

    def _step_ended(self) -> None:
        code, step = self.worker.returncode, self.steps[self.index]
        last = (self.worker.stderr_text().strip().splitlines() or self.log or ["no output"])[-1]
        self.worker.cleanup()
        if self.cancelled:
            self._done = True
        elif code != 0:
            self.error = f"{step.title} failed (exit code {code}): {self.error or last}"
            self._done = True
        elif self.index + 1 < len(self.steps):
            self.worker = self._start(self.index + 1)
        else:
            self._done = True

    def wait(self, timeout_s: float = 600.0) -> None:
        """Poll until done (scripts and tests; the GUI polls on its timer)."""
        import time

        deadline = time.monotonic() + timeout_s
        while not self._done and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.05)

    def result(self) -> Dict[str, str]:
        """The versions now importable in the worker's Python; raises :class:`DependencyError` on a failure."""
        if self.error or self.cancelled or not self._done:
            raise DependencyError(
                f"installing the worker's packages {self.status}: {self.error or 'not finished'}; see the log, or "
                "install them yourself (PyTorch: the PyTorch Utils module; others: slicer.util.pip_install)"
            )
        return dict(self.versions)

    def cancel(self) -> None:
        """Stop the running step's process tree; poll until :attr:`finished`."""
        self.cancelled = True
        self.worker.cancel()

    def discard(self) -> None:
        self.worker.cleanup()
