"""A deterministic synthetic chest x-ray corpus with PHI planted where real files carry it.

Used by the tests, ``make run`` and the benchmarks. Every identifying string written into
a file is also listed in its ``SynthImage.phi``, so a test can search the outputs for
each of them. The same seed always gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MediaStorageDirectoryStorage,
    RLELossless,
)

from cxr_dask import storage
from cxr_dask.privacy import quiet_pydicom
from cxr_dask.storage import Location
from cxr_dask.testing.synth_text import PHI, STRUCTURE, PlantedText, burn_in, phi_lines

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR = "1.2.840.10008.5.1.4.1.1.1"
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, for example UIDs

TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

#: Further syntaxes the generator can write when asked (pixel tests and benchmarks).
EXTRA_TRANSFER_SYNTAXES = (JPEGLSLossless, JPEG2000, JPEGLSNearLossless)
#: Syntaxes written lossy: the file says so in LossyImageCompression.
LOSSY_SYNTAXES = frozenset({JPEG2000, JPEGLSNearLossless})

SURNAMES = [
    "Abernathy",
    "Albrecht",
    "Bancroft",
    "Blackwood",
    "Castellano",
    "Chamberlain",
    "Delacroix",
    "Donovan",
    "Eastwood",
    "Fairbanks",
    "Fitzgerald",
    "Gallagher",
    "Goldberg",
    "Hargreaves",
    "Holloway",
    "Ingram",
    "Jablonski",
    "Kavanagh",
    "Kowalczyk",
    "Lancaster",
    "Lindqvist",
    "Macintyre",
    "Montgomery",
    "Nakamura",
    "Northcott",
    "Oyelaran",
    "Pemberton",
    "Quintero",
    "Radcliffe",
    "Rasmussen",
    "Salazar",
    "Schaefer",
    "Sorensen",
    "Thornbury",
    "Underwood",
    "Vasquez",
    "Wainwright",
    "Whitaker",
    "Yamamoto",
    "Zimmerman",
    "Ashcroft",
    "Bellingham",
    "Carmichael",
    "Drummond",
    "Ellsworth",
    "Featherstone",
    "Grimaldi",
    "Hathaway",
    "Ivanova",
    "Jorgensen",
    "Kingsley",
    "Lombardi",
    "Merriweather",
    "Nightingale",
    "Ottoline",
    "Prendergast",
    "Rutherford",
    "Stanhope",
    "Thistlewood",
    "Villanueva",
]
GIVEN_NAMES = [
    "Agatha",
    "Bartholomew",
    "Cornelius",
    "Desmond",
    "Evangeline",
    "Florentine",
    "Gwendolyn",
    "Horatio",
    "Isadora",
    "Jebediah",
    "Leopold",
    "Marguerite",
    "Nathaniel",
    "Octavia",
    "Percival",
    "Rosalind",
    "Sebastian",
    "Theodora",
    "Ulysses",
    "Valentina",
    "Wilhelmina",
    "Zachariah",
]
STREETS = ["Maplewood", "Birchmont", "Cedarcrest", "Dogwood", "Elmhurst", "Foxglove", "Hawthorne", "Juniper"]
CITIES = ["Springfield", "Riverton", "Fairhaven", "Brookfield", "Lakeshore", "Millbrook"]
INSTITUTIONS = ("Saint Bartholomew Memorial Hospital", "Riverton General Infirmary", "Lakeshore Medical Center")
PHYSICIANS = ("Okonkwo^Chidimma", "Halvorsen^Magnus", "Petrakis^Eleni", "Ferreira^Joaquim")

#: View -> (ViewPosition, SNOMED code, meaning); procedures as real CXRs carry them.
VIEWS = {
    "PA": ("PA", "399348003", "postero-anterior"),
    "AP": ("AP", "272479001", "antero-posterior"),
    "LATERAL": ("LL", "399173006", "lateral"),
}
PROCEDURES = {
    ("PA", "LATERAL"): "CHEST (PA AND LAT)",
    ("PA",): "CHEST (PA)",
    ("AP",): "CHEST (PORTABLE AP)",
}


@dataclass(frozen=True)
class SynthImage:
    """One synthetic file and the PHI planted in it."""

    relpath: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    accession_number: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    study_date: dt.date
    view: str
    transfer_syntax: str
    phi: tuple[str, ...]
    photometric: str = ""
    #: Text and decoys painted into the pixels (empty unless ``burned_in_text``).
    burned_in: tuple[PlantedText, ...] = ()

    @property
    def pixel_phi_tokens(self) -> tuple[str, ...]:
        """The identifying words painted into the pixels (what OCR must never find in an output)."""
        return tuple(dict.fromkeys(t for p in self.burned_in if p.kind == PHI for t in p.tokens))


@dataclass(frozen=True)
class SynthCorpus:
    """What was written where; ``phi_values`` is what must never reach an output."""

    root: str
    images: tuple[SynthImage, ...]

    def phi_values(self) -> set[str]:
        return {value for image in self.images for value in image.phi}

    def by_patient(self) -> dict[str, list[SynthImage]]:
        groups: dict[str, list[SynthImage]] = {}
        for image in self.images:
            groups.setdefault(image.patient_id, []).append(image)
        return groups


@dataclass
class _Patient:
    name: str
    patient_id: str
    issuer: str
    birth_date: dt.date
    sex: str
    address: str
    phone: str
    other_id: str


class _Generator:
    """Holds the seeded random sources so every value follows from the seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)

    def uid(self) -> str:
        return UID_ROOT + str(self.rng.getrandbits(96))

    def study(self, date: dt.date, procedure: str) -> dict[str, Any]:
        """One study's identifiers and PHI: UIDs, accession, ids, referring physician."""
        return {
            "date": date,
            "uid": self.uid(),
            "prior_uid": self.uid(),
            "pps_uid": self.uid(),
            "accession": f"ACC{self.digits(9)}",
            "study_id": f"ST{self.digits(7)}",
            "requested_id": f"RP{self.digits(8)}",
            "referrer": self.rng.choice(PHYSICIANS),
            "procedure": procedure,
        }

    def digits(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(n))

    def patient(self) -> _Patient:
        surname, given = self.rng.choice(SURNAMES), self.rng.choice(GIVEN_NAMES)
        middle = self.rng.choice("ABCDEFGHJKLMNPRSTW")
        birth = dt.date(1930, 1, 1) + dt.timedelta(days=self.rng.randrange(365 * 60))
        return _Patient(
            name=f"{surname.upper()}^{given.upper()}^{middle}",
            patient_id=f"MRN{self.digits(8)}",
            issuer=self.rng.choice(("STBARTS_MRN", "RIVERTON_EMPI", "LAKESHORE_PID")),
            birth_date=birth,
            sex=self.rng.choice("MF"),
            address=f"{self.rng.randrange(10, 9999)} {self.rng.choice(STREETS)} Lane^{self.rng.choice(CITIES)}",
            phone=f"555-{self.digits(3)}-{self.digits(4)}",
            other_id=f"EMPI{self.digits(9)}",
        )


