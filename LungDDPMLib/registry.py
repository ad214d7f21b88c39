"""Known models: recognise a local weights file by its checksum or name. Nothing is ever downloaded.

Users download the published weights themselves (the links are in ``source``); this table lets ``lungddpm info``
and the Slicer module say what a file is, which preset and normalisation it needs, and whether the bytes are the
ones we know.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union


def file_sha256(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks (plain hashlib: the registry must load without torch, e.g. in Slicer)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class KnownModel:
    """What we know about a released model file."""

    key: str
    title: str
    file_names: Tuple[str, ...]
    sha256: Optional[str]
    preset: str
    normalization: str
    grid: Tuple[int, int, int]
    source: str
    notes: str = ""


DEMO_FILE = Path(__file__).resolve().parent / "models" / "lungddpm-demo.pt"
#: The bundled native-resolution nodule model (``roi`` mode, conditioned on nodule type).
ROI_FILE = Path(__file__).resolve().parent / "models" / "lungddpm-roi.pt"
#: Its few-step student (progressive distillation, docs/distillation.md): what ``roi`` mode runs by default.
ROI_FAST_FILE = Path(__file__).resolve().parent / "models" / "lungddpm-roi-fast.pt"
BUNDLED_FILES = {"lungddpm-demo": DEMO_FILE, "lungddpm-roi": ROI_FILE, "lungddpm-roi-fast": ROI_FAST_FILE}


def bundled_model(mode: Optional[str] = None) -> Path:
    """The bundled model for a spatial mode: for ``roi`` the fast student (the teacher where no student ships),
    the whole-lung demo model otherwise."""
    if mode == "roi":
        return ROI_FAST_FILE if ROI_FAST_FILE.is_file() else ROI_FILE
    return DEMO_FILE


def model_file(checkpoint: Optional[str], mode: Optional[str] = None) -> Path:
    """The file a run uses: ``checkpoint`` as given; a bundled model's name (``lungddpm-roi`` is the teacher, one
    option away from the default student) where no file of that name exists; the mode's bundled model when empty."""
    if not checkpoint:
        return bundled_model(mode)
    if checkpoint in BUNDLED_FILES and not Path(checkpoint).exists():
        return BUNDLED_FILES[checkpoint]
    return Path(checkpoint)


KNOWN_MODELS: Tuple[KnownModel, ...] = (
    KnownModel(
        key="lungddpm-demo",
        title="LungDDPM demo model (bundled; phantom-trained, for demonstration only)",
        file_names=("lungddpm-demo.pt",),
        sha256=None,  # filled from the bundled file at run time (see known_models())
        preset="small",
        normalization="hu-window",
        grid=(64, 64, 64),
        source="bundled with LungDDPM (LungDDPMLib/models/)",
        notes="trained on procedural phantoms; not for clinical use or for realistic synthesis of patient CT",
    ),
    KnownModel(
        key="lungddpm-roi",
        title="LungDDPM nodule ROI model (bundled; phantom-trained, native resolution, nodule-type aware)",
        file_names=("lungddpm-roi.pt",),
        sha256=None,
        preset="roi-context",
        normalization="hu-window",
        grid=(32, 48, 48),
        source="bundled with LungDDPM (LungDDPMLib/models/)",
        notes="trained on procedural phantoms; draws solid, part-solid and ground-glass nodules in patches at the "
        "CT's own spacing, seeing the real CT around them and the vessels through them; not for clinical use",
    ),
    KnownModel(
        key="lungddpm-roi-fast",
        title="LungDDPM nodule ROI model, fast student (bundled; distilled from lungddpm-roi, 4 tuned DDIM steps)",
        file_names=("lungddpm-roi-fast.pt",),
        sha256=None,
        preset="roi-context",
        normalization="hu-window",
        grid=(32, 48, 48),
        source="bundled with LungDDPM (LungDDPMLib/models/)",
        notes="progressive distillation of the bundled ROI model (its DDIM 16 into 8 steps); roi mode's default, "
        "2.4x faster per nodule than the teacher with DPM-Solver++ 20 and within every per-class target, as is the "
        "teacher's own DDIM 8 (docs/benchmarks.md); the teacher stays --checkpoint lungddpm-roi",
    ),
    KnownModel(
        key="lung-ddpm",
        title="Lung-DDPM, 100,000 steps (Jiang et al., IEEE TBME 2025)",
        file_names=("Lung-DDPM-LIDC-IDRI-100000-steps.pt",),
        sha256=None,  # not published by the authors
        preset="lung-ddpm",
        normalization="lungddpm-compat",
        grid=(128, 128, 128),
        source="the authors' 'Dataset & Pretrained models' link in github.com/Manem-Lab/Lung-DDPM",
        notes="trained on the authors' internal data (their issue #4); EMA weights are used for sampling",
    ),
    KnownModel(
        key="lung-ddpm-plus",
        title="Lung-DDPM+ (Jiang et al., arXiv 2508.09327)",
        file_names=("best_model.pt",),
        sha256=None,
        preset="lung-ddpm-plus",
        normalization="lungddpm-compat",
        grid=(64, 64, 64),
        source="the checkpoint link in github.com/Manem-Lab/Lung-DDPM-PLUS",
        notes="nodule-only layout, 64^3 crops at native resolution; its file name is generic, so recognition by "
        "name is a guess that the architecture check confirms or refutes",
    ),
)


def known_models() -> Tuple[KnownModel, ...]:
    """The table, with the bundled models' checksums read from the files that ship."""
    out = []
    for m in KNOWN_MODELS:
        bundled = BUNDLED_FILES.get(m.key)
        if bundled is not None and bundled.is_file():
            m = KnownModel(**{**m.__dict__, "sha256": file_sha256(bundled)})
        out.append(m)
    return tuple(out)


def identify(path: str, sha256: Optional[str] = None) -> Tuple[Optional[KnownModel], str]:
    """Return (model, how): ``how`` is ``sha256`` (bytes match), ``name`` (file name only) or ``unknown``."""
    digest = sha256 or file_sha256(path)
    models = known_models()
    for m in models:
        if m.sha256 and m.sha256 == digest:
            return m, "sha256"
    name = Path(path).name
    for m in models:
        if name in m.file_names:
            return m, "name"
    return None, "unknown"
