"""What makes a synthetic CT slice recognisable as synthetic, and whose patient, study and source it belongs to.

Where each attribute lives in the standard (PS3.3; the CT Image IOD, A.3, includes all these modules):

* SOP Common (C.12.1): Synthetic Data (0008,001C) ``YES``, Content Qualification (0018,9004) ``RESEARCH`` and the
  Contributing Equipment Sequence (0018,A001), whose item with purpose (DCM, 109100, "Synthesizing Equipment")
  names LungDDPM and its version; with a source a second item (DCM, 109101, "Acquisition Equipment") names the
  scanner that acquired the real CT the synthetic one is composited into.
* General Image (C.7.6.1): Image Type ``DERIVED\\SECONDARY\\AXIAL`` (value 3 is the CT Image module's, C.8.2.1.1.1),
  Burned In Annotation ``NO``.
* General Reference (C.12.4): Source Image Sequence (0008,2112) names the one source slice each synthetic slice was
  made from (same position: the output lies on the input's grid), with purpose (DCM, 121322, "Source image for
  image processing operation", CID 7202); Derivation Description says how.
* Common Instance Reference (C.12.2): required (1C) once an instance references others; the source series goes in
  Referenced Series Sequence when it is in the same study, else under Studies Containing Other Referenced Instances.
* General Series (C.7.3.1): Related Series Sequence (0008,1250) names the source series with purpose (DCM, 121323,
  "Source series for image processing operation", CID 7210), so a viewer finds it without opening each slice.

Study decision: with a source the synthetic series **joins the source study** (same Study Instance UID, patient
attributes and Frame of Reference UID): it is the same patient on the same grid, a derived series beside its source
the way reformats and CAD results are, and it overlays the source in a viewer. It never reuses a Series or SOP
Instance UID. ``study="new"`` puts it in a new study of the same patient instead. Without a source there is a new
patient (placeholder name ``SYNTHETIC^LUNGDDPM``), study and frame of reference.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any, Dict, List, Optional, Sequence

from .uids import new_uid

MANUFACTURER = "LungDDPM"
PLACEHOLDER_PATIENT_NAME = "SYNTHETIC^LUNGDDPM"
SYNTHETIC_PREFIX = "SYNTHETIC"

#: Patient and study attributes carried over from the source (the Patient, Clinical Trial Subject, General Study and
#: Patient Study modules' usual members); de-identification flags travel with them, so a de-identified source stays
#: marked as such.
PATIENT_KEYS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
    "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID",
    "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID",
    "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID",
)
STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
#: Series-level attributes of the acquisition that still describe the synthetic series (same patient on the same
#: table, same frame of reference).
SERIES_KEYS = ("FrameOfReferenceUID", "PositionReferenceIndicator", "PatientPosition", "BodyPartExamined")


def code_item(value: str, scheme: str, meaning: str) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _now() -> datetime.datetime:
    return datetime.datetime.now().astimezone()


def contributing_equipment(version: str, description: str, source: Optional[Any]) -> List[Any]:
    """LungDDPM as Synthesizing Equipment; with a source, its scanner as Acquisition Equipment."""
    from pydicom.dataset import Dataset

    synth = Dataset()
    synth.Manufacturer = MANUFACTURER
    synth.ManufacturerModelName = MANUFACTURER
    synth.SoftwareVersions = version
    synth.ContributionDateTime = _now().strftime("%Y%m%d%H%M%S%z")
    synth.ContributionDescription = description[:1024]
    synth.PurposeOfReferenceCodeSequence = [code_item("109100", "DCM", "Synthesizing Equipment")]
    items = [synth]
    if source is not None:
        acq = Dataset()
        for key in ("Manufacturer", "InstitutionName", "StationName", "ManufacturerModelName", "DeviceSerialNumber"):
            if key in source:
                setattr(acq, key, source.get(key))
        if "Manufacturer" not in acq:
            acq.Manufacturer = ""  # Type 2 in the item: present, may be empty
        if "SoftwareVersions" in source:
            acq.SoftwareVersions = source.SoftwareVersions
        acq.PurposeOfReferenceCodeSequence = [code_item("109101", "DCM", "Acquisition Equipment")]
        items.append(acq)
    return items


def patient_and_study(source: Optional[Any], study: str, patient_id: Optional[str]) -> Dict[str, Any]:
    """The attributes that say whose images these are: copied from ``source`` (a pydicom header), or new ones."""
    values: Dict[str, Any] = {}
    if source is not None:
        for key in (*PATIENT_KEYS, *STUDY_KEYS, *SERIES_KEYS):
            if key in source and source[key].value not in (None, ""):
                values[key] = source[key].value
        if study == "new":
            values["StudyInstanceUID"] = new_uid()
            values["StudyDescription"] = "SYNTHETIC LungDDPM"
            for key in ("AccessionNumber", "StudyID"):
                values.pop(key, None)
    else:
        values["StudyInstanceUID"] = new_uid()
        values["FrameOfReferenceUID"] = new_uid()
        values["PatientName"] = PLACEHOLDER_PATIENT_NAME
        values["StudyDescription"] = "SYNTHETIC LungDDPM"
        values["StudyID"] = "LUNGDDPM"
    if patient_id is not None:
        values["PatientID"] = patient_id
    if not values.get("PatientID"):
        values["PatientID"] = "LUNGDDPM-" + hashlib.sha1(values["StudyInstanceUID"].encode()).hexdigest()[:10].upper()
    values.setdefault("PatientName", PLACEHOLDER_PATIENT_NAME)
    values.setdefault("FrameOfReferenceUID", new_uid())
    now = _now()
    values.setdefault("StudyDate", now.strftime("%Y%m%d"))
    values.setdefault("StudyTime", now.strftime("%H%M%S"))
    for key in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        values.setdefault(key, "")  # Type 2: present, empty when unknown
    values.setdefault("PositionReferenceIndicator", "")
    values.setdefault("BodyPartExamined", "CHEST")  # LungDDPM's CTs are thoracic; dciodvfy asks for Laterality without
    values.setdefault("PatientPosition", "")  # Type 2C for CT: present, empty when the source does not say
    return values


def mark_slice(ds: Any, version: str, equipment: Sequence[Any]) -> None:
    """The synthetic marks every slice carries (see the module docstring for where the standard defines them)."""
    ds.SyntheticData = "YES"
    ds.ContentQualification = "RESEARCH"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.BurnedInAnnotation = "NO"
    ds.ContributingEquipmentSequence = list(equipment)
    ds.Manufacturer = MANUFACTURER  # General Equipment: the equipment that produced this instance
    ds.ManufacturerModelName = MANUFACTURER
    ds.SoftwareVersions = version


def reference_source(ds: Any, source_slice: Any, same_study: bool) -> None:
    """Reference the source slice (General Reference) and its series (Common Instance Reference, Related Series)."""
    from pydicom.dataset import Dataset

    ref = Dataset()
    ref.ReferencedSOPClassUID = source_slice.SOPClassUID
    ref.ReferencedSOPInstanceUID = source_slice.SOPInstanceUID
    ref.PurposeOfReferenceCodeSequence = [code_item("121322", "DCM", "Source image for image processing operation")]
    ds.SourceImageSequence = [ref]
    instance = Dataset()
    instance.ReferencedSOPClassUID = source_slice.SOPClassUID
    instance.ReferencedSOPInstanceUID = source_slice.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = source_slice.SeriesInstanceUID
    series.ReferencedInstanceSequence = [instance]
    if same_study:
        ds.ReferencedSeriesSequence = [series]
    else:
        other = Dataset()
        other.StudyInstanceUID = source_slice.StudyInstanceUID
        other.ReferencedSeriesSequence = [series]
        ds.StudiesContainingOtherReferencedInstancesSequence = [other]
    related = Dataset()
    related.StudyInstanceUID = source_slice.StudyInstanceUID
    related.SeriesInstanceUID = source_slice.SeriesInstanceUID
    related.PurposeOfReferenceCodeSequence = [
        code_item("121323", "DCM", "Source series for image processing operation")
    ]
    ds.RelatedSeriesSequence = [related]