def _pixels(gen: _Generator, rows: int, columns: int, bits: int, monochrome1: bool) -> np.ndarray:
    """A chest-radiograph-like field: bright mediastinum and ribs, dark lungs, noise."""
    y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, columns, dtype=np.float32)[None, :]
    body = np.exp(-((x / 0.85) ** 6) - ((y / 0.95) ** 8))
    lungs = np.exp(-(((np.abs(x) - 0.38) / 0.22) ** 2) - ((y + 0.05) / 0.55) ** 4)
    ribs = 0.08 * np.sin(y * 28.0 + np.abs(x) * 6.0) * lungs
    field = 0.15 + 0.7 * body - 0.45 * lungs + ribs
    field += gen.np_rng.normal(0.0, 0.02, size=(rows, columns)).astype(np.float32)
    top = (1 << bits) - 1
    image = np.clip(field, 0.0, 1.0) * top
    if monochrome1:
        image = top - image
    return image.astype(np.uint16)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _private_block(ds: Dataset, group: int, creator: str, values: Sequence[str]) -> None:
    block = ds.private_block(group, creator, create=True)
    for offset, value in enumerate(values, start=1):
        block.add_new(offset, "LO", value)


def _image(
    gen: _Generator,
    patient: _Patient,
    study: dict[str, Any],
    view: str,
    number: int,
    rows: int,
    columns: int,
    syntax: str,
    text_rng: random.Random | None = None,
) -> tuple[Dataset, list[str], tuple[PlantedText, ...]]:
    rng = gen.rng
    is_dx = rng.random() < 0.6
    sop_uid, series_uid = gen.uid(), gen.uid()
    date = study["date"]
    da = date.strftime("%Y%m%d")
    time_text = f"{rng.randrange(7, 20):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}.{rng.randrange(1000):03d}"
    surname = patient.name.split("^")[0]
    station, serial = f"XR{rng.choice(('ROOM', 'PORT', 'ED'))}{gen.digits(3)}", f"SN{gen.digits(7)}"
    institution = rng.choice(INSTITUTIONS)
    comment = f"Pt {patient.name.replace('^', ' ')} {patient.patient_id} repeat film requested"

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.SOPClassUID = DX_FOR_PRESENTATION if is_dx else CR
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = da
    ds.InstanceCreationDate = da
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time_text
    ds.AcquisitionDateTime = da + time_text
    ds.AccessionNumber = study["accession"]
    ds.Modality = "DX" if is_dx else "CR"
    ds.PresentationIntentType = "FOR PRESENTATION" if is_dx else None
    if not is_dx:
        del ds.PresentationIntentType
    ds.Manufacturer = rng.choice(("AGFA", "Carestream Health", "FUJIFILM Corporation", "GE Healthcare"))
    ds.InstitutionName = institution
    ds.InstitutionAddress = f"{rng.randrange(100, 999)} {rng.choice(STREETS)} Avenue, {rng.choice(CITIES)}"
    ds.InstitutionalDepartmentName = "Radiology Dept West Wing"
    ds.ReferringPhysicianName = study["referrer"]
    ds.StationName = station
    ds.StudyDescription = study["procedure"] if rng.random() < 0.7 else f"{study['procedure']} {surname.upper()}"
    ds.SeriesDescription = f"CHEST {view}"
    ds.PerformingPhysicianName = rng.choice(PHYSICIANS)
    ds.OperatorsName = f"Tech^{rng.choice(GIVEN_NAMES)}"
    ds.ManufacturerModelName = "DigitalDiagnost"
    ds.ReferencedStudySequence = DicomSequence([Dataset()])
    ds.ReferencedStudySequence[0].ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = study["prior_uid"]
    ds.ProcedureCodeSequence = DicomSequence([_code(f"IMG{gen.digits(4)}", "99LOCAL", study["procedure"])])
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{min(99, (date - patient.birth_date).days // 365):03d}Y"
    ds.PatientAddress = patient.address
    ds.PatientTelephoneNumbers = patient.phone
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID = patient.other_id, "REGIONAL_EMPI"
    ds.OtherPatientIDsSequence = DicomSequence([other])
    ds.PatientComments = comment
    ds.BodyPartExamined = "CHEST"
    ds.KVP = "120" if view != "LATERAL" else "125"
    ds.ExposureTime = str(rng.randrange(5, 40))
    ds.Exposure = str(rng.randrange(1, 8))
    ds.DeviceSerialNumber = serial
    ds.SoftwareVersions = "4.2.1"
    ds.ImagerPixelSpacing = ["0.139", "0.139"]
    ds.ViewPosition = VIEWS[view][0]
    ds.StudyInstanceUID = study["uid"]
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study["study_id"]
    ds.SeriesNumber = str(number)
    ds.InstanceNumber = "1"
    ds.PatientOrientation = ["P", "F"] if view != "LATERAL" else ["A", "F"]
    ds.ImageLaterality = "U"
    ds.ImageComments = comment
    ds.RequestingPhysician = study["referrer"]
    request = Dataset()
    request.RequestedProcedureID = study["requested_id"]
    request.ScheduledProcedureStepID = f"SPS{gen.digits(7)}"
    request.RequestedProcedureDescription = f"{study['procedure']} for {surname.upper()}"
    _private_block(request, 0x0011, "SITE RIS 2.0", [f"Ordered for {patient.patient_id} by {study['referrer']}"])
    ds.RequestAttributesSequence = DicomSequence([request])
    ds.PerformedProcedureStepDescription = study["procedure"]
    pps = Dataset()
    pps.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    pps.ReferencedSOPInstanceUID = study["pps_uid"]
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence([pps])
    view_item = _code(VIEWS[view][1], "SCT", VIEWS[view][2])
    view_item.ViewModifierCodeSequence = DicomSequence([])
    ds.ViewCodeSequence = DicomSequence([view_item])
    orientation = _code("102538003" if view == "AP" and rng.random() < 0.5 else "C86043", "SCT", "")
    orientation.CodeMeaning = "recumbent" if orientation.CodeValue == "102538003" else "erect"
    orientation.CodingSchemeDesignator = "SCT" if orientation.CodeValue == "102538003" else "NCIt"
    orientation.PatientOrientationModifierCodeSequence = DicomSequence([])
    ds.PatientOrientationCodeSequence = DicomSequence([orientation])
    _private_block(ds, 0x0009, "ACME CXR 1.0", [patient.name, patient.patient_id])
    _private_block(ds, 0x0019, "ACME XR VENDOR", [f"{station} {serial}"])

    bits = rng.choice((12, 14, 16))
    monochrome1 = rng.random() < 0.3
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelSpacing = ["0.139", "0.139"]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.WindowCenter, ds.WindowWidth = str(1 << (bits - 1)), str(1 << bits)
    ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.DetectorType = "SCINTILLATOR"
    ds.FocalSpots = "1.2"

    arr = _pixels(gen, rows, columns, bits, monochrome1)
    planted: tuple[PlantedText, ...] = ()
    if text_rng is not None:  # its own random stream: headers stay as without text
        kind = text_rng.random()
        lines = phi_lines(text_rng, patient.name, patient.patient_id, patient.birth_date, date, study["accession"])
        planted = burn_in(
            arr,
            bits,
            monochrome1,
            text_rng,
            phi=lines if kind < 0.5 else None,  # half the images carry PHI in the pixels
            markers=kind < 0.75,
            structure=text_rng.random() < 0.2,
        )
        ds.BurnedInAnnotation = "YES" if any(p.kind != STRUCTURE for p in planted) else "NO"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(ds.SOPClassUID)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.file_meta.ImplementationClassUID = UID(UID_ROOT + "1")
    if syntax in (JPEG2000Lossless, RLELossless, *EXTRA_TRANSFER_SYNTAXES):
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(
            syntax,
            arr,
            encoding_plugin="pylibjpeg" if syntax in (JPEG2000Lossless, JPEG2000) else "",
            generate_instance_uid=False,  # the UID is part of the seeded content
            **({"j2k_cr": [8]} if syntax == JPEG2000 else {"jls_error": 2} if syntax == JPEGLSNearLossless else {}),
        )
        if syntax in LOSSY_SYNTAXES:
            ds.LossyImageCompression = "01"
            ds.LossyImageCompressionMethod = "ISO_15444_1" if syntax == JPEG2000 else "ISO_14495_1"
    else:
        ds.file_meta.TransferSyntaxUID = UID(syntax)
        ds.PixelData = arr.tobytes()

    phi = [
        patient.name,
        *[part for part in patient.name.split("^") if len(part) >= 6],
        patient.patient_id,
        patient.issuer,
        patient.other_id,
        patient.birth_date.strftime("%Y%m%d"),
        patient.address.split("^")[0],
        patient.phone,
        da,
        study["accession"],
        study["study_id"],
        study["requested_id"],
        study["uid"],
        study["prior_uid"],
        study["pps_uid"],
        series_uid,
        sop_uid,
        study["referrer"],
        institution,
        station,
        serial,
        comment,
    ]
    return ds, phi, planted


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=None, little_endian=None)
    return buffer.getvalue()


def synthesize(
    out: str,
    *,
    patients: int = 20,
    seed: int = 0,
    rows: int = 256,
    columns: int = 256,
    transfer_syntaxes: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    burned_in_text: bool = False,
) -> SynthCorpus:
    """Write a corpus to ``out`` (any fsspec URL); deterministic for ``seed``.

    Each patient has 1-4 studies over several years, each study 1-3 images (PA, AP,
    LATERAL); transfer syntaxes cycle through ``transfer_syntaxes`` (default: all five
    the generator writes) so every syntax appears in any corpus of five images or more.

    ``burned_in_text`` paints text into the pixels (``synth_text``): PHI lines in half
    the images, orientation markers in three quarters, a wire or ruler in a fifth; the
    planted boxes are in each ``SynthImage.burned_in``.
    """
    gen = _Generator(seed)
    syntaxes = tuple(transfer_syntaxes or TRANSFER_SYNTAXES)
    location = Location(out, dict(storage_options or {}))
    storage.remove_partials(location)  # what a killed earlier run left
    images: list[SynthImage] = []
    for _ in range(patients):
        patient = gen.patient()
        first = dt.date(1990, 1, 1) + dt.timedelta(days=gen.rng.randrange(365 * 30))
        date = first
        folder = f"{patient.name.split('^')[0]}_{patient.name.split('^')[1]}_{patient.patient_id}"
        for _ in range(gen.rng.randint(1, 4)):
            views = gen.rng.choice(list(PROCEDURES))
            if len(views) == 1 and gen.rng.random() < 0.3:
                views = (*views, "LATERAL")
            study = gen.study(date, PROCEDURES.get(views, "CHEST (PA AND LAT)"))
            for number, view in enumerate(views, start=1):
                syntax = syntaxes[len(images) % len(syntaxes)]
                text_rng = random.Random(f"{seed}:{len(images)}") if burned_in_text else None
                ds, phi, planted = _image(gen, patient, study, view, number, rows, columns, syntax, text_rng)
                relpath = f"{folder}/{date.isoformat()}_{study['accession']}/{view}_{number}.dcm"
                storage.write_atomic(location, relpath, _encode(ds))
                images.append(
                    SynthImage(
                        relpath=relpath,
                        patient_id=patient.patient_id,
                        issuer_of_patient_id=patient.issuer,
                        patient_name=patient.name,
                        accession_number=study["accession"],
                        study_instance_uid=study["uid"],
                        series_instance_uid=ds.SeriesInstanceUID,
                        sop_instance_uid=ds.SOPInstanceUID,
                        study_date=date,
                        view=view,
                        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
                        phi=tuple(dict.fromkeys(phi)),
                        photometric=str(ds.PhotometricInterpretation),
                        burned_in=planted,
                    )
                )
            date = date + dt.timedelta(days=gen.rng.randrange(60, 900))
    storage.remove_partials(location)
    return SynthCorpus(root=out, images=tuple(images))


# --- bad input ------------------------------------------------------------------------

#: The size of the absurd text value in ``bad_corpus`` (an LO holds at most 64 characters).
HUGE_VALUE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class BadFile:
    """One file of the bad-input corpus and the audit reason it must get (None: written)."""

    relpath: str
    reason: str | None
    phi: tuple[str, ...]


def _bad_templates(gen: _Generator) -> tuple[_Patient, dict[str, Any]]:
    patient = gen.patient()
    study = gen.study(dt.date(2015, 6, 3), "CHEST (PA)")
    return patient, study


def _splice_before_pixels(data: bytes, element: bytes) -> bytes:
    """``data`` with raw ``element`` bytes inserted just before the PixelData tag."""
    at = data.rindex(b"\xe0\x7f\x10\x00")
    return data[:at] + element + data[at:]


def bad_corpus(
    out: str,
    *,
    seed: int = 0,
    rows: int = 64,
    columns: int = 64,
    huge_value_bytes: int = HUGE_VALUE_BYTES,
    storage_options: dict[str, Any] | None = None,
) -> tuple[BadFile, ...]:
    """Write the broken files a real archive holds, each with the audit reason it must get.

    Truncated files, non-DICOM and empty files, a DICOMDIR, no PatientID, an unknown
    transfer syntax, pixel data cut short or not encapsulated as its syntax says, a damaged
    value, an absurdly large text value, a length field claiming gigabytes, a patient
    whose dates are missing or malformed; repeated SOPInstanceUIDs (a byte-identical copy,
    a differing copy, a copy cut short sorted before its intact twin, a broken codestream
    sorted before its good twin); 12-bit JPEG Extended and the retired JPEG processes
    (encoded by dcmtk's ``dcmcjpeg``), Explicit VR Big Endian and a data set without the
    Part 10 header, with and without its UIDs. Folder and file names carry PHI, as real
    archives' do.
    """
    with quiet_pydicom():  # pydicom would log the planted malformed values it is asked to write
        return _write_bad_corpus(out, seed, rows, columns, huge_value_bytes, storage_options)


def _write_bad_corpus(
    out: str, seed: int, rows: int, columns: int, huge_value_bytes: int, storage_options: dict[str, Any] | None
) -> tuple[BadFile, ...]:
    gen = _Generator(seed)
    location = Location(out, dict(storage_options or {}))
    storage.remove_partials(location)
    patient, study = _bad_templates(gen)
    folder = f"BAD_{patient.name.split('^')[0]}_{patient.patient_id}"
    files: list[BadFile] = []

    def image(view: str = "PA", syntax: str = ExplicitVRLittleEndian, number: int = 1) -> tuple[Dataset, list[str]]:
        ds, phi, _ = _image(gen, patient, study, view, number, rows, columns, syntax)
        return ds, phi

    def write(name: str, data: bytes, reason: str | None, phi: Sequence[str]) -> None:
        relpath = f"{folder}/{name}"
        storage.write_atomic(location, relpath, data)
        files.append(BadFile(relpath, reason, tuple(dict.fromkeys(phi))))

    good, phi = image()
    good_bytes = _encode(good)
    write("a_good.dcm", good_bytes, None, phi)
    write("truncated_header.dcm", good_bytes[:700], "truncated_or_no_pixel_data", phi)
    ds, phi = image(number=12)
    data = _encode(ds)
    write("truncated_pixels.dcm", data[: len(data) - rows * columns], "undecodable_pixel_data", phi)
    write("empty.dcm", b"", "empty_file", [])
    note = f"Patient {patient.name.replace('^', ' ')} MRN {patient.patient_id}: not a DICOM file\n"
    write(f"notes_{patient.patient_id}.txt", note.encode() * 20, "not_dicom", [patient.patient_id])

    directory = Dataset()
    directory.FileSetID = "CXR"
    directory.DirectoryRecordSequence = DicomSequence([Dataset()])
    directory.DirectoryRecordSequence[0].DirectoryRecordType = "PATIENT"
    directory.DirectoryRecordSequence[0].PatientID = patient.patient_id
    directory.file_meta = FileMetaDataset()
    directory.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    directory.file_meta.MediaStorageSOPInstanceUID = UID(gen.uid())
    directory.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    write("DICOMDIR", _encode(directory), "dicomdir", [patient.patient_id])

    ds, phi = image(number=2)
    del ds.PatientID
    write("no_patient_id.dcm", _encode(ds), "no_patient_id", phi)

    ds, phi = image(number=3)
    unknown = _with_transfer_syntax(_encode(ds), b"1.2.826.0.1.3680043\x00")  # no such syntax
    write("unknown_transfer_syntax.dcm", unknown, "unknown_transfer_syntax", phi)

    ds, phi = image(number=4)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    write("pixels_cut_short.dcm", _encode(ds), "undecodable_pixel_data", phi)

    ds, phi = image(number=5)
    rle = _with_transfer_syntax(_encode(ds), str(RLELossless).encode() + b"\x00")  # says RLE, holds native
    write("pixels_not_encapsulated.dcm", rle, "undecodable_pixel_data", phi)

    ds, phi = image(number=6)
    data = _encode(ds)
    marker = b"\x28\x00\x03\x01US\x02\x00\x00\x00"  # PixelRepresentation 0, explicit VR
    write("damaged_value.dcm", data.replace(marker, b"\x28\x00\x03\x01US\x01\x00\x00"), "undecodable_value", phi)

    ds, phi = image(number=7)
    ds.StudyDescription = "CHEST " * (huge_value_bytes // 6)
    write("huge_value.dcm", _encode(ds), "oversized_element", phi)

    ds, phi = image(number=8)
    claim = b"\x08\x00\x19\x01UC\x00\x00" + (0x7FFFFFF0).to_bytes(4, "little") + b"ABCD"  # LongCodeValue, ~2 GB
    write("length_claims_gigabytes.dcm", _splice_before_pixels(_encode(ds), claim), "truncated_or_no_pixel_data", phi)

    ds, phi = image(number=9)
    del ds.StudyDate  # the other dates of the file still anchor the patient's shift
    write("no_study_date.dcm", _encode(ds), None, phi)

    ds, first_phi = image(number=10)
    duplicate = ds.SOPInstanceUID
    write("duplicate_1.dcm", _encode(ds), None, first_phi)
    write("duplicate_1_copy.dcm", _encode(ds), "duplicate_sop_instance_uid", first_phi)  # byte-identical
    ds, phi = image(view="LATERAL", number=11)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = duplicate
    write("duplicate_2.dcm", _encode(ds), "duplicate_differing_copy", phi)  # created no later: loses

    # a transfer retried: the copy cut short sorts BEFORE its intact twin, and loses
    ds, phi = image(number=13)
    data = _encode(ds)
    write("retried_0_cut.dcm", data[: len(data) - rows * columns // 2], "duplicate_differing_copy", phi)
    write("retried_1_whole.dcm", data, None, phi)

    # a broken JPEG codestream sorted before its good twin: chosen, quarantined in pass 2,
    # then the twin is written in the same run
    twin, phi = image(number=14, syntax=JPEG2000Lossless)
    twin_bytes = _encode(twin)
    frame = twin_bytes.rindex(b"\xff\x4f\xff\x51")  # the codestream's SOC and SIZ markers
    broken = twin_bytes[: frame + 40] + b"\x00" * 64 + twin_bytes[frame + 104 :]
    write("twin_0_broken.dcm", broken, "undecodable_pixels", phi)
    write("twin_1_good.dcm", twin_bytes, None, phi)

    # old codecs and encodings an old archive holds, all read and written
    for number, syntax in enumerate(DCMCJPEG_OPTION, start=15):
        ds, phi = image(number=number)
        write(f"jpeg_{syntax.rsplit('.', 1)[-1]}.dcm", jpeg_with_dcmtk(ds, syntax), None, phi)
    ds, phi = image(number=18)
    write("big_endian.dcm", _big_endian(ds), None, phi)
    ds, phi = image(number=19)
    write("acr_nema_style", _headerless(ds), None, phi)
    ds, phi = image(number=20)
    del ds.SOPClassUID, ds.SOPInstanceUID
    write("headerless_without_uids", _headerless(ds), "not_dicom", phi)

    # a second patient none of whose dates can be read: shifted from a fallback anchor
    patient = gen.patient()
    study = {**study, "uid": gen.uid(), "accession": f"ACC{gen.digits(9)}"}
    ds, phi = image(number=1)
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate"):
        setattr(ds, keyword, "2015-13-45")
    ds.AcquisitionDateTime = "20151345120000"
    folder = f"BAD_{patient.name.split('^')[0]}_{patient.patient_id}"
    write("malformed_dates.dcm", _encode(ds), None, [*phi, "2015-13-45"])
    storage.remove_partials(location)
    return tuple(files)


#: dcmcjpeg's option for each JPEG process it encodes (12-bit capable ones only).
DCMCJPEG_OPTION = {
    "1.2.840.10008.1.2.4.51": "+ee",  # JPEG Extended, 12-bit lossy
    "1.2.840.10008.1.2.4.53": "+es",  # spectral selection, processes 6 & 8 (retired)
    "1.2.840.10008.1.2.4.55": "+ep",  # full progression, processes 10 & 12 (retired)
}


def jpeg_with_dcmtk(ds: Dataset, syntax: str) -> bytes:
    """``ds`` (16 bits allocated, native) as a 12-bit lossy JPEG file of ``syntax``, encoded
    by dcmtk's ``dcmcjpeg`` (Debian ``dcmtk``): the old codecs no Python encoder writes.
    The SOPInstanceUID is kept (``+un``) so a copy can still be someone's twin."""
    import subprocess
    import tempfile

    arr = np.frombuffer(ds.PixelData, dtype="<u2") >> max(0, int(ds.BitsStored) - 12)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = arr.astype("<u2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    with tempfile.TemporaryDirectory(prefix="cxr-synth-") as folder:
        source, target = f"{folder}/in.dcm", f"{folder}/out.dcm"
        ds.save_as(source, enforce_file_format=True)
        subprocess.run(["dcmcjpeg", DCMCJPEG_OPTION[syntax], "+un", source, target], check=True, timeout=120)
        with open(target, "rb") as handle:
            return handle.read()


def retired_jpeg(syntax: str, *, seed: int = 0, rows: int = 64, columns: int = 64) -> bytes:
    """One synthetic chest image in an old JPEG process (``DCMCJPEG_OPTION``)."""
    gen = _Generator(seed)
    patient, study = _bad_templates(gen)
    ds, _, _ = _image(gen, patient, study, "PA", 1, rows, columns, ExplicitVRLittleEndian)
    return jpeg_with_dcmtk(ds, syntax)


def _big_endian(ds: Dataset) -> bytes:
    """``ds`` written as Explicit VR Big Endian (retired, still in old archives)."""
    arr = np.frombuffer(ds.PixelData, dtype="<u2")
    ds.PixelData = arr.astype(">u2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=False, enforce_file_format=True)
    return buffer.getvalue()


def _headerless(ds: Dataset) -> bytes:
    """``ds``'s data set alone, implicit VR little endian: no preamble, no meta (ACR-NEMA style)."""
    buffer = io.BytesIO()
    ds.file_meta, ds.preamble = FileMetaDataset(), None
    pydicom.dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def _with_transfer_syntax(data: bytes, uid: bytes) -> bytes:
    """An Explicit VR Little Endian file whose meta claims another syntax (damage on purpose).

    ``uid`` is NUL padded to the 20 bytes of Explicit VR Little Endian's UID, so no length
    in the meta changes.
    """
    explicit = str(ExplicitVRLittleEndian).encode() + b"\x00"
    assert len(uid) == len(explicit) and data.count(explicit) == 1
    return data.replace(explicit, uid)


#: MIMIC-CXR's shape: 377,110 images in 227,835 studies of 65,379 patients.
MIMIC_CXR_SHAPE = (377_110, 227_835, 65_379)


def inventory_table(images: int, *, studies: int | None = None, patients: int | None = None, seed: int = 0):
    """A pass-1 inventory (``inventory.INVENTORY_SCHEMA``) of ``images`` made-up rows, no files.

    Studies and patients default to MIMIC-CXR's proportions, so the identity map, its
    broadcast size and the graphs can be measured at archive scale without a corpus.
    Rows are in key order, as pass 1 returns them; every row is valid (no error).
    """
    import pyarrow as pa

    from cxr_dask.inventory import INVENTORY_SCHEMA

    n_images, n_studies, n_patients = MIMIC_CXR_SHAPE
    studies = studies or max(1, round(images * n_studies / n_images))
    patients = patients or max(1, round(images * n_patients / n_images))
    rng = np.random.default_rng(seed)
    # every study has >= 1 image and every patient >= 1 study; the rest are spread at random
    study_of_image = np.sort(np.concatenate([np.arange(studies), rng.integers(0, studies, images - studies)]))
    patient_of_study = np.sort(np.concatenate([np.arange(patients), rng.integers(0, patients, studies - patients)]))
    study_day = rng.integers(0, 365 * 30, studies)
    base = dt.date(1990, 1, 1).toordinal()
    study_dates = [dt.date.fromordinal(base + int(day)) for day in study_day]
    root = UID_ROOT + str(seed) + "."
    study_uids = [f"{root}1.{s}" for s in range(studies)]
    patient_ids = [f"PID{p:08d}" for p in patient_of_study.tolist()]
    accessions = [f"ACC{s:09d}" for s in range(studies)]
    s_of_i = study_of_image.tolist()
    columns = {
        "key_index": pa.array(np.arange(images, dtype=np.int64)),
        "key": [f"{patient_ids[s]}/{accessions[s]}/{i}.dcm" for i, s in enumerate(s_of_i)],
        "size": pa.array(np.full(images, 15_000_000, dtype=np.int64)),
        "sop_class_uid": [DX_FOR_PRESENTATION] * images,
        "sop_instance_uid": [f"{root}3.{i}" for i in range(images)],
        "patient_id": [patient_ids[s] for s in s_of_i],
        "issuer_of_patient_id": [""] * images,
        "accession_number": [accessions[s] for s in s_of_i],
        "study_instance_uid": [study_uids[s] for s in s_of_i],
        "series_instance_uid": [f"{root}2.{s}" for s in s_of_i],
        "anchor_date": [study_dates[s] for s in s_of_i],
        "error": pa.nulls(images, pa.string()),
    }
    for field in INVENTORY_SCHEMA:  # what pass 1 leaves empty for a unique, whole file
        columns.setdefault(field.name, pa.nulls(images, field.type))
    return pa.table(columns, schema=INVENTORY_SCHEMA)
