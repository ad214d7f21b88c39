"""A synthesis job and its cases: what to synthesise, with which model and settings, and where the outputs go.

A :class:`Job` crosses process boundaries as JSON (the Slicer module writes one for ``lungddpm worker --job``), so
every field is checked strictly when it is built: a misspelt field, a string where a number belongs or a value out
of range is an :class:`~LungDDPMLib.errors.InputError` before any case runs. The job engine that runs it is
:mod:`LungDDPMLib.worker`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from .config import reject_unknown_fields
from .errors import InputError

if TYPE_CHECKING:  # the job module loads without torch
    from .sampling import RuntimeOptions

#: Output formats and their name suffixes: all hold a CT (16-bit integers, geometry) without loss. ``dicom`` writes
#: ``<name>_dicom/`` (a CT series marked synthetic) and ``<name>_seg.dcm`` (the layout) per sample
#: (:mod:`LungDDPMLib.dicom.case`).
OUT_FORMATS = {"nrrd": ".nrrd", "nii.gz": ".nii.gz", "nii": ".nii", "mha": ".mha", "dicom": "_dicom"}
#: Allowed values of the job's string fields.
CHOICES: Dict[str, tuple] = {
    "sampler": (None, "dpm++", "ddim", "ddpm"),
    "mode": (None, "full", "roi"),
    "precision": ("auto", "fp32", "bf16"),
    "auto_lung": ("never", "if-missing", "always"),
    "out_format": tuple(OUT_FORMATS),
    "recipe": ("lungddpm", "published"),
}
#: Lower bounds of the job's numbers.
MINIMA = {"num_samples": 1, "seed": 0, "steps": 1, "feather_voxels": 0, "feather_mm": 0.0, "batch_size": 1, "eta": 0.0}


def _type_ok(value: Any, kind: str) -> bool:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if kind.startswith("Optional["):
        return value is None or _type_ok(value, kind[len("Optional[") : -1])
    checks: Dict[str, Callable[[Any], bool]] = {
        "bool": lambda v: isinstance(v, bool),
        "int": is_int,
        "float": lambda v: is_int(v) or isinstance(v, float),
        "str": lambda v: isinstance(v, str),
        "List[int]": lambda v: isinstance(v, list) and all(is_int(x) for x in v),
        "List[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    }
    return checks[kind](value)


def check_job_values(data: Dict[str, Any]) -> None:
    """Strict types, choices and bounds for a job's fields (``aas: "no"`` or ``seed: "0"`` are errors, not
    silently read as something else)."""
    for f in dataclasses.fields(Job):
        if f.name == "cases" or f.name not in data:
            continue
        value = data[f.name]
        if not _type_ok(value, str(f.type)):
            wanted = str(f.type).replace("Optional[", "null or ").replace("List[", "a list of ").rstrip("]")
            raise InputError(f"job field {f.name!r} must be {wanted}, got {value!r} ({type(value).__name__})")
        if f.name in CHOICES and value not in CHOICES[f.name]:
            raise InputError(f"job field {f.name!r} must be one of {list(CHOICES[f.name])}, got {value!r}")
        if f.name in MINIMA and value is not None and value < MINIMA[f.name]:
            raise InputError(f"job field {f.name!r} must be >= {MINIMA[f.name]}, got {value!r}")


@dataclass(frozen=True)
class Case:
    """One CT with its layout, and where its outputs go (``<prefix>.nrrd`` or ``<prefix>_<k>.nrrd``)."""

    name: str
    ct: str
    layout: str
    out_prefix: str


@dataclass(frozen=True)
class Job:
    """Everything a worker needs; serialisable as JSON so it can cross a process boundary."""

    cases: List[Case]
    checkpoint: str = ""
    #: None: the model's own (DPM-Solver++ 20; a distilled student: the sampler and steps it records).
    sampler: Optional[str] = None
    steps: Optional[int] = None
    eta: float = 0.0
    seed: int = 0
    num_samples: int = 1
    mode: Optional[str] = None
    aas: bool = True
    blend_from: Optional[int] = None
    feather_voxels: int = 0
    feather_mm: float = 0.0
    roi_margin_mm: Optional[float] = None
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    batch_size: Optional[int] = None
    lung_labels: Optional[List[int]] = None
    nodule_labels: Optional[List[int]] = None
    lung_segments: Optional[List[str]] = None
    nodule_segments: Optional[List[str]] = None
    ignore_labels: Optional[List[int]] = None
    nodule_types: Optional[List[str]] = None
    resample_layout: bool = False
    auto_lung: str = "never"
    out_format: str = "nrrd"
    density: str = "auto"
    #: ``lungddpm`` (ours) or ``published`` (the authors' sample.py; Lung-DDPM and Lung-DDPM+ files only).
    recipe: str = "lungddpm"
    #: Also write each sample as a DICOM series marked synthetic, with its layout as a SEG, into this folder.
    dicom_dir: Optional[str] = None

    def __post_init__(self) -> None:
        check_job_values({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        from .nodule_density import parse_density

        parse_density(self.density)  # a misspelt density fails here, before any case runs
        check_recipe_settings(self)
        check_distinct_cases(self.cases)
        if self.nodule_types:
            from .data.nodule_types import parse_type_table

            parse_type_table(self.nodule_types)  # a misspelt class fails here, before any case runs

    @classmethod
    def from_dict(cls, data: Any) -> Job:
        if not isinstance(data, dict):
            raise InputError(f"a job must be a JSON object with a 'cases' list, got {type(data).__name__}")
        reject_unknown_fields(cls, data, "job fields")
        if not isinstance(data.get("cases"), list) or not data["cases"]:
            raise InputError("the job names no cases ('cases' must be a non-empty list)")
        cases = []
        for c in data["cases"]:
            if isinstance(c, Case):
                cases.append(c)
                continue
            if not isinstance(c, dict) or set(c) != {"name", "ct", "layout", "out_prefix"}:
                raise InputError(f"a case needs exactly name, ct, layout and out_prefix, got {c!r}")
            if not all(isinstance(v, str) and v for v in c.values()):
                raise InputError(f"a case's name, ct, layout and out_prefix must be non-empty strings, got {c!r}")
            cases.append(Case(**c))
        return cls(**{**data, "cases": cases})

    @classmethod
    def from_json_file(cls, path: str) -> Job:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the job file {path}: {exc}") from None
        return cls.from_dict(data)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def output_paths(self, case: Case) -> List[Path]:
        """One path per sample (for ``dicom`` two: the series folder, then the SEG)."""
        names = [case.out_prefix]
        if self.num_samples > 1:
            names = [f"{case.out_prefix}_{k}" for k in range(self.num_samples)]
        if self.out_format == "dicom":
            from .dicom.case import dicom_paths

            return [path for name in names for path in dicom_paths(name)]
        return [Path(name + OUT_FORMATS[self.out_format]) for name in names]

    def dicom_copy_paths(self, case: Case) -> List[Path]:
        """Series folder and SEG of each sample's DICOM copy in :attr:`dicom_dir` (named as the outputs)."""
        from .dicom.case import dicom_paths

        names = [Path(case.out_prefix).name]
        if self.num_samples > 1:
            names = [f"{names[0]}_{k}" for k in range(self.num_samples)]
        return [path for name in names for path in dicom_paths(Path(str(self.dicom_dir)) / name)]

    @staticmethod
    def sidecar(case: Case) -> Path:
        """The provenance JSON with the completion record, written after the images (see :mod:`.outputs`)."""
        from .outputs import SIDECAR_SUFFIX

        return Path(case.out_prefix + SIDECAR_SUFFIX)

    @staticmethod
    def lock(case: Case) -> Path:
        from .outputs import LOCK_SUFFIX

        return Path(case.out_prefix + LOCK_SUFFIX)

    def completion_key(self, case: Case, model_sha256: str, distilled: bool = False) -> Dict[str, Any]:
        """Everything that decides a case's outputs: a finished case is skipped only if all of it is unchanged.

        The default sampler of an ordinary model is recorded by name (``dpm++``, as before students existed, so
        cases finished then stay finished); a student's default stays null: its model sha256 says which it is.
        """
        from .outputs import file_identity

        settings = self.to_dict()
        if settings["sampler"] is None and not distilled:
            settings["sampler"] = "dpm++"
        for name in ("cases", "device", "precision", "channels_last", "compile", "cuda_graphs", "batch_size"):
            settings.pop(name)  # how it ran, not what it computes (precision is recorded in the provenance)
        settings.pop("checkpoint")
        if settings.get("recipe") == "lungddpm":
            settings.pop("recipe")  # the default: records written before recipes existed still match
        return {
            "ct": file_identity(case.ct),
            "layout": file_identity(case.layout),
            "model_sha256": model_sha256,
            "seeds": self.seeds(),
            "settings": settings,
        }

    def seeds(self) -> List[int]:
        return [self.seed + k for k in range(self.num_samples)]

    def runtime(self) -> RuntimeOptions:
        """The job's speed settings as :class:`~LungDDPMLib.sampling.RuntimeOptions` (validated)."""
        from .sampling import RuntimeOptions

        return RuntimeOptions(
            precision=self.precision,
            channels_last=self.channels_last,
            compile=self.compile,
            cuda_graphs=self.cuda_graphs,
        )


