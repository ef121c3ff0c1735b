"""The DX For Presentation header with PHI planted at every depth, and the round trip
through bytes the header tests share (test_header, test_header_lazy_phrases)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io

import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

from cxr_dask.deid.header import FileIdentity, HeaderReport, deidentify_header
from cxr_dask.deid.profile import ProfileOptions

SHIFT = 7 * 5300  # about a century, a whole number of weeks
IDENTITY = FileIdentity(
    subject_id=14_142_135,
    study_id=53_000_777,
    dicom_id="02aa804e-bde0afdd-112c0b34-7bc16630-4e384014",
    shift_days=SHIFT,
)
STUDY_UID = "1.2.826.0.1.3680043.8.498.1111"
SERIES_UID = "1.2.826.0.1.3680043.8.498.2222"
SOP_UID = "1.2.826.0.1.3680043.8.498.3333"
FOR_UID = "1.2.826.0.1.3680043.8.498.4444"
PIXELS = bytes(range(256)) * 32  # 64 x 64 x 16 bit

#: Every identifying value planted in ``make_dx``: none may survive anywhere.
PLANTED = [
    "Quixbury",
    "Zelphine",
    "MRN99887766",
    "OPID554433",
    "HOSPISSUERX",
    "Wallaby Way",
    "Saint Quimby Memorial",
    "7 Quimby Road",
    "Drummond",
    "Halvard",
    "Ysolde",
    "Oswin",
    "ACC7766554",
    "STUDY8899",
    "XRAYROOM7Q",
    "PRIVPHIQUIX",
    "SEQPRIVPHI",
    "DEEPPRIVPHI",
    "Quorra",
    "RPID3344",
    "SPSID7788",
    "fell at home",
    "SN-55-XY-99",
    "HOSP_AE_TITLE",
    "19470312",
    "20190314",
    "2019-03-14",
    "03/14/2019",
    "20190301",
    "20190305",
    "20180101",
    "20191399",
    STUDY_UID,
    SERIES_UID,
    SOP_UID,
    FOR_UID,
]
ORIGINAL_DATES = ["20190314", "20190301", "20190305", "20180101"]


def remap(uid: str) -> str:
    """A small deterministic stand-in for the keyed-hash UID mapper."""
    digest = hashlib.sha256(uid.encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def shifted(yyyymmdd: str) -> str:
    day = dt.datetime.strptime(yyyymmdd, "%Y%m%d").date() + dt.timedelta(days=SHIFT)
    return day.strftime("%Y%m%d")


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def make_dx(*, with_sop_uid: bool = True) -> FileDataset:
    """A realistic DX For Presentation header with PHI planted at every depth."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = SOP_UID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.3.4.5.6.7.8"
    meta.ImplementationVersionName = "HOSPPACS"
    meta.SourceApplicationEntityTitle = "HOSP_AE_TITLE"
    ds = FileDataset("dx.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceCreationDate = "20191399"  # malformed: removed, never kept
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    if with_sop_uid:
        ds.SOPInstanceUID = SOP_UID
    ds.StudyDate = "20190314"
    ds.SeriesDate = "2019.03.14"  # legacy form
    ds.ContentDate = "20190314"
    ds.AcquisitionDateTime = "20190314081530.123456+0100"
    ds.StudyTime = "081530"
    ds.ContentTime = "081531.5"
    ds.AcquisitionTime = "081529"
    ds.AccessionNumber = "ACC7766554"
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "ACME"
    ds.InstitutionName = "Saint Quimby Memorial"
    ds.InstitutionAddress = "7 Quimby Road"
    ds.ReferringPhysicianName = "Drummond^Halvard"
    ds.StationName = "XRAYROOM7Q"
    ds.StudyDescription = "CHEST PA AND LAT Quixbury"
    ds.SeriesDescription = "CHEST PA 03/14/2019"
    ds.PerformedProcedureStepDescription = "CHEST PA AND LAT"
    ds.PerformingPhysicianName = "Perf^Oswin"
    ds.OperatorsName = "Tech^Ysolde"
    ds.ProcedureCodeSequence = Sequence([code("CXR2V", "ACMEPROC", "XR CHEST 2 VIEWS")])
    ds.ProcedureCodeSequence[0].private_block(0x0011, "ACME PRIV", create=True).add_new(0x10, "LO", "SEQPRIVPHI")
    ds.PatientName = "Quixbury^Zelphine^^Mrs"
    ds.PatientID = "MRN99887766"
    ds.IssuerOfPatientID = "HOSPISSUERX"
    ds.PatientBirthDate = "19470312"
    ds.PatientSex = "F"
    ds.PatientAddress = "12 Wallaby Way Sydney"
    other = Dataset()
    other.PatientID = "OPID554433"
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientIdentityRemoved = "NO"
    ds.DeviceSerialNumber = "SN-55-XY-99"
    ds.DateOfLastCalibration = ["20190301", "20190305"]  # multi-valued
    ds.TimeOfLastCalibration = ["101010", "111111"]
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.StudyID = "STUDY8899"
    ds.SeriesNumber = "1"
    ds.InstanceNumber = "1"
    ds.PatientOrientation = ["A", "R"]
    ds.FrameOfReferenceUID = FOR_UID
    ds.ImageLaterality = "U"
    ds.ImageComments = "Quixbury fell at home"
    # three levels deep: ViewCodeSequence > item > ViewModifierCodeSequence > item > ...
    deep = code("R-10202", "SRT", "frontal")
    deep.ContentCreatorName = "Deep^Quorra"
    deep.ObservationDateTime = "20180101120000"
    deep.ReferencedSOPInstanceUID = STUDY_UID  # same input UID as StudyInstanceUID
    deep.private_block(0x0013, "ACME DEEP", create=True).add_new(0x01, "LO", "DEEPPRIVPHI")
    deep.ScheduledProtocolCodeSequence = Sequence([code("P1", "99ACME", "Quixbury protocol")])
    view = code("R-10214", "SRT", "postero-anterior")
    view.ViewModifierCodeSequence = Sequence([deep])
    ds.ViewCodeSequence = Sequence([view])
    request = Dataset()
    request.RequestedProcedureID = "RPID3344"
    request.ScheduledProcedureStepID = "SPSID7788"
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    referenced.ReferencedSOPInstanceUID = STUDY_UID
    request.ReferencedStudySequence = Sequence([referenced])
    ds.RequestAttributesSequence = Sequence([request])
    ds.AcquisitionContextSequence = Sequence([code("X1", "99ACME", "Quixbury context")])
    ds.private_block(0x0009, "ACME PRIV", create=True).add_new(0x01, "LO", "PRIVPHIQUIX")
    ds.DetectorType = "SCINTILLATOR"
    ds.ViewPosition = "PA"
    ds.PositionerType = "NONE"
    ds.PresentationLUTShape = "IDENTITY"
    ds.PositionReferenceIndicator = ""
    ds.AnatomicRegionSequence = Sequence([code("T-D3000", "SRT", "Chest")])
    ds.BodyPartExamined = "CHEST"
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 64
    ds.Columns = 64
    ds.PixelSpacing = ["0.139", "0.139"]
    ds.ImagerPixelSpacing = ["0.139", "0.139"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.add_new(0x60000010, "US", 64)  # overlay group: every element goes
    ds.add_new(0x60023000, "OW", b"\0" * 8)
    ds.add_new(0x50000005, "US", 1)  # curve
    ds.PixelData = PIXELS
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read(data: bytes) -> FileDataset:
    return pydicom.dcmread(io.BytesIO(data))


def deidentify(ds: FileDataset, options: ProfileOptions | None = None) -> tuple[FileDataset, bytes, HeaderReport]:
    """Round-trip through bytes first so elements arrive raw, as in production."""
    original = read(to_bytes(ds))
    report = deidentify_header(original, IDENTITY, remap, options or ProfileOptions())
    data = to_bytes(original)
    return read(data), data, report
