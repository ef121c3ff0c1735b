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

import fsspec
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

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
) -> tuple[Dataset, list[str]]:
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
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.ImplementationClassUID = UID_ROOT + "1"
    if syntax in (JPEG2000Lossless, RLELossless):
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(
            syntax,
            arr,
            encoding_plugin="pylibjpeg" if syntax == JPEG2000Lossless else "",
            generate_instance_uid=False,  # the UID is part of the seeded content
        )
    else:
        ds.file_meta.TransferSyntaxUID = syntax
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
    return ds, phi


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
) -> SynthCorpus:
    """Write a corpus to ``out`` (any fsspec URL); deterministic for ``seed``.

    Each patient has 1-4 studies over several years, each study 1-3 images (PA, AP,
    LATERAL); transfer syntaxes cycle through ``transfer_syntaxes`` (default: all five
    the generator writes) so every syntax appears in any corpus of five images or more.
    """
    gen = _Generator(seed)
    syntaxes = tuple(transfer_syntaxes or TRANSFER_SYNTAXES)
    fs, root = fsspec.core.url_to_fs(out, **(storage_options or {}))
    root = root.rstrip("/")
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
            study = {
                "date": date,
                "uid": gen.uid(),
                "prior_uid": gen.uid(),
                "pps_uid": gen.uid(),
                "accession": f"ACC{gen.digits(9)}",
                "study_id": f"ST{gen.digits(7)}",
                "requested_id": f"RP{gen.digits(8)}",
                "referrer": gen.rng.choice(PHYSICIANS),
                "procedure": PROCEDURES.get(views, "CHEST (PA AND LAT)"),
            }
            for number, view in enumerate(views, start=1):
                syntax = syntaxes[len(images) % len(syntaxes)]
                ds, phi = _image(gen, patient, study, view, number, rows, columns, syntax)
                relpath = f"{folder}/{date.isoformat()}_{study['accession']}/{view}_{number}.dcm"
                path = f"{root}/{relpath}"
                fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                with fs.open(path, "wb") as handle:
                    handle.write(_encode(ds))
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
                    )
                )
            date = date + dt.timedelta(days=gen.rng.randrange(60, 900))
    return SynthCorpus(root=out, images=tuple(images))


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
    return pa.table(columns, schema=INVENTORY_SCHEMA)
