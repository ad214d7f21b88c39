"""Run ``python -m LungDDPMLib worker --job job.json`` (or any subcommand) in a separate process; read its JSON lines.

The model never runs in Slicer's own process: a crash, an out-of-memory or a cancel cannot take the
application down, the GUI never freezes, and Slicer's process never imports torch. Two reader threads move the
worker's stdout (one JSON event per line) and stderr into a queue; the GUI drains it with
:meth:`WorkerProcess.poll` on a timer. :meth:`WorkerProcess.cancel` returns at once: it asks the whole process
tree to stop (see :mod:`.process_tree`; PythonSlicer is a launcher whose child is the real Python) and later polls
escalate to a kill. Every worker still alive when Python exits (Slicer closing) is killed with its tree. Inputs
cross the process boundary as uncompressed NRRD files in a temporary folder (:func:`write_volume_nrrd`; gzip would
cost seconds on the main thread), which :meth:`WorkerProcess.cleanup` removes.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Set

import numpy as np

from .engine_path import engine_root
from .process_tree import TreeStopper, popen_group_kwargs

CANCEL_GRACE_S = 10.0
#: Workers started and not yet cleaned up, killed with their trees when Python exits (Slicer closing). A plain set:
#: a worker whose run object was dropped must still be found here.
_LIVE: Set[WorkerProcess] = set()


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


def write_volume_nrrd(array: np.ndarray, geometry: Dict[str, Any], path: Path, compress: bool = False) -> Path:
    """Write a ``(K, J, I)`` array with LPS ``geometry`` (see ``mrml_bridge.sitk_geometry``) as NRRD.

    Uncompressed by default: the file lives for one run in a temporary folder, and gzip of a 512x512x300 CT takes
    seconds on Slicer's main thread.
    """
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(geometry["spacing"])
    image.SetOrigin(geometry["origin"])
    image.SetDirection(geometry["direction"])
    sitk.WriteImage(image, str(path), compress)
    return path


def read_volume_nrrd(path: str) -> Any:
    import SimpleITK as sitk

    return sitk.ReadImage(str(path))


class WorkerProcess:
    """One worker run: start it, poll its events, stop its process tree, clean up its temporary folder."""

    def __init__(self, workdir: Optional[str] = None, python: Optional[str] = None) -> None:
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="LungDDPM-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.python = python or python_executable()
        self.process: Optional[subprocess.Popen] = None
        self.events: queue.Queue[Dict[str, Any]] = queue.Queue()
        self.stderr_tail: Deque[str] = deque(maxlen=40)
        self.cancelled = False
        self.stopper: Optional[TreeStopper] = None
        self._threads: List[threading.Thread] = []

    # --- starting -------------------------------------------------------------------------------------------

    def start(self, job: Dict[str, Any], extra_args: Optional[List[str]] = None) -> None:
        """Write ``job`` (a ``LungDDPMLib.worker.Job`` as a dict) to the work folder and start the worker."""
        job_path = self.workdir / "job.json"
        job_path.write_text(json.dumps(job, indent=2))
        self.start_command(["worker", "--job", str(job_path), *(extra_args or [])])

    def start_command(self, args: List[str]) -> None:
        """Start ``python -m LungDDPMLib <args>`` (any ``lungddpm`` subcommand) with the engine on the path."""
        self.start_python(["-m", "LungDDPMLib", *args])

    def start_python(self, args: List[str], extra_env: Optional[Dict[str, str]] = None) -> None:
        """Start ``python -u <args>`` (a module such as pip, or ``-c`` code) with the engine on the path."""
        if self.process is not None:
            raise RuntimeError("this worker was already started; create a new WorkerProcess per run")
        env = dict(os.environ)
        root = engine_root()
        if root is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in [env.get("PYTHONPATH")] if p])
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra_env or {})
        self.process = subprocess.Popen(
            [self.python, "-u", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(self.workdir),
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            **popen_group_kwargs(),
        )
        self.stopper = TreeStopper(self.process)
        _LIVE.add(self)
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
        """The process started here has not exited (its children may outlive it; see :meth:`finished`)."""
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    def poll(self) -> List[Dict[str, Any]]:
        """Every event received since the last call, without blocking; advances a requested stop."""
        if self.cancelled and self.stopper is not None:
            self.stopper.poll()
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def finished(self) -> bool:
        """The process has exited, its streams are read to the end and, after a cancel, no process of its tree
        is left."""
        if self.process is None or self.running or any(t.is_alive() for t in self._threads):
            return False
        return not self.cancelled or self.stopper is None or self.stopper.poll()

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Block until :meth:`finished` (scripts, tests and the self-test; the GUI polls instead)."""
        if self.process is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished():
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        return self.process.returncode

    # --- stopping -------------------------------------------------------------------------------------------

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Ask the whole process tree to stop and return at once; :meth:`poll` kills it after ``grace_s``.

        The worker stops within one sampling step, exits 130 and leaves no partial output.
        """
        self.cancelled = True
        if self.stopper is not None:
            self.stopper.request(grace_s)

    def kill_now(self) -> None:
        """Kill the whole tree at once (application exit, or a cleanup while it still runs)."""
        self.cancelled = True
        if self.stopper is not None:
            self.stopper.kill_now()

    def cleanup(self) -> None:
        """Remove the temporary folder with every file in it (killing the tree first if it still runs)."""
        if self.stopper is not None and not self.stopper.done:
            self.kill_now()
            self.wait(5.0)
        _LIVE.discard(self)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_tail)


def kill_all_workers() -> int:
    """Kill every live worker tree and remove its files (application exit); returns how many were running."""
    workers = list(_LIVE)
    for worker in workers:
        worker.kill_now()
    for worker in workers:
        worker.cleanup()
    return len(workers)


atexit.register(kill_all_workers)
