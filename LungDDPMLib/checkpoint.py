"""Reading and writing model checkpoints, safely.

Two formats are understood:

* ``lung-ddpm`` - the published file: ``{'step', 'model', 'ema'}``, each the state dict of the whole diffusion
  wrapper (13 schedule buffers + ``denoise_fn.*`` weights). It carries no configuration, so the architecture is
  recognised from the weights (input channels and depth) and must then match a preset exactly.
* ``lungddpm`` - ours: the same state dicts plus a JSON configuration record and provenance, so a file always
  says what built it.

Every file is opened with ``torch.load(weights_only=True)``: a pickle that would run code is refused, never
executed. Saving writes a temporary file in the same folder and renames it, so a crash never leaves a
half-written checkpoint under the final name.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import pickletools
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import torch

from .config import ModelConfig, preset
from .device import resolve_device
from .diffusion import DiffusionModel
from .errors import CheckpointError, UnsafeCheckpointError
from .recognition import recognise, title
from .registry import file_sha256
from .sampling.distilled import DistillationRecord

PathLike = Union[str, "os.PathLike[str]"]
FORMAT_OURS = "lungddpm"
FORMAT_PUBLISHED = "lung-ddpm"
FORMAT_VERSION = 1


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a file, with what the file said about itself."""

    model: DiffusionModel
    config: ModelConfig
    format: str
    step: int
    weights: str
    sha256: str
    path: str
    provenance: Dict[str, Any] = field(default_factory=dict)
    #: Which published family the file is (``lung-ddpm``, ``lung-ddpm-plus`` or None) and how that was decided.
    recognition: Dict[str, Any] = field(default_factory=dict)
    #: Set for a student of ``lungddpm distill``: the sampler and steps it is to be run with, and its teacher.
    distillation: Optional[DistillationRecord] = None


# What torch.save writes first: a zip archive (torch >= 1.6) or a pickle of protocol 2+ (the legacy format); the
# oldest torch files are tar archives ("ustar" at byte 257). Anything else cannot be a checkpoint.
_ZIP_MAGIC, _PICKLE_PROTO = b"PK\x03\x04", b"\x80"
_SNIFF_BYTES = 1 << 16
# Pickle opcodes that import or call something: the ones a malicious file needs.
_CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"})
_UNSAFE_MESSAGE = (
    "{p} contains Python objects that would run code when loaded; refusing to load it. "
    "Only load files from sources you trust, and re-save them as plain tensors "
    "(a dict of state dicts) if you need to use them."
)


def _pickle_imports_code(head: bytes) -> bool:
    """Whether ``head`` parses as a whole pickle stream that imports or calls objects.

    Only the opcodes are read (:func:`pickletools.genops` executes nothing). A text file practically never parses
    as a complete pickle, so this tells "a pickle that would run code" from "some other file".
    """
    try:
        names = [op.name for op, _, _ in pickletools.genops(io.BytesIO(head))]  # raises unless it reaches STOP
    except Exception:  # not a complete pickle stream in the bytes read
        return False
    return any(name in _CODE_OPCODES for name in names)


