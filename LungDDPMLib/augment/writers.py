"""Where an augmentation run's cases go: one writer per output format behind one small interface.

Every writer names the files that make a case complete and its provenance sidecar; the run (:mod:`.run`) writes the
images through it (each file under a temporary name, renamed into place) and the sidecar last, so a case counts as
finished only when every file is there. ``finish`` writes the dataset-level files once every case is done, so an
interrupted run never looks like a complete dataset.

* ``nifti``: ``OUT/<case>_v<k>_ct.nii.gz``, ``OUT/<case>_v<k>_layout.nii.gz`` (labels 0/1/2-5) and
  ``OUT/<case>_v<k>.json``; the real cases stay where they are.
* ``nnunet``: ``OUT/DatasetNNN_NAME/`` in nnU-Net v2's raw layout with the real cases and their variants,
  ``dataset.json``, ``splits_final.json`` and a MONAI datalist (:mod:`.folds`); sidecars under ``provenance/``.
* ``dicom``: ``OUT/<case>_v<k>_dicom/`` (a CT series marked synthetic) and ``OUT/<case>_v<k>_seg.dcm`` (the
  layout as a DICOM SEG), :class:`DicomWriter`; another format plugs in with :func:`register_writer`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..config import LABEL_OF_TYPE, TYPE_OF_LABEL, is_nodule
from ..data.io import write_image, write_text_atomic
from ..errors import InputError
from .folds import assign_folds, monai_datalist, nnunet_splits
from .options import AugmentSettings

#: ``(case id, source case, synthetic)``: one output case.
Entry = Tuple[str, str, bool]
RUN_FILE = "augment_run.json"
MANIFEST_FILE = "augment_manifest.json"
DATALIST_FILE = "monai_datalist.json"


class OutputWriter:
    """The interface every format implements (subclass it; ``root`` holds the run record and the manifest)."""

    #: Whether the real cases are written too (a training dataset needs them; plain variants do not).
    writes_real = False

    def __init__(self, out: Path, settings: AugmentSettings) -> None:
        self.out = Path(out)
        self.settings = settings
        self.root = self.out

    def files(self, case_id: str) -> List[Path]:
        """Every file that makes ``case_id`` complete (not the sidecar)."""
        raise NotImplementedError

    def sidecar(self, case_id: str) -> Path:
        return self.root / f"{case_id}.json"

    def check_labels(self, labels: np.ndarray, where: str) -> None:
        """Refuse, before any work, a real layout this format cannot label."""

    def write(self, case_id: str, ct: sitk.Image, layout: sitk.Image) -> List[Path]:
        """Write the case's files (``layout`` holds labels 0/1/2-5 on the CT's grid); returns :meth:`files`."""
        raise NotImplementedError

    def finish(self, entries: Sequence[Entry]) -> List[Path]:
        """Dataset-level files, once every case is complete; returns them."""
        return []

    def check_target(self) -> None:
        """Refuse an output that already holds something this run must not write into."""


class NiftiWriter(OutputWriter):
    def files(self, case_id: str) -> List[Path]:
        return [self.root / f"{case_id}_ct.nii.gz", self.root / f"{case_id}_layout.nii.gz"]

    def write(self, case_id: str, ct: sitk.Image, layout: sitk.Image) -> List[Path]:
        ct_path, layout_path = self.files(case_id)
        write_image(sitk.Cast(layout, sitk.sitkUInt8), layout_path)
        write_image(ct, ct_path)
        return [ct_path, layout_path]


def nnunet_labels(settings: AugmentSettings) -> Dict[str, int]:
    """dataset.json ``labels``: background 0 and the nodule (binary) or one label per named class, consecutive."""
    if settings.labels == "binary":
        return {"background": 0, "nodule": 1}
    return {"background": 0, **{kind: i + 1 for i, kind in enumerate(settings.label_classes)}}


class NnunetWriter(OutputWriter):
    writes_real = True

    def __init__(self, out: Path, settings: AugmentSettings) -> None:
        super().__init__(out, settings)
        self.dataset = f"Dataset{int(settings.dataset_id or 0):03d}_{settings.dataset_name}"
        self.root = self.out / self.dataset
        self.labels = nnunet_labels(settings)

    def files(self, case_id: str) -> List[Path]:
        return [self.root / "imagesTr" / f"{case_id}_0000.nii.gz", self.root / "labelsTr" / f"{case_id}.nii.gz"]

    def sidecar(self, case_id: str) -> Path:
        return self.root / "provenance" / f"{case_id}.json"

    def check_labels(self, labels: np.ndarray, where: str) -> None:
        if self.settings.labels != "classes":
            return
        values = {int(v) for v in np.unique(labels[is_nodule(labels)])}
        unstated = 2 in values
        other = sorted(TYPE_OF_LABEL[v] for v in values if v in TYPE_OF_LABEL and TYPE_OF_LABEL[v] not in self.labels)
        if unstated or other:
            what = "nodules of unstated class (label 2)" if unstated else f"{', '.join(other)} nodules"
            raise InputError(
                f"{where} has {what}, which --labels classes cannot label with the classes of --types "
                f"({', '.join(self.settings.label_classes)}); name every class present in --types (a share of 0 adds "
                "a label without drawing new ones), state the classes in the layout, or use --labels binary"
            )

    def convert(self, labels: np.ndarray) -> np.ndarray:
        """Layout labels -> this dataset's labels (lung is background)."""
        out = np.zeros(labels.shape, dtype=np.uint8)
        if self.settings.labels == "binary":
            out[is_nodule(labels)] = 1
        else:
            for kind, value in self.labels.items():
                if kind != "background":
                    out[labels == LABEL_OF_TYPE[kind]] = value
        return out

    def write(self, case_id: str, ct: sitk.Image, layout: sitk.Image) -> List[Path]:
        image_path, label_path = self.files(case_id)
        label = sitk.GetImageFromArray(self.convert(sitk.GetArrayViewFromImage(layout)))
        label.CopyInformation(ct)
        write_image(label, label_path)
        write_image(ct, image_path)
        return [image_path, label_path]

    def finish(self, entries: Sequence[Entry]) -> List[Path]:
        real = [src for _, src, synthetic in entries if not synthetic]
        folds = assign_folds(real, self.settings.seed)
        dataset = {
            "name": self.dataset,
            "description": "real CTs and synthetic variants with new nodules drawn by LungDDPM (lungddpm augment)",
            "channel_names": {"0": "CT"},
            "labels": self.labels,
            "numTraining": len(entries),
            "file_ending": ".nii.gz",
        }
        images = {cid: f"imagesTr/{cid}_0000.nii.gz" for cid, _, _ in entries}
        labels = {cid: f"labelsTr/{cid}.nii.gz" for cid, _, _ in entries}
        written = [
            write_text_atomic(json.dumps(nnunet_splits(folds, entries), indent=2), self.root / "splits_final.json"),
            write_text_atomic(
                json.dumps(monai_datalist(folds, entries, images, labels), indent=2), self.root / DATALIST_FILE
            ),
        ]
        # dataset.json last: nnU-Net sees a dataset only once it is there.
        written.append(write_text_atomic(json.dumps(dataset, indent=2), self.root / "dataset.json"))
        return written

    def check_target(self) -> None:
        prefix = f"Dataset{int(self.settings.dataset_id or 0):03d}_"
        if self.out.is_dir():
            clash = [p.name for p in self.out.iterdir() if p.name.startswith(prefix) and p.name != self.dataset]
            if clash:
                raise InputError(
                    f"{self.out} already holds {clash[0]} with dataset id {self.settings.dataset_id}; nnU-Net needs "
                    "one folder per id: choose another --dataset-id or --out"
                )
        if self.root.is_dir() and any(self.root.iterdir()) and not (self.root / RUN_FILE).is_file():
            raise InputError(
                f"{self.root} exists and was not written by lungddpm augment; choose another --out, --dataset-id or "
                "--name (it is never written into)"
            )


