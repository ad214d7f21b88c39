"""A case's outputs and the promises around them: inputs are never written, outputs are complete or absent, and a
case is done once.

Users point batch runs at folders of patient data with files this tool did not make (BIDS sidecars, earlier
results, the inputs themselves), run them twice, or run two at once. So before anything is written:

* no output path may be an input (same path after resolving links, or the same file through a hard link);
* an existing file under an output name is replaced only when a completion record of ours lists it, and then with
  a warning that names it and what changed (:func:`replacement_note`);
* "already done" means the completion record names the same inputs (path, size, modification time), model
  (sha256), sampler, steps, seeds and settings, and every output it lists is there with its recorded size;
* a case is claimed with a lock file holding the owner's pid and host, so a second run on the same folder skips
  it truthfully ("in progress in process N") instead of doing it again; a lock whose process is gone is stale.

The completion record is the provenance sidecar ``<prefix>.lungddpm.json``; its name cannot be mistaken for a
user's ``<prefix>.json``.
"""

from __future__ import annotations

import errno
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


def output_size(path: Path) -> int:
    """An output's size in bytes; a folder output (a DICOM series) counts the files in it, so a lost slice shows."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return path.stat().st_size


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
            if listed.get(str(out)) != output_size(out):
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


def _shown(value: Any) -> str:
    return "default" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def describe_change(old: Any, new: Dict[str, Any]) -> str:
    """What differs between an earlier completion key and this run's, in a user's words (``seeds [0] -> [5]``)."""
    if not isinstance(old, dict):
        return "by a run whose settings are not recorded"
    changes = []
    for what in ("ct", "layout"):
        a, b = old.get(what) or {}, new[what]
        if a != b:
            other = a.get("path") != b.get("path")
            changes.append(f"another {what} ({a.get('path')})" if other else f"the {what} changed since")
    if old.get("model_sha256") != new["model_sha256"]:
        changes.append(f"model {str(old.get('model_sha256'))[:12]} -> {new['model_sha256'][:12]}")
    if old.get("seeds") != new["seeds"]:
        changes.append(f"seeds {_shown(old.get('seeds'))} -> {_shown(new['seeds'])}")
    before, now = old.get("settings") or {}, new["settings"]
    for name in sorted((set(before) | set(now)) - {"seed", "num_samples"}):  # both are in the seeds
        if before.get(name) != now.get(name):
            changes.append(f"{name} {_shown(before.get(name))} -> {_shown(now.get(name))}")
    if not changes:
        return "with the same inputs and settings (the file changed since)"
    return "with other settings: " + ", ".join(changes)


def replacement_note(sidecar: Path, key: Dict[str, Any], outputs: Sequence[Path]) -> Optional[Dict[str, Any]]:
    """Which of our own earlier outputs this case will replace, and why, or ``None`` when it replaces nothing.

    A file under an output name that our completion record lists is ours to replace (:func:`check_not_foreign`
    refuses every other), but replacing it without a word would lose a result the user may still want; so the
    caller reports this as a warning naming the files and what changed. Outputs of the earlier run that this run
    does not write (it had more samples) are named too: they stay, but no record lists them any more.
    """
    record = read_record(sidecar)
    if record is None:
        return None
    listed = [str(o.get("path")) for o in record.get("outputs", []) if isinstance(o, dict)]
    replaced = [str(p) for p in outputs if str(p) in listed and p.exists()]
    left = [p for p in listed if p not in {str(o) for o in outputs} and Path(p).exists()]
    if not replaced and not left:
        return None
    if record.get("state") != "complete":
        why = "by a run that stopped before it finished"
    else:
        why = describe_change(record.get("key"), key)
    unlisted = "kept as they are, but no completion record lists them any more"
    if not replaced:
        message = f"{', '.join(left)}, written earlier by LungDDPM {why}: {unlisted}"
    else:
        message = f"replacing {', '.join(replaced)}, written earlier by LungDDPM {why}"
        message += f"; {', '.join(left)} of that run: {unlisted}" if left else ""
    return {"replaced": replaced, "left": left, "message": message}


def completion_record(key: Dict[str, Any], outputs: Sequence[Path]) -> Dict[str, Any]:
    """The record to store once every output is in place (sizes make a replaced or truncated file visible)."""
    return {
        "format": RECORD_FORMAT,
        "key": key,
        "state": "complete",
        "outputs": [{"path": str(o), "size": output_size(o)} for o in outputs],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def claim_record(key: Dict[str, Any], outputs: Sequence[Path]) -> Dict[str, Any]:
    """The record written before the images: it names them as ours (so a run killed half-way can be redone) but
    has no sizes, so it never counts as done."""
    return {"format": RECORD_FORMAT, "key": key, "state": "writing", "outputs": [{"path": str(o)} for o in outputs]}


def write_sidecar(sidecar: Path, provenance: Dict[str, Any]) -> None:
    write_text_atomic(json.dumps(provenance, indent=2, default=str), sidecar)


def folder_error(folder: Path, exc: OSError) -> DiskFullError:
    """One line naming the output folder, what is wrong with it and the fix, for an OS error on the first file we
    put there (the lock): the raw errno text names a hidden ``.lock`` file the user never asked about."""
    code = exc.errno
    if code in (errno.EACCES, errno.EPERM):
        why, fix = "no write permission", "give yourself write permission there or choose another output folder"
    elif code == errno.EROFS:
        why, fix = "it is on a read-only file system", "choose an output folder on a writable disk"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        why, fix = "a file is in the way of that folder", "move that file or choose another output folder"
    elif code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        why, fix = "the disk is full", "free space or choose another output folder"
    else:
        why, fix = exc.strerror or type(exc).__name__, "choose another output folder"
    return DiskFullError(f"cannot write to the output folder {folder}: {why}; {fix} (nothing was computed)")


def check_writable(folder: Path, needed_bytes: int) -> None:
    """Before sampling: the folder can be created and written, and has room for the outputs (plus 5 %)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lungddpm-probe-", delete=True) as fh:
            fh.write(b"x")
    except OSError as exc:
        raise folder_error(folder, exc) from None
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
        for _ in range(2):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(str(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError as exc:
                if exc.filename != str(self.path):  # mkdir: a file where the folder should be
                    raise folder_error(self.path.parent, exc) from None
                owner = self._owner()
                pid = owner.get("pid")
                stale = isinstance(pid, int) and owner.get("host") == me["host"] and not pid_alive(pid)
                if stale or (not owner and time.time() - self._mtime() > 60):  # an unreadable lock left by a crash
                    self.path.unlink(missing_ok=True)
                    continue
                raise CaseLockedError(
                    f"in progress in process {pid} on {owner.get('host', '?')} (lock {self.path})", owner
                ) from None
            except OSError as exc:  # the folder cannot be created or written: say so about the folder
                raise folder_error(self.path.parent, exc) from None
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