def _refuse_foreign_file(p: Path) -> None:
    """Refuse a file that no ``torch.save`` wrote before the unpickler sees it.

    Without this, a text file reaches the weights-only unpickler, whose error for unknown bytes reads like a
    refused malicious pickle; the user then hunts for an attack instead of the wrong path.
    """
    with open(p, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if head.startswith((_ZIP_MAGIC, _PICKLE_PROTO)) or head[257:262] == b"ustar":
        return
    if _pickle_imports_code(head):
        raise UnsafeCheckpointError(_UNSAFE_MESSAGE.format(p=p))
    shown = "it is empty" if not head else f"it begins with {head[:16]!r}"
    raise CheckpointError(
        f"{p} is not a checkpoint: a PyTorch .pt file begins with a zip or pickle header, but {shown}. "
        "Pass a .pt file written by `lungddpm train` or the published Lung-DDPM checkpoint."
    )


def read_checkpoint_file(path: PathLike) -> Dict[str, Any]:
    """Open a checkpoint with ``weights_only=True`` and turn every failure into a clear :class:`CheckpointError`."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    _refuse_foreign_file(p)
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        with open(p, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
        # torch names the refused import ("Unsupported global"/"GLOBAL"); a bare pickle (not a zip) that fails
        # on another opcode is judged by its own opcodes, since torch's message then names only that opcode.
        if "Unsupported global" in text or "GLOBAL" in text or _pickle_imports_code(head):
            raise UnsafeCheckpointError(_UNSAFE_MESSAGE.format(p=p)) from None
        raise CheckpointError(
            f"{p} is not a readable checkpoint (corrupt or not a torch file): {_last_line(text)}"
        ) from None
    except Exception as exc:  # the unpickler fails in many ways on damaged bytes (IndexError, EOFError, ...)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{p} is not a readable checkpoint (corrupt, truncated or not a torch file): {first}"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{p} holds a {type(data).__name__}, not a checkpoint dictionary")
    return data


def _last_line(text: str) -> str:
    """torch's unpickling errors end with the specific reason after paragraphs of advice; keep the reason."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def first_non_finite(state: Mapping[str, Any]) -> Optional[str]:
    """The key of the first floating-point tensor in ``state`` holding NaN or inf, or None when all are finite.

    Weights with NaN/inf load without complaint and then turn every sample into NaN (written as NaN or 0 HU), so
    they are refused on load and never written by training.
    """
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            # min and max propagate NaN and show inf: two reductions, 5x faster than isfinite().all() on the
            # 40M published weights (0.5 s), and no full-size temporary.
            lo, hi = torch.aminmax(value.detach())
            if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
                return str(key)
    return None


def check_finite(states: Iterable[Tuple[str, Mapping[str, Any]]], where: str) -> None:
    """Raise :class:`CheckpointError` naming the first tensor with NaN/inf among ``(label, state_dict)`` pairs."""
    for label, state in states:
        bad = first_non_finite(state)
        if bad is not None:
            raise CheckpointError(
                f"{where} holds non-finite weights (NaN or inf) in the {label} tensor '{bad}'; a model with them "
                "produces only NaN. Use an earlier checkpoint of the run (training never overwrites last.pt with "
                "non-finite weights) or retrain with a lower learning rate or --grad-clip."
            )


def detect_format(data: Mapping[str, Any]) -> str:
    if data.get("format") == FORMAT_OURS:
        return FORMAT_OURS
    sd = data.get("ema", data.get("model"))
    if isinstance(sd, Mapping) and any(str(k).startswith("denoise_fn.") for k in sd):
        return FORMAT_PUBLISHED
    raise CheckpointError(
        "unrecognised checkpoint: expected a LungDDPM file (with 'format': 'lungddpm') or a published Lung-DDPM "
        f"file ({{'step', 'model', 'ema'}} with 'denoise_fn.' weights); found keys {sorted(map(str, data))[:8]}"
    )


def trained_by_us(provenance: Mapping[str, Any]) -> bool:
    """Whether a checkpoint (or an export of one) was written by our trainer: it decides what legacy config
    records mean (see :meth:`ModelConfig.from_dict`)."""
    return isinstance(provenance, Mapping) and provenance.get("kind") == "lungddpm-training"


def infer_published_config(state_dict: Mapping[str, torch.Tensor]) -> ModelConfig:
    """Pick the preset that a published-format state dict was made with, from its key layout
    (:func:`LungDDPMLib.recognition.recognise`: input channels, levels, attention)."""
    first = state_dict.get("denoise_fn.input_blocks.0.0.weight")
    if first is None or first.dim() != 5:
        raise CheckpointError("published-format checkpoint lacks 'denoise_fn.input_blocks.0.0.weight' (a 3D conv)")
    family, evidence = recognise(state_dict)
    if family is None:
        in_ch = int(first.shape[1])
        raise CheckpointError(
            f"no known architecture takes {in_ch} input channels (Lung-DDPM takes 3, Lung-DDPM+ 2): {evidence}"
        )
    return preset(family)


def recognition_of(data: Mapping[str, Any], fmt: str, config: ModelConfig, state: Mapping[str, Any]) -> Dict[str, Any]:
    """What the file is and how that was decided, for ``lungddpm info`` and the provenance."""
    from .recognition import published_family

    if fmt == FORMAT_PUBLISHED:
        family, evidence = recognise(state)
        return {"family": family, "title": title(family), "by": evidence}
    family = published_family(config)
    how = "configuration record (published data handling: layout channels, spatial mode, axis order)"
    return {"family": family, "title": title(family), "by": how if family else "configuration record"}


def check_state_dict(model: DiffusionModel, state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    """Compare keys and shapes before loading, so the error names every mismatch rather than the first one."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
            if items:
                more = f" (+{len(items) - 6} more)" if len(items) > 6 else ""
                parts.append(f"{label}: {', '.join(items[:6])}{more}")
        raise CheckpointError(
            f"{where} does not fit the {model.config.preset or 'configured'} architecture - it was made for another "
            "model. " + "; ".join(parts)
        )


def load_checkpoint(
    path: PathLike, *, weights: str = "ema", map_location: Union[str, torch.device] = "cpu"
) -> LoadedCheckpoint:
    """Rebuild a :class:`DiffusionModel` from either checkpoint format.

    Args:
        path: the ``.pt`` file.
        weights: ``"ema"`` (default, what sampling should use) or ``"model"`` (the raw training weights).
        map_location: device for the returned model (``auto``, ``cpu``, ``cuda:N``...; checked first).
    Raises:
        UnsafeCheckpointError: the file would run code when unpickled.
        CheckpointError: not a checkpoint, unreadable file, unknown format, weights that do not fit the
            architecture, or weights holding NaN/inf.
    Example:
        >>> ckpt = load_checkpoint("Lung-DDPM-LIDC-IDRI-100000-steps.pt")  # doctest: +SKIP
        >>> ckpt.config.preset, ckpt.step  # doctest: +SKIP
        ('lung-ddpm', 100000)
    """
    if weights not in ("ema", "model"):
        raise CheckpointError(f"weights must be 'ema' or 'model', got {weights!r}")
    data = read_checkpoint_file(path)
    fmt = detect_format(data)
    state = data.get(weights)
    if state is None and weights == "ema":
        warnings.warn(f"{path} has no EMA weights; using the raw training weights", RuntimeWarning, stacklevel=2)
        state, weights = data.get("model"), "model"
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} has no '{weights}' state dict")
    provenance: Dict[str, Any] = {}
    if fmt == FORMAT_OURS:
        try:
            provenance = json.loads(str(data.get("provenance", "{}")))
            config = ModelConfig.from_json(str(data["config"]), trained_here=trained_by_us(provenance))
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path} has a damaged configuration record: {exc}") from None
    else:
        config = infer_published_config(state)
    distillation = DistillationRecord.from_provenance(provenance, str(path), config.schedule.timesteps)
    model = DiffusionModel(config)
    check_state_dict(model, state, str(path))
    check_finite([(weights, state)], str(path))
    model.load_state_dict(state, strict=True)
    model.eval().to(resolve_device(map_location))
    step = data.get("step", 0)
    return LoadedCheckpoint(
        model=model,
        config=config,
        format=fmt,
        step=int(step.item() if isinstance(step, torch.Tensor) else step),
        weights=weights,
        sha256=file_sha256(path),
        path=str(path),
        provenance=provenance,
        recognition=recognition_of(data, fmt, config, state),
        distillation=distillation,
    )


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` to a temporary sibling, flush to disk, then rename over ``path`` (atomic on POSIX and NTFS)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file private; a model file is meant to be shared like any file the user writes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(
    path: PathLike,
    model: DiffusionModel,
    *,
    ema: Optional[DiffusionModel] = None,
    step: int = 0,
    provenance: Optional[Mapping[str, Any]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write our self-describing format atomically.

    ``extra`` holds further plain data (optimiser state, RNG states) that must itself be loadable with
    ``weights_only=True``: tensors, numbers, strings, lists and dicts.
    """
    payload: Dict[str, Any] = {
        "format": FORMAT_OURS,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_json(),
        "step": int(step),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": json.dumps(dict(provenance or {}), sort_keys=True, default=str),
    }
    if ema is not None:
        payload["ema"] = {k: v.detach().cpu() for k, v in ema.state_dict().items()}
    if extra:
        clash = set(extra) & set(payload)
        if clash:
            raise ValueError(f"extra keys {sorted(clash)} would overwrite checkpoint fields")
        payload.update(extra)
    atomic_torch_save(payload, path)
    return Path(path)


#: How :func:`export_weights` may store the network's parameters. ``float16`` halves a bundled file (the bundle has
#: a 20 MB budget for three models); loading casts them back to float32, so only the rounding of the weights
#: themselves (relative 2**-11) differs from the float32 file.
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def export_weights(
    source: PathLike,
    target: PathLike,
    *,
    weights: str = "ema",
    storage: str = "float32",
    levels: Optional[Sequence[int]] = None,
) -> Path:
    """Write a small inference-only file: one set of weights, the configuration and the provenance.

    ``levels`` (students only) records a DDIM schedule chosen for the student after distillation as its default
    (:class:`~LungDDPMLib.sampling.distilled.DistillationRecord`); the weights are unchanged.

    The chosen weights are stored under both ``model`` and ``ema``; the two dicts share their tensors, which
    ``torch.save`` writes once, so the file holds a single copy and no optimiser state. ``storage="float16"``
    stores the parameters (not the buffers) in half precision; a parameter beyond half precision's range
    (+-65504) is refused rather than turned into inf.
    """
    if storage not in STORAGE_DTYPES:
        raise CheckpointError(f"storage must be one of {', '.join(STORAGE_DTYPES)}, got {storage!r}")
    ckpt = load_checkpoint(source, weights=weights)
    tuned: Dict[str, Any] = {}
    if levels is not None:
        if ckpt.distillation is None:
            raise CheckpointError(f"{source} is not a distilled student; --levels sets a student's default schedule")
        record = ckpt.distillation.tuned(levels, ckpt.model.schedule.num_timesteps)
        tuned = {"distillation": record.to_dict()}
    parameters = {name for name, _ in ckpt.model.named_parameters()}
    state = {k: v.detach().cpu() for k, v in ckpt.model.state_dict().items()}
    if storage != "float32":
        state = {k: _to_storage(k, v, STORAGE_DTYPES[storage]) if k in parameters else v for k, v in state.items()}
    provenance = {
        **ckpt.provenance,
        "exported_from": {
            "path": str(source),
            "sha256": ckpt.sha256,
            "weights": ckpt.weights,
            "step": ckpt.step,
            **({"earlier": ckpt.provenance["exported_from"]} if "exported_from" in ckpt.provenance else {}),
        },
        "stored_as": storage,
        **tuned,
    }
    payload: Dict[str, Any] = {
        "format": FORMAT_OURS,
        "format_version": FORMAT_VERSION,
        "config": ckpt.config.to_json(),
        "step": ckpt.step,
        "model": state,
        "ema": dict(state),
        "provenance": json.dumps(provenance, sort_keys=True, default=str),
    }
    atomic_torch_save(payload, target)
    return Path(target)


def _to_storage(name: str, value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``value`` cast to ``dtype``, refusing values the narrower type would turn into inf.

    Values below its normal range keep an absolute error under 3e-8 in float16, which no network notices, so
    only overflow is an error.
    """
    limit = torch.finfo(dtype).max
    if bool((value.abs() > limit).any()):
        raise CheckpointError(f"parameter {name} has values beyond {dtype} range (+-{limit:g}); export it as float32")
    return value.to(dtype)
