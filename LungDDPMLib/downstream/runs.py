"""One JSON file per training run, so that the experiment resumes where it stopped.

A run is one (segmenter, real cases, arm, training seed). Its record is written, atomically, to
``OUT/runs/<segnet>-real<n>-<arm>-seed<s>.json`` the moment it is scored, with ``"complete": true`` and the
*fingerprint* of every setting that decides its numbers. On a rerun a file that parses, is complete and has the same
fingerprint is read back instead of trained again; a half-written or unreadable file is trained again (and
replaced); a complete file made with other settings stops the run with a clear error rather than being mixed in.

Example:
    >>> run_file(Path("out"), "own", 4, "real+2x", 3).name
    'own-real4-real+2x-seed3.json'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import InputError
from .report import write_atomic

#: Config fields that do not change a run's numbers (where it is written, which runs a chunk holds, the device).
NOT_IN_FINGERPRINT = ("out", "cache", "device", "multiples", "repeats", "seed")
#: Settings added after runs were recorded, left out of the fingerprint at their default value: the runs made before
#: a setting existed were made with its default, and keep their fingerprint.
LATER_DEFAULTS = {"synthetic_source": "model"}
RUNS = "runs"


def fingerprint(config: Any) -> str:
    """A short hash of every setting that decides a run's numbers."""
    values = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k not in NOT_IN_FINGERPRINT and not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])
    }
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=list).encode()).hexdigest()[:16]


def run_file(out: Path, segnet: str, n_real: int, arm: str, seed: int) -> Path:
    """Where the record of one run lives."""
    return Path(out) / RUNS / f"{segnet}-real{n_real}-{arm}-seed{seed}.json"


def load_finished(path: Path, expected: str) -> Optional[Dict[str, Any]]:
    """The record at ``path`` if it is complete and made with fingerprint ``expected``; ``None`` when it is
    missing, half-written or unreadable (to be run again).

    Raises:
        InputError: a complete record made with other settings.
    """
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("complete") is not True:
        return None
    if record.get("fingerprint") != expected:
        raise InputError(
            f"{path} was made with other settings (fingerprint {record.get('fingerprint')}, now {expected}); "
            "use another --out or delete it"
        )
    return record


def save_run(path: Path, record: Dict[str, Any]) -> Path:
    """Write a finished run's record (``complete`` set last, the file renamed into place)."""
    return write_atomic(path, json.dumps({**record, "complete": True}, indent=1))