class DicomWriter(OutputWriter):
    """``OUT/<case>_dicom/``: the synthetic CT as a DICOM series marked synthetic on every slice, and
    ``OUT/<case>_seg.dcm``: its layout as a DICOM SEG referencing that series (:mod:`LungDDPMLib.dicom.case`). The
    inputs are image files, so each series starts a new patient and study (``SYNTHETIC^LUNGDDPM``); the sidecar names
    the source case."""

    def __init__(self, out: Path, settings: AugmentSettings) -> None:
        from ..dicom.uids import require_dicom

        require_dicom()  # a missing extra is one line before any sampling
        super().__init__(out, settings)

    def files(self, case_id: str) -> List[Path]:
        from ..dicom.case import dicom_paths

        return list(dicom_paths(self.root / case_id))

    def write(self, case_id: str, ct: sitk.Image, layout: sitk.Image) -> List[Path]:
        from ..dicom.case import write_dicom_case

        folder, seg = self.files(case_id)
        # overwrite: the run claimed these names for this case first, so a leftover of an interrupted try is its own
        record = {"case": case_id, "sidecar": self.sidecar(case_id).name}
        write_dicom_case(ct, sitk.Cast(layout, sitk.sitkUInt8), folder, seg, description=f"LungDDPM augment {case_id}",
                         provenance=record, overwrite=True)  # fmt: skip
        return [folder, seg]


WRITERS: Dict[str, Callable[[Path, AugmentSettings], OutputWriter]] = {
    "nifti": NiftiWriter,
    "nnunet": NnunetWriter,
    "dicom": DicomWriter,
}


def register_writer(name: str, factory: Callable[[Path, AugmentSettings], OutputWriter]) -> None:
    """Make ``--format NAME`` write through ``factory(out, settings)``."""
    WRITERS[name] = factory


def make_writer(out: Path, settings: AugmentSettings) -> OutputWriter:
    factory = WRITERS.get(settings.out_format)
    if factory is None:
        raise InputError(
            f"--format {settings.out_format} is not available in this version of lungddpm augment; use --format "
            f"{' or --format '.join(sorted(WRITERS))}"
        )
    return factory(Path(out), settings)
