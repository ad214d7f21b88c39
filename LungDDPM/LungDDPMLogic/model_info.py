"""What a model file is, in one line for the GUI, computed by the engine in a probe process and cached.

Why not here: recognising a file means hashing all of it (the registry matches a file by its sha256), which takes
a second or more for the published 160 MB weights; on Slicer's main thread, in ``_updateGui``, that froze the GUI
on every parameter change. Here only a ``stat`` runs on the main thread: a description is cached by path, size and
modification time, and a new file is described by ``lungddpm probe model FILE`` in the background.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

from .engine_path import engine_root
from .engine_probe import Probe

Key = Tuple[str, int, int]
CHECKING = "Checking the model file..."
#: The bundled ROI models, relative to the folder that holds ``LungDDPMLib``, in the order the engine's
#: ``registry.bundled_model('roi')`` prefers them: the fast student, else its teacher (not imported: the registry is
#: not for Slicer's process).
ROI_MODELS = (("LungDDPMLib", "models", "lungddpm-roi-fast.pt"), ("LungDDPMLib", "models", "lungddpm-roi.pt"))


#: Where the module looks for the Lung-DDPM+ weights the user downloaded (the authors' file name, kept).
PLUS_MODEL = ("LungDDPMLib", "models", "best_model.pt")


def published_plus_file() -> str:
    """The Lung-DDPM+ ``best_model.pt`` in the engine's models folder, or ``""`` when the user has not put it there
    (nothing is ever downloaded); a ``stat``, cheap enough for the main thread."""
    root = engine_root()
    if root is None:
        return ""
    path = root.joinpath(*PLUS_MODEL)
    return str(path) if path.is_file() else ""


def model_to_describe(checkpoint: str, mode: str = "auto") -> str:
    """The model file a run would use: the chosen checkpoint, else the bundled model of the mode (as the worker
    picks it): ``""`` for the whole-lung demo model, the ROI model's path in ``roi`` mode."""
    checkpoint = "" if checkpoint in ("", ".") else checkpoint
    if checkpoint or mode != "roi":
        return checkpoint
    root = engine_root()
    if root is None:
        return os.path.join(*ROI_MODELS[-1])
    for parts in ROI_MODELS:
        if root.joinpath(*parts).is_file():
            return str(root.joinpath(*parts))
    return str(root.joinpath(*ROI_MODELS[-1]))


def file_key(path: str) -> Optional[Key]:
    """(absolute path, size, mtime in ns) of a file, or None when it is not a file; ``""`` is the bundled model."""
    if not path:
        return ("", 0, 0)
    try:
        stat = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    return (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


class ModelDescriber:
    """Descriptions of model files by (path, size, mtime); at most one probe runs, for the latest request."""

    def __init__(self, python: Optional[str] = None) -> None:
        self.python = python
        self.cache: Dict[Key, str] = {}
        self.probe: Optional[Probe] = None
        self.probe_key: Optional[Key] = None
        self.wanted: Optional[str] = None

    def describe(self, path: str) -> str:
        """The description now: cached, 'File not found', or :data:`CHECKING` while a probe runs (started here)."""
        path = "" if path in ("", ".") else path
        self.wanted = path
        key = file_key(path)
        if key is None:
            return f"File not found: {path}"
        if key in self.cache:
            return self.cache[key]
        if self.probe_key != key:
            if self.probe is not None:
                self.probe.cancel()
            self.probe, self.probe_key = Probe(["model", path], "model", self.python), key
        return CHECKING

    @property
    def pending(self) -> bool:
        return self.probe is not None

    def poll(self) -> Optional[str]:
        """When the running probe has answered: cache it and return the description of the wanted file."""
        if self.probe is None or not self.probe.poll():
            return None
        probe, key = self.probe, self.probe_key
        self.probe, self.probe_key = None, None
        if probe.result is not None and key is not None:
            self.cache[key] = str(probe.result.get("text", ""))
        elif key is not None:
            return f"Cannot read the model file: {probe.error}"
        return self.describe(self.wanted or "")

    def close(self) -> None:
        if self.probe is not None:
            self.probe.cancel()
            self.probe, self.probe_key = None, None
