"""A case's outputs and the promises around them: inputs are never written, outputs are complete or absent, and a
case is done once.

Users point batch runs at folders of patient data with files this tool did not make (BIDS sidecars, earlier
results, the inputs themselves), run them twice, or run two at once. So before anything is written:

* no output path may be an input (same path after resolving links, or the same file through a hard link);
* an existing file under an output name is replaced only when a completion record of ours lists it;
* "already done" means the completion record names the same inputs (path, size, modification time), model
  (sha256), sampler, steps, seeds and settings, and every output it lists is there with its recorded size;
* a case is claimed with a lock file holding the owner's pid and host, so a second run on the same folder skips
  it truthfully ("in progress in process N") instead of doing it again; a lock whose process is gone is stale.

The completion record is the provenance sidecar ``<prefix>.lungddpm.json``; its name cannot be mistaken for a
user's ``<prefix>.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .data.io import pid_alive, write_text_atomic
from .errors import CaseLockedError, DiskFullError, InputError

SIDECAR_SUFFIX = ".lungddpm.json"
LOCK_SUFFIX = ".lungddpm.lock"
RECORD_FORMAT = "lungddpm-completion-1"


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: equal after resolving links, or one inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_apart(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    """Refuse any output that is an input (or lies inside an input folder, e.g. a DICOM series)."""
    for out in outputs:
        for inp in inputs:
            inside = Path(inp).is_dir() and Path(os.path.realpath(out)).is_relative_to(os.path.realpath(inp))
            if same_file(Path(out), Path(inp)) or inside:
                raise InputError(
                    f"the output {out} would overwrite the input {inp}; choose another output name or folder "
                    "(LungDDPM never writes over its inputs)"
                )


def file_identity(path: str) -> Dict[str, Any]:
    """What identifies an input's contents cheaply: resolved path, size and modification time (a DICOM folder:
    its file count, total size and newest modification time)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise InputError(f"file not found: {path}") from None
    if p.is_dir():
        files = [f.stat() for f in p.iterdir() if f.is_file()]
        return {
            "path": os.path.realpath(p),
            "files": len(files),
            "size": sum(f.st_size for f in files),
            "mtime_ns": max((f.st_mtime_ns for f in files), default=st.st_mtime_ns),
        }
    return {"path": os.path.realpath(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_record(sidecar: Path) -> Optional[Dict[str, Any]]:
    """The completion record in ``sidecar``, or ``None`` when the file is missing, not JSON or not ours."""
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("completion"), dict):
        return None
    record = data["completion"]
    return record if record.get("format") == RECORD_FORMAT else None


def is_done(sidecar: Path, key: Dict[str, Any], outputs: Sequence[Path]) -> bool:
    """The case was finished with exactly these inputs and settings, and every output is still there."""
    record = read_record(sidecar)
    if record is None or record.get("key") != key or record.get("state") != "complete":
        return False
    listed = {o.get("path"): o.get("size") for o in record.get("outputs", []) if isinstance(o, dict)}
    for out in outputs:
        try:
            if listed.get(str(out)) != out.stat().st_size:
                return False
        except OSError:
            return False
    return True


def check_not_foreign(outputs: Sequence[Path], sidecar: Path) -> None:
    """Refuse to replace files this tool did not write: an output name or the sidecar taken by another file."""
    record = read_record(sidecar)
    ours = {o.get("path") for o in record.get("outputs", [])} if record else set()
    if sidecar.exists() and record is None:
        raise InputError(f"{sidecar} exists and was not written by LungDDPM; move it or choose another output name")
    for out in outputs:
        if out.exists() and str(out) not in ours:
            raise InputError(
                f"{out} exists and was not written by LungDDPM (no completion record lists it); move it or choose "
                "another output name"
            )


def completion_record(key: Dict[str, Any], outputs: Sequence[Path]) -> Dict[str, Any]:
    """The record to store once every output is in place (sizes make a replaced or truncated file visible)."""
    return {
        "format": RECORD_FORMAT,
        "key": key,
        "state": "complete",
        "outputs": [{"path": str(o), "size": o.stat().st_size} for o in outputs],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def claim_record(key: Dict[str, Any], outputs: Sequence[Path]) -> Dict[str, Any]:
    """The record written before the images: it names them as ours (so a run killed half-way can be redone) but
    has no sizes, so it never counts as done."""
    return {"format": RECORD_FORMAT, "key": key, "state": "writing", "outputs": [{"path": str(o)} for o in outputs]}


def write_sidecar(sidecar: Path, provenance: Dict[str, Any]) -> None:
    write_text_atomic(json.dumps(provenance, indent=2, default=str), sidecar)


def check_writable(folder: Path, needed_bytes: int) -> None:
    """Before sampling: the folder can be created and written, and has room for the outputs (plus 5 %)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lungddpm-probe-", delete=True) as fh:
            fh.write(b"x")
    except OSError as exc:
        raise DiskFullError(f"cannot write to the output folder {folder}: {exc.strerror or exc}") from None
    free = shutil.disk_usage(folder).free
    if free < needed_bytes * 1.05:
        raise DiskFullError(
            f"the output folder {folder} has {free / 2**20:.0f} MiB free but this case needs up to "
            f"{needed_bytes / 2**20:.0f} MiB; free space or choose another folder (nothing was computed)"
        )


class CaseLock:
    """Claim a case for this process: ``<prefix>.lungddpm.lock`` holds the owner's pid and host.

    A lock whose owner is this host and no longer runs is stale and taken over. Use as a context manager;
    :class:`CaseLockedError` says who holds a live lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def _owner(self) -> Dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(str(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                pid = owner.get("pid")
                stale = isinstance(pid, int) and owner.get("host") == me["host"] and not pid_alive(pid)
                if stale or (not owner and time.time() - self._mtime() > 60):  # an unreadable lock left by a crash
                    self.path.unlink(missing_ok=True)
                    continue
                raise CaseLockedError(
                    f"in progress in process {pid} on {owner.get('host', '?')} (lock {self.path})", owner
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            self.held = True
            return
        raise CaseLockedError(f"could not take the lock {self.path}", self._owner())

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return time.time()

    def release(self) -> None:
        if self.held:
            self.held = False
            if self._owner().get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> CaseLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def output_folders(outputs: Sequence[Path]) -> List[Path]:
    """The distinct folders of ``outputs``, in order."""
    seen: List[Path] = []
    for out in outputs:
        if out.parent not in seen:
            seen.append(out.parent)
    return seen