def check_recipe_settings(job: Job) -> None:
    """The published recipe fixes the sampler and how the real CT enters: settings that would change those are
    refused rather than silently ignored (``blend_from`` stays: it is the published ``--blend_from``)."""
    if job.recipe != "published":
        return
    changed = [
        name
        for name, value, default in (
            ("sampler", job.sampler or "dpm++", "dpm++"),  # None: the model's own, dpm++ for a published file
            ("steps", job.steps, None),
            ("eta", job.eta, 0.0),
            ("aas", job.aas, True),
            ("feather_voxels", job.feather_voxels, 0),
            ("feather_mm", job.feather_mm, 0.0),
            ("roi_margin_mm", job.roi_margin_mm, None),
        )
        if value != default
    ]
    if job.density not in ("auto", "off"):  # auto means none for the published models: their scale has no HU target
        changed.append("density")
    if changed:
        raise InputError(
            f"recipe 'published' runs the authors' sampler and blending as they are; drop {', '.join(changed)} "
            "(or use recipe 'lungddpm')"
        )


def check_distinct_cases(cases: Sequence[Case]) -> None:
    """Two cases with one name or one output prefix would overwrite each other, or the second would be reported
    as done; case-insensitive, because Windows and macOS file systems are."""
    seen: Dict[str, Case] = {}
    for case in cases:
        for key in (f"name:{case.name.lower()}", f"out:{os.path.normcase(os.path.abspath(case.out_prefix)).lower()}"):
            if key in seen:
                other = seen[key]
                what = "name" if key.startswith("name:") else "output prefix"
                raise InputError(
                    f"two cases share the {what} {case.name!r}/{other.name!r}: {other.ct} and {case.ct}; "
                    "rename one so that each case has its own outputs"
                )
            seen[key] = case


