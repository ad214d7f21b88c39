"""What a model file is, in one line for the GUI: recognised through the engine's model registry, without torch.

The registry matches a file by its sha256 (bytes identical to a known release) or, failing that, by its file
name; hashing a large checkpoint takes a moment, so results are cached by path, size and modification time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

_CACHE: Dict[Tuple[str, int, int], str] = {}


def describe_checkpoint(path: str) -> str:
    """One line: the known model's title, preset and grid; or why the file is not recognised; or that it is missing."""
    from LungDDPMLib.registry import DEMO_FILE, identify

    p = Path(path) if path and path != "." else DEMO_FILE
    if not p.is_file():
        if p == DEMO_FILE:
            return "No model file chosen and the bundled demo model is missing from this installation"
        return f"File not found: {p}"
    stat = p.stat()
    key = (str(p.resolve()), stat.st_size, int(stat.st_mtime_ns))
    if key not in _CACHE:
        model, how = identify(str(p))
        if model is None:
            text = (
                f"{p.name}: not a known model; its preset and grid are read from the file when it runs "
                "('lungddpm info' prints them)"
            )
        else:
            grid = "x".join(str(n) for n in model.grid)
            text = f"{model.title} - preset {model.preset}, grid {grid}"
            if how == "name":
                text += " (recognised by file name only; the weights are checked when it runs)"
        _CACHE[key] = text
    return _CACHE[key]
