"""Adversarial cases: PHI in attributes outside Table E.1-1, in coded and numeric values
used as text, in the file meta, and behind a VR that contradicts the dictionary.

Every case writes one file from ``base_image`` with its own patient (seed) and plants
strings found nowhere else; each must come out written (``reason`` None) with none of
them in any rendering.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from cxr_dask.adversarial import Case, base_image, save

KIND = "attributes"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _case(name: str, seed: int, planted: tuple[str, ...], change: Callable[[Dataset], None]) -> Case:
    """A case whose file is ``base_image(seed)`` changed by ``change``."""

    def write(folder: Path) -> None:
        ds = base_image(seed)
        change(ds)
        save(ds, folder / f"{name}.dcm")

    return Case(name=name, kind=KIND, planted=planted, write=write)


def _window_explanation(ds: Dataset) -> None:
    ds.WindowCenterWidthExplanation = "Bramwell Oxenford preferred"


def _lut_explanation(ds: Dataset) -> None:
    lut = Dataset()
    lut.add(DataElement(0x00283002, "US", [4, 0, 16]))  # LUTDescriptor
    lut.LUTExplanation = "set for Tamsin Vellacourt"
    lut.add(DataElement(0x00283006, "US", [0, 100, 200, 300]))  # LUTData
    ds.VOILUTSequence = Sequence([lut])


def _scheduled_comments(ds: Dataset) -> None:
    ds.CommentsOnTheScheduledProcedureStep = "Patient Ignatius Pemberley called twice"
    step = Dataset()
    step.CommentsOnTheScheduledProcedureStep = "pager 5550137 Dr Orlaith"
    ds.ScheduledProcedureStepSequence = Sequence([step])


def _reason_outside_table(ds: Dataset) -> None:
    ds.ReasonForPerformedProcedureCodeSequence = Sequence([_code("R1", "99X", "fall at Corvina Street 12")])


def _unformatted_text(ds: Dataset) -> None:
    ds.UnformattedTextValue = "History: Lysander Quayle, SSN 078-05-1120"


def _extended_code_meaning(ds: Dataset) -> None:
    item = _code("399348003", "SCT", "postero-anterior")
    item.ExtendedCodeMeaning = "PA view for Evadne Hollowell"
    ds.ViewCodeSequence = Sequence([item])


def _retrieve_url(ds: Dataset) -> None:
    ds.RetrieveURL = "https://pacs.example/wado?patientID=MRN7731904&name=Rosamund%5EThackery"


def _filename_in_container(ds: Dataset) -> None:
    ds.FilenameInContainer = "Wolstenholme_Edgar_19520817.dcm"


def _icc_profile(ds: Dataset) -> None:
    ds.ICCProfile = b"acspAPPL\x00desc Calloway Brightwater 19450302\x00"


def _after_pixel_data(ds: Dataset) -> None:
    ds.add(DataElement(0xFFFCFFFC, "OB", b"Pennyfeather Lomax "))  # Data Set Trailing Padding
    ds.add(DataElement(0x7FE00020, "OW", b"Ambrose Duckworth "))  # retired, after PixelData
    ds.add(DataElement(0x80000010, "LO", "Ottoline Spratt"))  # unknown public group


def _retired_with_names(ds: Dataset) -> None:
    ds.ModifyingDeviceManufacturer = "edited by Horatio Fenwick"
    ds.OriginalImageIdentificationNomenclature = "Cressida Marchbank"
    ds.RequestedProcedureDescriptionTrial = "for Barnaby Ollerenshaw"


def _hl7_message(ds: Dataset) -> None:
    ds.HL7InstanceIdentifier = "MSH|^~\\&|RIS|H|||PID|||8877123||Gravesend^Philippa||19390521|F"


def _name_in_view_position(ds: Dataset) -> None:
    ds.ViewPosition = "FOTHERINGAY"


def _name_in_image_type(ds: Dataset) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABERNATHY"]


def _name_in_body_part(ds: Dataset) -> None:
    ds.BodyPartExamined = "WINTERBOTTOM"


def _mrn_as_series_number(ds: Dataset) -> None:
    ds.PatientID = "46651209"
    ds.SeriesNumber = "46651209"


def _text_in_study_time(ds: Dataset) -> None:
    ds.add(DataElement(0x00080030, "TM", "Quillfeather"))


def _text_in_file_meta_version(ds: Dataset) -> None:
    ds.file_meta.FileMetaInformationVersion = b"Delacroix Umber"


def _uid_as_lo(keyword: str, uid: str) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        tag = ds[keyword].tag
        ds[tag] = DataElement(tag, "LO", uid)
        if keyword == "SOPInstanceUID":
            ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)

    return change


SOP_AS_LO = "1.2.826.0.1.3680043.8.498.7723994011"
STUDY_AS_LO = "1.2.826.0.1.3680043.8.498.8834005122"

CASES: tuple[Case, ...] = (
    _case("window_explanation", 201, ("Bramwell", "Oxenford"), _window_explanation),
    _case("lut_explanation", 202, ("Tamsin", "Vellacourt"), _lut_explanation),
    _case("scheduled_step_comments", 203, ("Ignatius", "Pemberley", "5550137", "Orlaith"), _scheduled_comments),
    _case("reason_outside_table", 204, ("Corvina",), _reason_outside_table),
    _case("unformatted_text_value", 205, ("Lysander", "Quayle", "078-05-1120"), _unformatted_text),
    _case("extended_code_meaning", 206, ("Evadne", "Hollowell"), _extended_code_meaning),
    _case("retrieve_url_query", 207, ("MRN7731904", "Rosamund", "Thackery"), _retrieve_url),
    _case("filename_in_container", 208, ("Wolstenholme", "19520817"), _filename_in_container),
    _case("icc_profile_text", 209, ("Calloway", "Brightwater", "19450302"), _icc_profile),
    _case("elements_after_pixel_data", 210, ("Pennyfeather", "Duckworth", "Spratt"), _after_pixel_data),
    _case(
        "retired_with_names", 211, ("Horatio", "Fenwick", "Cressida", "Marchbank", "Ollerenshaw"), _retired_with_names
    ),
    _case("hl7_message_birth_date", 212, ("8877123", "Gravesend", "Philippa", "19390521"), _hl7_message),
    _case("name_in_view_position", 213, ("FOTHERINGAY",), _name_in_view_position),
    _case("name_in_image_type", 214, ("ABERNATHY",), _name_in_image_type),
    _case("name_in_body_part", 215, ("WINTERBOTTOM",), _name_in_body_part),
    _case("mrn_as_series_number", 216, ("46651209",), _mrn_as_series_number),
    _case("text_in_study_time", 217, ("Quillfeather",), _text_in_study_time),
    _case("text_in_file_meta_version", 218, ("Delacroix", "Umber"), _text_in_file_meta_version),
    _case("sop_instance_uid_as_lo", 219, (SOP_AS_LO,), _uid_as_lo("SOPInstanceUID", SOP_AS_LO)),
    _case("study_instance_uid_as_lo", 220, (STUDY_AS_LO,), _uid_as_lo("StudyInstanceUID", STUDY_AS_LO)),
)
