"""Which kind of run made each synthetic CT, so that ``lungddpm evaluate`` never pools unlike outputs.

Outputs of ``--mode full`` and ``--mode roi``, of two models, or of 20 DPM-Solver++ steps and 250 DDPM steps differ
in what they regenerate and how well; a mean over a mix of them describes none. Each output of ours has its
provenance JSON ``<prefix>.lungddpm.json`` beside it (:mod:`LungDDPMLib.outputs`), whose completion record lists
the file; its mode, model, sampler and steps are the run's kind. Files without such a record (written by other
tools, exported from Slicer) are one kind, "no provenance".
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..data.io import strip_suffix
from ..outputs import SIDECAR_SUFFIX

Kind = Optional[Dict[str, Any]]


def _sidecars(path: Path) -> List[Path]:
    """Where the provenance of ``path`` can be: ``<prefix>.nrrd`` or sample k, ``<prefix>_<k>.nrrd``."""
    stem = strip_suffix(path)
    names = [stem]
    sample = re.fullmatch(r"(.+)_\d+", stem)
    if sample:
        names.append(sample.group(1))
    return [path.with_name(name + SIDECAR_SUFFIX) for name in names]


def run_kind(path: Path) -> Kind:
    """Mode, model (preset and sha256), sampler and steps of the run that wrote ``path``; ``None`` when no complete
    provenance of ours lists it (a record is matched by file name, as the run may have named it relatively)."""
    for sidecar in _sidecars(Path(path)):
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        record = data.get("completion") if isinstance(data, dict) else None
        if not isinstance(record, dict) or record.get("state") != "complete":
            continue
        listed = [Path(str(o.get("path"))).name for o in record.get("outputs", []) if isinstance(o, dict)]
        if Path(path).name not in listed:
            continue
        model = data.get("model") if isinstance(data.get("model"), dict) else {}
        preprocess = data.get("preprocess") if isinstance(data.get("preprocess"), dict) else {}
        return {
            "mode": preprocess.get("spatial_mode"),
            "model": model.get("preset"),
            "model_sha256": model.get("sha256"),
            "sampler": data.get("sampler"),
            "steps": data.get("steps"),
        }
    return None


def kind_label(kind: Kind) -> str:
    """A kind in a user's words: ``roi mode, model roi-small 3f2a9c1b, dpm++ 20 steps``."""
    if kind is None:
        return "no provenance"
    steps = "default" if kind["steps"] is None else kind["steps"]
    sha = str(kind["model_sha256"] or "")[:8]
    return f"{kind['mode']} mode, model {kind['model'] or 'custom'} {sha}, {kind['sampler']} {steps} steps"


def group_by_kind(files: Sequence[Path]) -> Tuple[List[Kind], List[int]]:
    """The distinct kinds in order of first appearance, and each file's index into them."""
    kinds: List[Kind] = []
    index = []
    for f in files:
        kind = run_kind(f)
        if kind not in kinds:
            kinds.append(kind)
        index.append(kinds.index(kind))
    return kinds, index
