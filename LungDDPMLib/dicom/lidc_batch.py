"""A LIDC-IDRI download tree imported case by case: each reader XML matched to its series by SeriesInstanceUID.

Rules: every ``*.xml`` under the root is a candidate; one whose root element is not ``LidcReadMessage`` (LIDC's
chest-radiograph reads are ``IdriReadMessage``) is skipped and counted. Every folder holding DICOM files is a
series, known by the SeriesInstanceUID of its first file. An XML whose series is in no folder, in two folders, or
named by a second XML is a failed case. Cases are named by PatientID; a patient with several imported series gets
the last 8 digits of each SeriesInstanceUID appended (``LIDC-IDRI-0132_12345678``), so no case overwrites another.
A failed case is reported and the batch goes on; a case already imported (all four outputs there) is skipped, so an
interrupted batch resumes where it stopped. Programming errors (bugs) are not caught: they stop the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from ..errors import InputError, LungDDPMError
from .lidc_consensus import ConsensusRules
from .lidc_import import make_case, output_paths, safe_name, write_case
from .lidc_xml import ROOT_TAG, header_uids, local, parse_root, read_lidc_xml
from .requires import require_pydicom
from .series import read_ct_series, slice_files

PathLike = Union[str, Path]


@dataclass
class BatchCase:
    xml: Path
    series_dir: Path
    series_uid: str
    name: str


@dataclass
class BatchReport:
    written: List[Tuple[str, Dict[str, Path]]] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)  # (what, message)
    skipped: List[Tuple[str, str]] = field(default_factory=list)

    def summary(self) -> Dict[str, object]:
        return {
            "imported": len(self.written),
            "failed": len(self.failed),
            "skipped": len(self.skipped),
            "failures": [f"{what}: {why}" for what, why in self.failed],
        }


def _series_folders(root: Path) -> Dict[str, List[Tuple[Path, str]]]:
    """SeriesInstanceUID -> [(folder, PatientID)] of every folder with DICOM files (its first file decides)."""
    pydicom = require_pydicom()
    found: Dict[str, List[Tuple[Path, str]]] = {}
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        files = slice_files(folder)
        if not files:
            continue
        try:
            ds = pydicom.dcmread(
                str(files[0]), stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "PatientID"]
            )
        except Exception:  # not DICOM (or damaged): a folder that is no series, or one reported when matched
            continue
        uid = str(getattr(ds, "SeriesInstanceUID", ""))
        if uid:
            found.setdefault(uid, []).append((folder, str(getattr(ds, "PatientID", ""))))
    return found


def find_cases(root: PathLike, report: BatchReport) -> List[BatchCase]:
    """The (XML, series folder) pairs under ``root``; XMLs that cannot be paired go to ``report``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder (give the LIDC-IDRI folder that holds the patients' folders)")
    folders = _series_folders(root)
    by_uid: Dict[str, List[Path]] = {}
    for xml in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".xml"):
        try:
            elem = parse_root(xml)
            if local(elem.tag) != ROOT_TAG:
                report.skipped.append((str(xml), f"root <{local(elem.tag)}>: not a CT read"))
                continue
            uid, _ = header_uids(elem, xml)
        except InputError as exc:
            report.failed.append((str(xml), str(exc)))
            continue
        by_uid.setdefault(uid, []).append(xml)
    pairs: List[Tuple[Path, str, Path, str]] = []
    for uid, xmls in sorted(by_uid.items()):
        where = folders.get(uid, [])
        if len(xmls) > 1:
            report.failed.append(
                (str(xmls[0]), f"{len(xmls)} reader XMLs name series {uid}: {', '.join(map(str, xmls))}")
            )
        elif not where:
            report.failed.append((str(xmls[0]), f"no folder under {root} holds series {uid}"))
        elif len(where) > 1:
            report.failed.append(
                (str(xmls[0]), f"series {uid} is in {len(where)} folders: {', '.join(str(w[0]) for w in where)}")
            )
        else:
            pairs.append((xmls[0], uid, *where[0]))
    per_patient: Dict[str, int] = {}
    for _, uid, _, pid in pairs:
        per_patient[safe_name(pid, uid)] = per_patient.get(safe_name(pid, uid), 0) + 1
    cases = []
    for xml, uid, folder, pid in pairs:
        name = safe_name(pid, uid)
        if per_patient[name] > 1:
            name = f"{name}_{uid.replace('.', '')[-8:]}"
        cases.append(BatchCase(xml, folder, uid, name))
    return cases


def import_lidc_tree(
    root: PathLike,
    out: PathLike,
    rules: Optional[ConsensusRules] = None,
    progress: Optional[Callable[[str], None]] = None,
    overwrite: bool = False,
) -> BatchReport:
    """Import every LIDC case under ``root`` into ``out``; a case that fails is reported, the others go on.

    A case whose four outputs are all in ``out`` is skipped as done (an interrupted batch resumes), unless
    ``overwrite``; one with only some of them is a failed case (they are not ours to replace)."""
    rules = rules or ConsensusRules()
    report = BatchReport()
    cases = find_cases(root, report)
    for k, case in enumerate(cases):
        if not overwrite and all(p.exists() for p in output_paths(out, case.name).values()):
            report.skipped.append((case.name, "already imported"))
            if progress:
                progress(f"[{k + 1}/{len(cases)}] {case.name}: already imported, skipped")
            continue
        try:
            made = make_case(read_ct_series(case.series_dir), read_lidc_xml(case.xml), rules, case.name)
            paths = write_case(made, out, overwrite)
            report.written.append((case.name, paths))
            drawn = sum(n.drawn for n in made.nodules)
            line = f"[{k + 1}/{len(cases)}] {case.name}: {drawn} nodule(s) drawn"
        except (LungDDPMError, OSError) as exc:
            report.failed.append((case.name, str(exc)))
            line = f"[{k + 1}/{len(cases)}] {case.name}: failed: {exc}"
        if progress:
            progress(line)
    return report
