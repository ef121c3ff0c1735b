"""Pass 1: read each file's header only and emit one small inventory record.

The records are everything the client needs to mint identifiers (patients, studies,
images, each patient's earliest date); pixel data is never read here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from cxr_dask.metadata import STORAGE_ERROR
from cxr_dask.privacy import quiet_pydicom
from cxr_dask.storage import Location, is_storage_error, open_for_header

#: The header attributes pass 1 needs; reading stops at pixel data anyway.
_SCAN_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "PatientID",
    "IssuerOfPatientID",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
]

#: Dates tried, in order, for a file's anchor date when StudyDate is absent or malformed.
_ANCHOR_DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
#: Reasons that already explain why a header is not followed by pixel data.
_NO_PIXELS_EXPECTED = frozenset({"dicomdir", "unsupported_sop_class", "no_sop_class_uid"})

INVENTORY_SCHEMA = pa.schema(
    [
        ("key_index", pa.int64()),
        ("key", pa.string()),
        ("size", pa.int64()),
        ("sop_class_uid", pa.string()),
        ("sop_instance_uid", pa.string()),
        ("patient_id", pa.string()),
        ("issuer_of_patient_id", pa.string()),
        ("accession_number", pa.string()),
        ("study_instance_uid", pa.string()),
        ("series_instance_uid", pa.string()),
        ("anchor_date", pa.date32()),
        ("error", pa.string()),
    ]
)


def parse_da(value: object) -> dt.date | None:
    """A DICOM DA value as a date, or None when absent or malformed."""
    text = str(value or "").strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).strip() if value is not None else ""


def classify_header(ds: pydicom.Dataset) -> str | None:
    """The quarantine reason class for a header pass 2 could not process, else None."""
    file_meta = getattr(ds, "file_meta", None) or pydicom.Dataset()
    sop_class = _text(ds, "SOPClassUID") or _text(file_meta, "MediaStorageSOPClassUID")
    if sop_class == MEDIA_STORAGE_DIRECTORY:
        return "dicomdir"
    if not sop_class:
        return "no_sop_class_uid"
    if "Image Storage" not in UID(sop_class).name:
        return "unsupported_sop_class"
    if not _text(ds, "SOPInstanceUID"):
        return "no_sop_instance_uid"
    if not _text(ds, "StudyInstanceUID"):
        return "no_study_instance_uid"
    if not _text(ds, "PatientID"):
        return "no_patient_id"
    return None


def scan_file(location: Location, key: str, key_index: int, size: int) -> dict[str, Any]:
    """One inventory record; a file that cannot be used carries an ``error`` reason class."""
    record: dict[str, Any] = {name: None for name in INVENTORY_SCHEMA.names}
    record.update(key_index=key_index, key=key, size=size)
    if size == 0:
        record["error"] = "empty_file"
        return record
    try:
        with open_for_header(location, key, size) as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=True, specific_tags=_SCAN_TAGS)
            # stop_before_pixels halts at the pixel data tag; reaching the end of the file
            # instead means the object was cut short (or has no pixels to de-identify).
            # (A deflated dataset is inflated whole, so there the position says nothing.)
            deflated = ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
            reached_end = handle.tell() >= size and not deflated
        reason = classify_header(ds)
        if reached_end and reason not in _NO_PIXELS_EXPECTED:
            reason = "truncated_or_no_pixel_data"
        record.update(
            error=reason,
            sop_class_uid=_text(ds, "SOPClassUID") or None,
            sop_instance_uid=_text(ds, "SOPInstanceUID") or None,
            patient_id=_text(ds, "PatientID") or None,
            issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
            accession_number=_text(ds, "AccessionNumber"),
            study_instance_uid=_text(ds, "StudyInstanceUID") or None,
            series_instance_uid=_text(ds, "SeriesInstanceUID") or None,
            anchor_date=_anchor_date(ds),
        )
    except InvalidDicomError:
        record["error"] = "not_dicom"
    except Exception as error:
        # Values are decoded lazily: a damaged one fails here, and its message could quote
        # it, so only the reason class is kept (fail closed, never a crash of the task).
        # A read the store failed (after its retries) says nothing about the content: the
        # key is rescanned by the next run of the same command.
        record["error"] = STORAGE_ERROR if is_storage_error(error) else "unreadable_header"
    return record


def _anchor_date(ds: pydicom.Dataset) -> dt.date | None:
    for keyword in _ANCHOR_DATES:
        parsed = parse_da(ds.get(keyword))
        if parsed is not None:
            return parsed
    return None


def scan_partition(items: Iterable[tuple[int, str, int]], location: Location) -> list[dict[str, Any]]:
    """Scan a partition of ``(key_index, key, size)`` items (the pass-1 task)."""
    quiet_pydicom()
    return [scan_file(location, key, key_index, size) for key_index, key, size in items]


def to_table(records: Iterable[dict[str, Any]]) -> pa.Table:
    """Inventory records as an Arrow table sorted by key index."""
    rows = sorted(records, key=lambda r: r["key_index"])
    return pa.Table.from_pylist(rows, schema=INVENTORY_SCHEMA)


def mark_duplicates(table: pa.Table) -> pa.Table:
    """Quarantine every file after the first that repeats a SOPInstanceUID.

    Two files with one SOPInstanceUID would get one dicom_id and one output path; the
    first (in key order) wins and the rest are audited as duplicates, never lost silently.
    """
    seen: set[str] = set()
    errors = table.column("error").to_pylist()
    for i, (sop, error) in enumerate(zip(table.column("sop_instance_uid").to_pylist(), errors, strict=True)):
        if error is not None or sop is None:
            continue
        if sop in seen:
            errors[i] = "duplicate_sop_instance_uid"
        seen.add(sop)
    index = table.schema.get_field_index("error")
    return table.set_column(index, "error", pa.array(errors, pa.string()))
