"""A LIDC-IDRI case (CT series + reader XML) to a training case: CT, layout, Slicer segmentation, nodule table.

Outputs in ``out`` (``NAME`` is the PatientID made safe for a file name):

- ``NAME_ct.nii.gz``: the series on its own grid, HU exactly as stored (see :mod:`.series`);
- ``NAME_layout.nii.gz`` and ``NAME_layout.seg.nrrd``: 1 the automatic lung mask
  (:func:`LungDDPMLib.data.auto_lung.auto_lung_mask`), each drawn nodule over it with its class value (3 solid,
  4 part-solid, 5 ground-glass, 2 no texture rating); where nodules overlap the denser class wins;
- ``NAME_nodules.csv``: one row per nodule, small nodule and non-nodule (LUNA16's first five columns:
  ``seriesuid, coordX, coordY, coordZ, diameter_mm``; coordinates in mm in DICOM patient coordinates, LPS, as
  LUNA16's ``annotations.csv`` and SimpleITK use them: the consensus mask's centroid for nodules, the mean of the
  readers' points for the others).

All four files are made in memory, written into a hidden staging folder in ``out`` and renamed into place only
when every one is complete: on any error nothing appears under the output names.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import SimpleITK as sitk

from ..config import LABEL_LUNG, LABEL_NODULE, TYPE_OF_LABEL
from ..data.auto_lung import auto_lung_mask
from ..data.geometry import Geometry
from ..data.segmentation import write_segmentation
from ..data.writing import write_image, write_text_atomic
from ..errors import InputError
from .lidc_consensus import ConsensusRules, Nodule, nodules_from_marks
from .lidc_marks import reader_marks
from .lidc_xml import LidcRead, read_lidc_xml
from .series import DicomSeries, read_ct_series

PathLike = Union[str, Path]
CSV_COLUMNS = (
    "seriesuid",
    "coordX",
    "coordY",
    "coordZ",
    "diameter_mm",
    "class",
    "label",
    "n_readers",
    "texture_median",
    "malignancy_median",
    "subtlety_median",
    "drawn",
    "kind",
    "marks",
    "note",
)
#: Paint order where nodules overlap: a stated class over none, a denser class over a lighter one.
_RANK = {LABEL_NODULE: 0, 5: 1, 4: 2, 3: 3}


@dataclass
class LidcCase:
    name: str
    series: DicomSeries
    read: LidcRead
    nodules: List[Nodule]
    layout: sitk.Image


def safe_name(patient_id: str, series_uid: str) -> str:
    """A file-name stem from the PatientID (characters other than letters, digits, ``.-_`` become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", patient_id.strip()).strip("._")
    return name or f"series_{series_uid.replace('.', '')[-12:]}"


def check_same_series(series: DicomSeries, read: LidcRead) -> None:
    if read.series_uid != series.series_uid:
        raise InputError(
            f"{read.path} is the reader XML of series {read.series_uid}, but {series.folder} holds series "
            f"{series.series_uid}; give the XML of this series"
        )


def build_layout(series: DicomSeries, nodules: List[Nodule]) -> sitk.Image:
    """The lung found in the CT as 1, the drawn nodules over it with their class values."""
    try:
        lung = sitk.GetArrayFromImage(auto_lung_mask(series.image))
    except InputError as exc:
        raise InputError(f"{series.folder}: {exc}") from None
    layout = np.where(lung > 0, LABEL_LUNG, 0).astype(np.uint8)
    for n in sorted((n for n in nodules if n.drawn), key=lambda n: _RANK[int(n.label)]):
        z, y, x = n.voxels.T
        layout[z, y, x] = n.label
    return Geometry.of(series.image).image_from_array(layout)


def _num(value: Optional[float], digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}".rstrip("0").rstrip(".")


def nodule_rows(series_uid: str, nodules: List[Nodule]) -> List[Dict[str, str]]:
    rows = []
    for n in nodules:
        x, y, z = (float(v) for v in n.centroid_mm)
        rows.append(
            {
                "seriesuid": series_uid,
                "coordX": f"{x:.4f}",
                "coordY": f"{y:.4f}",
                "coordZ": f"{z:.4f}",
                "diameter_mm": _num(n.diameter_mm),
                "class": TYPE_OF_LABEL.get(n.label, "unknown") if n.kind == "nodule" else "",
                "label": str(n.label) if n.drawn else "",
                "n_readers": str(len(n.readers)),
                "texture_median": _num(n.medians["texture"]),
                "malignancy_median": _num(n.medians["malignancy"]),
                "subtlety_median": _num(n.medians["subtlety"]),
                "drawn": "yes" if n.drawn else "no",
                "kind": n.kind,
                "marks": ";".join(f"{m.reader}:{m.nodule_id}" for m in n.marks),
                "note": n.note,
            }
        )
    return rows


def csv_text(rows: List[Dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def make_case(series: DicomSeries, read: LidcRead, rules: ConsensusRules, name: Optional[str] = None) -> LidcCase:
    """The whole case in memory; every check that can refuse it runs here, before anything is written."""
    check_same_series(series, read)
    marks = reader_marks(read.sessions, series, str(read.path))
    nodules = nodules_from_marks(marks, Geometry.of(series.image), rules)
    layout = build_layout(series, nodules)
    return LidcCase(name or safe_name(series.patient_id, series.series_uid), series, read, nodules, layout)


def output_paths(out: PathLike, name: str) -> Dict[str, Path]:
    out = Path(out)
    return {
        "ct": out / f"{name}_ct.nii.gz",
        "layout": out / f"{name}_layout.nii.gz",
        "seg": out / f"{name}_layout.seg.nrrd",
        "nodules": out / f"{name}_nodules.csv",
    }


def check_free(out: PathLike, name: str, overwrite: bool) -> None:
    """Refuse to replace earlier outputs unless asked to (``--overwrite``)."""
    there = [p for p in output_paths(out, name).values() if p.exists()]
    if there and not overwrite:
        raise InputError(f"{there[0]} exists; remove it, choose another --out or pass --overwrite")


def write_case(case: LidcCase, out: PathLike, overwrite: bool = False) -> Dict[str, Path]:
    """Write the four files of a case; all of them appear at the end, or none."""
    check_free(out, case.name, overwrite)
    final = output_paths(out, case.name)
    Path(out).mkdir(parents=True, exist_ok=True)
    staging = Path(out) / f".{case.name}.{os.getpid()}.partial"
    staged = output_paths(staging, case.name)
    try:
        staging.mkdir()
        write_image(case.series.image, staged["ct"])
        write_image(case.layout, staged["layout"])
        write_segmentation(case.layout, staged["seg"])
        write_text_atomic(csv_text(nodule_rows(case.series.series_uid, case.nodules)), staged["nodules"])
        for key, path in staged.items():
            os.replace(path, final[key])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def import_lidc(
    series_dir: PathLike,
    xml: PathLike,
    out: PathLike,
    rules: Optional[ConsensusRules] = None,
    name: Optional[str] = None,
    overwrite: bool = False,
) -> Dict[str, Path]:
    """Import one LIDC-IDRI case; returns the written paths (see the module's docstring).

    Example::

        paths = import_lidc("LIDC-IDRI-0001/.../3000566-03192", "LIDC-IDRI-0001/.../069.xml", "imported")

    Raises:
        InputError: a series or XML refused by :func:`read_ct_series` / :func:`read_lidc_xml`, an XML of another
        series, a mark off the image or on no slice of it, outputs already there (without ``overwrite``); nothing
        is written then.
    """
    read = read_lidc_xml(xml)
    series = read_ct_series(series_dir)
    case = make_case(series, read, rules or ConsensusRules(), name)
    return write_case(case, out, overwrite)