def cases_from_folders(ct_dir: str, layout_dir: Optional[str], out_dir: str) -> List[Case]:
    """Pair CTs and layouts by name (see :func:`LungDDPMLib.data.datasets.pair_files`)."""
    from .data.datasets import pair_files

    pairs = pair_files(ct_dir, layout_dir)
    return [Case(name, str(ct), str(lay), str(Path(out_dir) / f"{name}_synthetic")) for name, ct, lay in pairs]


def out_format_of(out: str, wanted: Optional[str] = None) -> str:
    """The output format an ``--out`` name asks for, or ``wanted`` (``--format``) when the name has no suffix or
    the same one; a name without one of :data:`OUT_FORMATS`' suffixes and no ``wanted`` is refused, and so is a
    suffix that disagrees with ``wanted`` (writing another format than asked, or a PNG that cannot hold a CT, would
    be a silent surprise)."""
    lower = Path(out).name.lower()
    found = None
    for fmt, suffix in sorted(OUT_FORMATS.items(), key=lambda kv: -len(kv[1])):
        if lower.endswith(suffix) and len(lower) > len(suffix):
            found = fmt
            break
    if wanted is not None:
        if wanted not in OUT_FORMATS:
            raise InputError(f"--format {wanted!r}: choose one of {', '.join(OUT_FORMATS)}")
        if found is not None and found != wanted and Path(out).suffix:
            raise InputError(f"--out {out!r} names a {found} file but --format is {wanted}; drop one of the two")
        return wanted
    if found is not None:
        return found
    raise InputError(
        f"--out {out!r}: name the output with one of {', '.join(OUT_FORMATS.values())} "
        "(formats that hold a CT's values and geometry)"
    )


def single_case(ct: str, layout: str, out: str, out_format: Optional[str] = None) -> Case:
    """A case whose outputs are named after ``out`` (its extension, which sets the format unless ``out_format``
    does, is dropped)."""
    p = Path(out)
    suffix = OUT_FORMATS[out_format_of(out, out_format)]
    name = p.name[: -len(suffix)] if p.name.lower().endswith(suffix) and len(p.name) > len(suffix) else p.name
    return Case(name, ct, layout, str(p.with_name(name)))
