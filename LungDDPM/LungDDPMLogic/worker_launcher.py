"""Run ``python -m LungDDPMLib worker --job job.json`` in a separate process and read its JSON lines.

The model never runs in Slicer's own process: a crash, an out-of-memory or a cancel cannot take the
application down and the GUI never freezes. Two reader threads move the worker's stdout (one JSON event per
line) and stderr into a queue; the GUI drains it with :meth:`WorkerProcess.poll` on a timer. Cancel sends
SIGTERM (the worker stops within one sampling step, exits 130 and leaves no partial output) and kills the
process group after a grace period. Inputs cross the process boundary as NRRD files in a temporary folder
(:func:`write_volume_nrrd`), which :meth:`WorkerProcess.cleanup` removes.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional

import numpy as np

from .engine_path import engine_root

CANCEL_GRACE_S = 10.0


def python_executable() -> str:
    """PythonSlicer inside Slicer (its ``sys.executable`` is the application), the current interpreter elsewhere."""
    slicer = sys.modules.get("slicer")
    if slicer is not None and getattr(slicer, "app", None) is not None:
        found = shutil.which("PythonSlicer")
        if found:
            return found
        exe_dir = Path(sys.executable).resolve().parent
        for name in ("PythonSlicer", "PythonSlicer.exe"):
            if (exe_dir / name).is_file():
                return str(exe_dir / name)
    return sys.executable


def write_volume_nrrd(array: np.ndarray, geometry: Dict[str, Any], path: Path) -> Path:
    """Write a ``(K, J, I)`` array with LPS ``geometry`` (see ``mrml_bridge.sitk_geometry``) as NRRD."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(geometry["spacing"])
    image.SetOrigin(geometry["origin"])
    image.SetDirection(geometry["direction"])
    sitk.WriteImage(image, str(path), True)
    return path


def read_volume_nrrd(path: str) -> Any:
    import SimpleITK as sitk

    return sitk.ReadImage(str(path))


class WorkerProcess:
    """One worker run: start it, poll its events, cancel it, clean up its temporary folder."""

    def __init__(self, workdir: Optional[str] = None, python: Optional[str] = None) -> None:
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="LungDDPM-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.python = python or python_executable()
        self.process: Optional[subprocess.Popen] = None
        self.events: queue.Queue[Dict[str, Any]] = queue.Queue()
        self.stderr_tail: Deque[str] = deque(maxlen=40)
        self.cancelled = False
        self._threads: List[threading.Thread] = []

    # --- starting -------------------------------------------------------------------------------------------

    def start(self, job: Dict[str, Any]) -> None:
        """Write ``job`` (a ``LungDDPMLib.worker.Job`` as a dict) to the work folder and start the worker."""
        job_path = self.workdir / "job.json"
        job_path.write_text(json.dumps(job, indent=2))
        self.start_command(["worker", "--job", str(job_path)])

    def start_command(self, args: List[str]) -> None:
        """Start ``python -m LungDDPMLib <args>`` (any ``lungddpm`` subcommand) with the engine on the path."""
        if self.process is not None:
            raise RuntimeError("this worker was already started; create a new WorkerProcess per run")
        env = dict(os.environ)
        root = engine_root()
        if root is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in [env.get("PYTHONPATH")] if p])
        env["PYTHONUNBUFFERED"] = "1"
        kwargs: Dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # its own process group: cancel reaches any child it starts
        else:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(
                subprocess, "CREATE_NO_WINDOW", 0
            )
        self.process = subprocess.Popen(
            [self.python, "-u", "-m", "LungDDPMLib", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(self.workdir),
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            **kwargs,
        )
        for stream, parse in ((self.process.stdout, True), (self.process.stderr, False)):
            t = threading.Thread(target=self._read, args=(stream, parse), daemon=True)
            t.start()
            self._threads.append(t)

    def _read(self, stream: Any, parse: bool) -> None:
        for line in iter(stream.readline, ""):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if parse:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    event = None
                if isinstance(event, dict) and "type" in event:
                    self.events.put(event)
                    continue
            else:
                self.stderr_tail.append(line)
            self.events.put({"type": "log", "message": line, "stream": "stdout" if parse else "stderr"})
        stream.close()

    # --- running --------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    def poll(self) -> List[Dict[str, Any]]:
        """Every event received since the last call, without blocking."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def finished(self) -> bool:
        """The process has exited and both of its streams have been read to the end."""
        return self.process is not None and not self.running and not any(t.is_alive() for t in self._threads)

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Block until the process exits and its output is read (for scripts and tests, not for the GUI)."""
        if self.process is None:
            return None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for t in self._threads:
            t.join(5.0)
        return self.process.returncode

    # --- stopping -------------------------------------------------------------------------------------------

    def _signal(self, sig: int) -> None:
        if not self.running:
            return
        try:
            if os.name == "posix":
                os.killpg(self.process.pid, sig)
            elif sig == signal.SIGTERM:
                self.process.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            else:
                self.process.kill()
        except (ProcessLookupError, PermissionError, OSError):
            pass

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> Optional[int]:
        """SIGTERM, then kill after ``grace_s``; returns the exit code (130 when the worker stopped cleanly)."""
        self.cancelled = True
        if self.process is None:
            return None
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.running:
            self._signal(getattr(signal, "SIGKILL", signal.SIGTERM))
        return self.wait(5.0)

    def cleanup(self) -> None:
        """Stop the worker if it still runs and remove the temporary folder with every file in it."""
        if self.running:
            self.cancel(grace_s=2.0)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_tail)
