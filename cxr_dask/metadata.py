"""Parquet tables of the dataset (public side) and of the run's audit (private side).

The public tables follow MIMIC-CXR: ``metadata`` (one row per image, its columns and
types as in mimic-cxr-2.0.0-metadata), ``record_list`` and ``study_list``. The audit has
one row per input key and carries reason classes and counts, never a header value.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pydicom

from cxr_dask.deid.header import HeaderReport, get_value
from cxr_dask.deid.pixels import REGION_CLASSES, PixelReport
from cxr_dask.dicom.layout import study_folders
from cxr_dask.reasons import Reason

METADATA_SCHEMA = pa.schema(
    [
        ("dicom_id", pa.string()),
        ("subject_id", pa.int64()),
        ("study_id", pa.int64()),
        ("PerformedProcedureStepDescription", pa.string()),
        ("ViewPosition", pa.string()),
        ("Rows", pa.int64()),
        ("Columns", pa.int64()),
        ("StudyDate", pa.int64()),  # YYYYMMDD, shifted, as MIMIC-CXR stores it
        ("StudyTime", pa.float64()),  # HHMMSS.FFF, unshifted, as MIMIC-CXR stores it
        ("ProcedureCodeSequence_CodeMeaning", pa.string()),
        ("ViewCodeSequence_CodeMeaning", pa.string()),
        ("PatientOrientationCodeSequence_CodeMeaning", pa.string()),
    ]
)

RECORD_LIST_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("study_id", pa.int64()),
        ("dicom_id", pa.string()),
        ("path", pa.string()),
    ]
)

STUDY_LIST_SCHEMA = pa.schema([("subject_id", pa.int64()), ("study_id", pa.int64()), ("path", pa.string())])

#: The status and reason of a key whose read or write failed after the store's retries:
#: not done, never written, and retried by the next run of the same command.
STORAGE_ERROR = Reason.STORAGE_ERROR

#: Counts reported by the header de-identifier, one audit column each.
AUDIT_COUNTS = tuple(f.name for f in fields(HeaderReport))

#: Burned-in text regions of an image by class (``deid.pixels.REGION_CLASSES``): text
#: blanked, markers kept, blanked by a known-region rule, by strict mode, flagged for a
#: human look, left in place (nothing read text in them). One audit column each; never
#: the words.
PIXEL_CLASS_COLUMNS = {kind: f"pixel_regions_{kind}" for kind in REGION_CLASSES}

AUDIT_SCHEMA = pa.schema(
    [
        ("key_index", pa.int64()),
        ("status", pa.string()),  # written | quarantined | storage_error (not done: retried by the next run)
        ("reason", pa.string()),  # a reason class, null when written
        ("detail", pa.string()),  # a DICOM keyword or tag at most, never a value
        ("dicom_id", pa.string()),
        ("subject_id", pa.int64()),
        ("study_id", pa.int64()),
        ("bytes_in", pa.int64()),
        ("bytes_out", pa.int64()),
        *[(name, pa.int64()) for name in AUDIT_COUNTS],
        # burned-in text (deid/pixels/): counts and a rule's name, never the text read
        ("pixel_action", pa.string()),  # untouched | cleaned | disabled
        # pixel containers (deid/containers.py): untouched, or the actions taken, comma-separated
        ("pixel_container", pa.string()),
        ("pixel_regions_found", pa.int64()),
        ("pixel_regions_kept", pa.int64()),  # allow-listed markers
        ("pixel_regions_redacted", pa.int64()),
        ("pixel_rule", pa.string()),  # the known-region rule that fired, or "strict"
        *[(column, pa.int64()) for column in PIXEL_CLASS_COLUMNS.values()],
        ("pixel_seconds", pa.float64()),
        ("seconds", pa.float64()),
        ("worker", pa.string()),  # host:pid of the process that handled the file
        ("duplicate_of", pa.int64()),  # a copy of a repeated SOPInstanceUID: the key index written
    ]
)


def _first_code_meaning(ds: pydicom.Dataset, keyword: str) -> str | None:
    sequence = ds.get(keyword)
    if not sequence:
        return None
    meaning = sequence[0].get("CodeMeaning")
    return str(meaning) if meaning else None


def _int_or_none(text: object) -> int | None:
    value = str(text or "").strip()
    return int(value) if value.isdigit() else None


def _float_or_none(text: object) -> float | None:
    try:
        return float(str(text).strip()) if text else None
    except ValueError:
        return None


def metadata_row(ds: pydicom.Dataset, dicom_id: str, subject_id: int, study_id: int) -> dict[str, Any]:
    """The MIMIC-CXR metadata columns, read from the already de-identified header."""
    return {
        "dicom_id": dicom_id,
        "subject_id": subject_id,
        "study_id": study_id,
        "PerformedProcedureStepDescription": _str_or_none(get_value(ds, "PerformedProcedureStepDescription")),
        "ViewPosition": _str_or_none(get_value(ds, "ViewPosition")),
        "Rows": _int_or_none(get_value(ds, "Rows")),
        "Columns": _int_or_none(get_value(ds, "Columns")),
        "StudyDate": _int_or_none(get_value(ds, "StudyDate")),
        "StudyTime": _float_or_none(get_value(ds, "StudyTime")),
        "ProcedureCodeSequence_CodeMeaning": _first_code_meaning(ds, "ProcedureCodeSequence"),
        "ViewCodeSequence_CodeMeaning": _first_code_meaning(ds, "ViewCodeSequence"),
        "PatientOrientationCodeSequence_CodeMeaning": _first_code_meaning(ds, "PatientOrientationCodeSequence"),
    }


def _str_or_none(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def record_list(metadata: pa.Table) -> pa.Table:
    """One row per written image, with its path below OUTPUT."""
    subject, study, dicom = (metadata.column(name) for name in ("subject_id", "study_id", "dicom_id"))
    path = pc.binary_join_element_wise(study_folders(subject, study), "/", dicom, ".dcm", "")
    return pa.Table.from_arrays([subject, study, dicom, path], schema=RECORD_LIST_SCHEMA)


def study_list(metadata: pa.Table) -> pa.Table:
    """One row per study that has at least one written image."""
    pairs = metadata.select(["subject_id", "study_id"]).sort_by(
        [("subject_id", "ascending"), ("study_id", "ascending")]
    )
    return study_list_of_sorted(pairs.column("subject_id"), pairs.column("study_id"))


def study_list_of_sorted(
    subject_ids: pa.ChunkedArray, study_ids: pa.ChunkedArray, before: tuple[int, int] | None = None
) -> pa.Table:
    """The ``study_list`` rows of (subject, study) columns sorted by both: each pair unlike
    the one before it (``before``: the pair before the first, when the columns are a
    slice). No ``group_by``: that loads pyarrow's Acero library on the client."""
    subject, study = np.asarray(subject_ids), np.asarray(study_ids)
    new = np.ones(len(subject), dtype=bool)
    new[1:] = (subject[1:] != subject[:-1]) | (study[1:] != study[:-1])
    if before is not None and len(subject):
        new[0] = (int(subject[0]), int(study[0])) != before
    keep = pa.array(new)
    subject_ids, study_ids = pc.filter(subject_ids, keep), pc.filter(study_ids, keep)
    folders = study_folders(subject_ids, study_ids)
    return pa.Table.from_arrays([subject_ids, study_ids, folders], schema=STUDY_LIST_SCHEMA)


def pixel_class_counts(report: PixelReport) -> dict[str, int]:
    """An image's region counts by class, as audit columns (none when pixels were off)."""
    if report.action == "disabled":
        return {}
    return {column: report.count(kind) for kind, column in PIXEL_CLASS_COLUMNS.items()}


def audit_row(key_index: int, status: str, **values: Any) -> dict[str, Any]:
    """An audit row with every column present (missing counts are null)."""
    row: dict[str, Any] = {name: None for name in AUDIT_SCHEMA.names}
    row.update(key_index=key_index, status=status, **values)
    return row
