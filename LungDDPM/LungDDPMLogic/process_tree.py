"""End a worker together with every process it started, without blocking the caller.

Why: inside Slicer the worker is started through ``PythonSlicer``, a launcher whose child is the real Python.
Killing only the launcher leaves that child running on the GPU. So the worker starts in its own process group
(POSIX) or process group + tree kill (Windows), and stopping it addresses the whole tree:

* POSIX: ``SIGTERM`` to the group (the worker stops within one sampling step and removes its partial output),
  then ``SIGKILL`` to the group after a grace period. Descendants that left the group (``setsid``) are found
  through ``/proc`` (Linux) or psutil when it is installed, remembered when the stop is requested, and signalled
  too.
* Windows: a console-less process cannot receive Ctrl-Break, so the tree is ended at once with psutil when
  available, else with ``taskkill /T /F`` (outputs are written atomically, so nothing half-written is left).

Nothing here sleeps: :class:`TreeStopper` is advanced from a GUI timer through :meth:`TreeStopper.poll`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

POSIX = os.name == "posix"
PROC = Path("/proc")


def popen_group_kwargs() -> Dict[str, Any]:
    """``subprocess.Popen`` arguments that give the child its own process group (the handle on the whole tree)."""
    if POSIX:
        return {"start_new_session": True}
    flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(subprocess, "CREATE_NO_WINDOW", 0)
    return {"creationflags": flags}


def _proc_stat(pid: int) -> Optional[List[str]]:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]; None when gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _psutil() -> Any:
    try:
        import psutil  # optional: Slicer does not bundle it
    except ImportError:
        return None
    return psutil


def descendants(pid: int) -> Set[int]:
    """Every process below ``pid`` (children, grandchildren...), including those that left its process group."""
    psutil = _psutil()
    if psutil is not None:
        try:
            return {p.pid for p in psutil.Process(pid).children(recursive=True)}
        except psutil.Error:
            return set()
    if not PROC.is_dir():
        return set()
    parent_of: Dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None:
                parent_of[int(entry.name)] = int(fields[1])
    found: Set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parent_of.items() if parent in frontier and child not in found}
        found |= frontier
    return found


def is_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds no memory and no GPU)."""
    if PROC.is_dir():
        fields = _proc_stat(pid)
        return fields is not None and fields[0] != "Z"
    psutil = _psutil()
    if psutil is not None:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
    if POSIX:
        try:
            os.kill(pid, 0)  # signal 0 only asks (on Windows os.kill would terminate the process)
        except (ProcessLookupError, PermissionError, OSError):
            return False
        return True
    return False  # Windows without psutil: taskkill /T /F has ended the tree; nothing cheap to ask


def group_alive(pgid: int) -> bool:
    """Some live (non-zombie) process is still in process group ``pgid`` (POSIX)."""
    if PROC.is_dir():
        for entry in PROC.iterdir():
            if entry.name.isdigit():
                fields = _proc_stat(int(entry.name))
                if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
                    return True
        return False
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError, OSError):
        return False
    return True


def _signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        os.kill(pid, sig)


def _kill_tree_windows(pid: int, extra: Set[int]) -> None:
    psutil = _psutil()
    if psutil is not None:
        for p in sorted(extra | {pid}, reverse=True):
            with contextlib.suppress(psutil.Error):
                psutil.Process(p).kill()
        return
    subprocess.run(["taskkill", "/PID", str(pid), "/T", "/F"], capture_output=True, check=False)


class TreeStopper:
    """Stops the process tree rooted at a ``Popen`` started with :func:`popen_group_kwargs`, step by step.

    :meth:`request` sends the polite signal and returns at once; :meth:`poll` (call it on a timer) escalates to a
    hard kill after ``grace_s``; :attr:`done` is true when no process of the tree is left. :meth:`kill_now` is for
    application exit, where there is no timer left to wait on.
    """

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.pgid = process.pid  # start_new_session: the child leads a new group whose ID is its PID
        self.known: Set[int] = set()
        self.deadline: Optional[float] = None
        self.killed = False

    def _remember_tree(self) -> None:
        self.known |= descendants(self.process.pid)

    def alive(self) -> bool:
        """Some process of the tree still runs (the root is reaped here, so it is never left as a zombie)."""
        root = self.process.poll() is None
        if POSIX:
            return root or group_alive(self.pgid) or any(is_alive(p) for p in self.known)
        return root or any(is_alive(p) for p in self.known)

    def request(self, grace_s: float) -> None:
        """Ask the tree to stop (SIGTERM to the group; on Windows the tree is killed at once)."""
        self._remember_tree()
        if self.deadline is None:
            self.deadline = time.monotonic() + grace_s
        if not POSIX:
            self.kill_now()
            return
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            os.killpg(self.pgid, signal.SIGTERM)
        for pid in self.known:
            _signal_pid(pid, signal.SIGTERM)

    def kill_now(self) -> None:
        """End every process of the tree at once (SIGKILL; on Windows psutil or ``taskkill /T /F``)."""
        self._remember_tree()
        self.killed = True
        if not POSIX:
            _kill_tree_windows(self.process.pid, self.known)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            os.killpg(self.pgid, signal.SIGKILL)
        for pid in self.known:
            _signal_pid(pid, signal.SIGKILL)
        self.process.poll()

    def poll(self) -> bool:
        """Escalate when the grace period is over; returns :attr:`done`."""
        if self.deadline is not None and not self.killed and time.monotonic() >= self.deadline and self.alive():
            self.kill_now()
        return self.done

    @property
    def done(self) -> bool:
        return not self.alive()
