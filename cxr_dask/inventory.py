"""Pass 1: read each file's header only and emit one small inventory record.

The records are everything the client needs to mint identifiers (patients, studies,
images, each patient's earliest date); pixel data is never read here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from cxr_dask.deid.freetext import WordCounts, patient_hash
from cxr_dask.deid.header import descriptor_words, fast_read, get_value
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.deid.wordscan import scan_header
from cxr_dask.dicom.dates import parse_da
from cxr_dask.identity import patient_key
from cxr_dask.metadata import STORAGE_ERROR
from cxr_dask.privacy import quiet_pydicom
from cxr_dask.reasons import Reason
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
    "InstanceCreationDate",
    "InstanceCreationTime",
    "Rows",
    "Columns",
    "BitsAllocated",
    "SamplesPerPixel",
    "NumberOfFrames",
]

_SCAN_TAG_NUMBERS = frozenset(int(Tag(keyword)) for keyword in _SCAN_TAGS)

#: Dates tried, in order, for a file's anchor date when StudyDate is absent or malformed.
_ANCHOR_DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")

#: Reasons that already explain why a header is not followed by pixel data.
_NO_PIXELS_EXPECTED = frozenset({Reason.DICOMDIR, Reason.UNSUPPORTED_SOP_CLASS, Reason.NO_SOP_CLASS_UID})

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
        # duplicates (``rank_copies``): whether the pixel data the header announces fits in
        # the file, the instance creation date and time, and for every copy of a repeated
        # SOPInstanceUID the key index of the first-ranked copy and this copy's rank
        ("complete", pa.bool_()),
        ("created", pa.string()),
        ("copy_of", pa.int64()),
        ("copy_rank", pa.int32()),
    ]
)


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = get_value(ds, keyword, "")
    return str(value).strip() if value is not None else ""


def classify_header(ds: pydicom.Dataset) -> Reason | None:
    """The quarantine reason class for a header pass 2 could not process, else None."""
    file_meta = getattr(ds, "file_meta", None) or pydicom.Dataset()
    sop_class = _text(ds, "SOPClassUID") or _text(file_meta, "MediaStorageSOPClassUID")
    if sop_class == MediaStorageDirectoryStorage:
        return Reason.DICOMDIR
    if not sop_class:
        return Reason.NO_SOP_CLASS_UID
    if "Image Storage" not in UID(sop_class).name:
        return Reason.UNSUPPORTED_SOP_CLASS
    if not _text(ds, "SOPInstanceUID"):
        return Reason.NO_SOP_INSTANCE_UID
    if not _text(ds, "StudyInstanceUID"):
        return Reason.NO_STUDY_INSTANCE_UID
    if not _text(ds, "PatientID"):
        return Reason.NO_PATIENT_ID
    return None


def read_dicom(handle: IO[bytes], **kwargs: Any) -> pydicom.Dataset:
    """A Part 10 file, or a data set without the Part 10 header (no preamble, no meta: an
    ACR-NEMA style export) that carries its SOP class and instance UIDs.

    A headerless data set is read with ``force=True`` and given the transfer syntax its
    body was found in, so it is de-identified and written as a proper Part 10 file; one
    without both UIDs raises InvalidDicomError (``not_dicom``): ``force`` parses any
    bytes, and nothing but the UIDs shows that they were a DICOM data set.
    """
    if not kwargs:
        ds = fast_read(handle)  # a small explicit VR little-endian file, as dcmread reads it
        if ds is not None:
            return ds
    try:
        return pydicom.dcmread(handle, **kwargs)
    except InvalidDicomError:
        handle.seek(0)
    try:
        ds = pydicom.dcmread(handle, force=True, **kwargs)
        sop_class, sop_instance = _text(ds, "SOPClassUID"), _text(ds, "SOPInstanceUID")
        implicit, little = ds.original_encoding
    except Exception:
        raise InvalidDicomError("not a DICOM data set") from None
    if not (_is_uid(sop_class) and _is_uid(sop_instance)) or implicit is None:
        raise InvalidDicomError("not a DICOM data set")
    if not str(ds.file_meta.get("TransferSyntaxUID", "")).strip():
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


def _is_uid(text: str) -> bool:
    return 0 < len(text) <= 64 and all(part.isdigit() for part in text.split("."))


@quiet_pydicom()
def scan_file(
    location: Location,
    key: str,
    key_index: int,
    size: int,
    words: WordCounts | None = None,
    options: ProfileOptions | None = None,
) -> dict[str, Any]:
    """One inventory record; a file that cannot be used carries an ``error`` reason class.

    With ``words``, the header's bytes (up to the pixel data) are walked too, and its
    free-text tokens counted under the file's patient, its names, ids and addresses
    denied (``_count_words``); the record is the same either way.
    """
    record: dict[str, Any] = {name: None for name in INVENTORY_SCHEMA.names}
    record.update(key_index=key_index, key=key, size=size)
    if size == 0:
        record["error"] = Reason.EMPTY_FILE
        return record
    try:
        with open_for_header(location, key, size) as handle:
            # with words, one walk of the header's bytes gives the record's elements and
            # the words (``wordscan``); anything it does not read as pydicom would, pydicom reads
            scanned = None
            if words is not None:
                scanned = scan_header(handle, size, _SCAN_TAG_NUMBERS, options or ProfileOptions())
            if scanned is None:
                handle.seek(0)
                ds = read_dicom(handle, stop_before_pixels=True, specific_tags=_SCAN_TAGS)
                header_end = handle.tell()
            else:
                ds, header_end = scanned.dataset, scanned.header_end
                handle.seek(header_end)
            # stop_before_pixels halts at the pixel data tag; reaching the end of the file
            # instead means the object was cut short (or has no pixels to de-identify).
            # (A deflated dataset is inflated whole, so there the position says nothing.)
            deflated = ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
            reached_end = header_end >= size and not deflated
            complete = None if deflated or reached_end else pixel_data_fits(handle, size, ds)
            found: tuple[set[str], set[str]] | None = None
            if scanned is not None:
                found = scanned.words, scanned.denied
            elif words is not None:  # the walk left this header to pydicom: read it whole
                found = _pydicom_words(handle, options or ProfileOptions())
        reason = classify_header(ds)
        if reached_end and reason not in _NO_PIXELS_EXPECTED:
            reason = Reason.TRUNCATED_OR_NO_PIXEL_DATA
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
            complete=complete is not False and not reached_end,
            created=_created(ds),
        )
        if words is not None:
            _count_words(found, record, words)
    except InvalidDicomError:
        record["error"] = Reason.NOT_DICOM
    except Exception as error:
        # Values are decoded lazily: a damaged one fails here, and its message could quote
        # it, so only the reason class is kept (fail closed, never a crash of the task).
        # A read the store failed (after its retries) says nothing about the content: the
        # key is rescanned by the next run of the same command.
        record["error"] = STORAGE_ERROR if is_storage_error(error) else Reason.UNREADABLE_HEADER
    return record


def _pydicom_words(handle: IO[bytes], options: ProfileOptions) -> tuple[set[str], set[str]] | None:
    """``descriptor_words`` of the header pydicom reads whole from ``handle`` (the block
    the record's read fetched, so no second request); None when a value cannot be read
    or decoded."""
    try:
        handle.seek(0)
        return descriptor_words(read_dicom(handle, stop_before_pixels=True), options)
    except Exception as error:
        if is_storage_error(error):
            raise  # the store failed, not the content: the key is scanned again next run
        return None


def _count_words(found: tuple[set[str], set[str]] | None, record: dict[str, Any], words: WordCounts) -> None:
    """Add one header's descriptor tokens (files pass 2 will write) and identifying keys.

    They come from the walk of the header's bytes (``wordscan``), or, for a header that
    walk leaves to pydicom, from pydicom's whole Dataset (``descriptor_words``): the same
    words either way. A value that cannot be decoded (``found`` None) leaves the file's
    tokens uncounted: they are then not frequent, which can only remove more text, never
    keep more.
    """
    if found is None:
        return
    words.denied |= found[1]
    if record["error"] is None:
        patient = patient_hash(patient_key(record["patient_id"], record["issuer_of_patient_id"]))
        words.add(found[0], patient)


_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM_TAG = (0xFFFE, 0xE000)


def pixel_data_fits(handle: IO[bytes], size: int, ds: pydicom.Dataset) -> bool | None:
    """Whether the pixel data the header announces fits in the file's ``size`` bytes.

    ``handle`` stands at the pixel data element (where ``stop_before_pixels`` halted), so
    this reads a few bytes more of the block the header read already fetched: native
    pixel data must hold Rows x Columns x samples x frames at BitsAllocated within the
    file; encapsulated pixel data must hold its offset table and its first fragment (a
    transfer cut short loses the end of the codestream). None when it cannot tell (not a
    pixel data element). A damaged codestream of the right length passes: pass 2 finds
    it, and the next copy is tried (``pipeline``).
    """
    implicit, little = ds.original_encoding
    endian = "<" if little in (True, None) else ">"
    start = handle.tell()
    head = handle.read(12)
    if len(head) < 8:
        return False
    if struct.unpack(endian + "HH", head[:4]) != (0x7FE0, 0x0010):
        return None
    if implicit:
        (length,), value_at = struct.unpack(endian + "I", head[4:8]), start + 8
    else:
        if len(head) < 12:
            return False
        (length,), value_at = struct.unpack(endian + "I", head[8:12]), start + 12
    if length != _UNDEFINED_LENGTH:
        try:
            bits = int(ds.BitsAllocated) * int(ds.Rows) * int(ds.Columns)
            bits *= int(ds.get("SamplesPerPixel") or 1) * int(ds.get("NumberOfFrames") or 1)
        except (AttributeError, TypeError, ValueError):
            bits = 0
        return length * 8 >= bits and value_at + length <= size
    position = value_at
    for _ in range(2):  # the basic offset table item, then the first fragment
        handle.seek(position)
        item = handle.read(8)
        if len(item) < 8 or struct.unpack("<HH", item[:4]) != _ITEM_TAG:
            return False
        position += 8 + struct.unpack("<I", item[4:8])[0]
        if position > size:
            return False
    return True


def _created(ds: pydicom.Dataset) -> str | None:
    """InstanceCreationDate and Time as one sortable text (``YYYYMMDDHHMMSS.ffffff``)."""
    date = parse_da(ds.get("InstanceCreationDate"))
    if date is None:
        return None
    digits = "".join(ch for ch in _text(ds, "InstanceCreationTime") if ch.isdigit() or ch == ".")
    whole, _, fraction = digits.partition(".")
    whole = (whole + "000000")[:6] if whole.isdigit() else "000000"
    fraction = (fraction + "000000")[:6] if fraction.isdigit() else "000000"
    return f"{date:%Y%m%d}{whole}.{fraction}"


def _anchor_date(ds: pydicom.Dataset) -> dt.date | None:
    for keyword in _ANCHOR_DATES:
        parsed = parse_da(ds.get(keyword))
        if parsed is not None:
            return parsed
    return None


@quiet_pydicom()
def scan_partition(items: Iterable[tuple[int, str, int]], location: Location) -> list[dict[str, Any]]:
    """Scan a partition of ``(key_index, key, size)`` items (the pass-1 task)."""
    return [scan_file(location, key, key_index, size) for key_index, key, size in items]


@dataclass
class ScanPart:
    """What a pass-1 task returns when free text is counted: its records and its words."""

    records: list[dict[str, Any]]
    words: WordCounts


@quiet_pydicom()
def scan_partition_with_words(
    items: Iterable[tuple[int, str, int]], location: Location, options: ProfileOptions, min_patients: int
) -> list[ScanPart]:
    """The pass-1 task with word counting: one ``ScanPart`` for the whole partition, its
    (token, patient) pairs deduplicated and capped at ``min_patients`` patients a token."""
    words = WordCounts(cap=min_patients)
    records = [scan_file(location, key, key_index, size, words, options) for key_index, key, size in items]
    return [ScanPart(records, words)]


def to_table(records: Iterable[dict[str, Any]]) -> pa.Table:
    """Inventory records as an Arrow table sorted by key index."""
    rows = sorted(records, key=lambda r: r["key_index"])
    return pa.Table.from_pylist(rows, schema=INVENTORY_SCHEMA)


DUPLICATE = Reason.DUPLICATE_SOP_INSTANCE_UID
DIFFERING_DUPLICATE = Reason.DUPLICATE_DIFFERING_COPY


def _set_columns(table: pa.Table, **columns: list[Any] | pa.Array | pa.ChunkedArray) -> pa.Table:
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        field = table.schema.field(index)
        column = (
            values.cast(field.type) if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, field.type)
        )
        table = table.set_column(index, field, column)
    return table


def rank_copies(table: pa.Table) -> pa.Table:
    """Rank the copies of every SOPInstanceUID that more than one usable file carries.

    Two files with one SOPInstanceUID would get one dicom_id and one output path, so one
    copy is written and the others are audited as its duplicates. The rule, in order:
    a copy whose pixel data fits in the file (``complete``) before one cut short; then
    the latest InstanceCreationDate/Time (a re-sent or corrected instance; none counts as
    oldest); then key order. Rank 0 goes to pass 2; the others are quarantined as
    ``duplicate_sop_instance_uid`` here and tried in rank order only when every copy
    before them was quarantined in pass 2 (``next_copies``). The rule reads only what
    pass 1 saved, so a resumed run or a rerun over the same files makes the same choice.
    """
    n = table.num_rows
    sop_column = table.column("sop_instance_uid")
    usable = pc.and_(pc.is_null(table.column("error")), pc.is_valid(sop_column))
    counts = pc.value_counts(sop_column.filter(usable))
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    # Only the rows of repeated SOPInstanceUIDs become Python objects: the client holds
    # nothing per file for an archive without copies.
    rows = pc.indices_nonzero(pc.and_(usable, pc.is_in(sop_column, value_set=repeated))).to_pylist()
    names = ("key_index", "sop_instance_uid", "complete", "created")
    at = pa.array(rows, pa.int64())
    key_index, sops, complete, created = (table.column(name).take(at).to_pylist() for name in names)
    groups: dict[str, list[int]] = {}
    for at, sop in enumerate(sops):
        groups.setdefault(sop, []).append(at)
    copy_rows: list[int] = []
    copy_of: list[int] = []
    copy_rank: list[int] = []
    for members in groups.values():
        members.sort(key=lambda r: (complete[r] is False, _descending(created[r] or ""), key_index[r]))
        for rank, at in enumerate(members):
            copy_rows.append(rows[at])
            copy_of.append(key_index[members[0]])
            copy_rank.append(rank)
    at_row = _scatter(n, copy_rows)
    of = pc.take(pa.array(copy_of, pa.int64()), at_row)
    ranks = pc.take(pa.array(copy_rank, pa.int32()), at_row)
    errors = pc.if_else(pc.fill_null(pc.greater(ranks, 0), False), DUPLICATE, table.column("error"))
    return _set_columns(table, error=errors, copy_of=of, copy_rank=ranks)


def _scatter(n: int, rows: list[int]) -> pa.Array:
    """For each of ``n`` rows, its position in ``rows`` (null where absent): ``pc.take``
    of per-copy values with it gives a whole column without a Python object per row."""
    values = np.zeros(n, dtype=np.int64)
    values[rows] = np.arange(len(rows), dtype=np.int64)
    absent = np.ones(n, dtype=bool)
    absent[rows] = False
    return pa.array(values, pa.int64(), mask=absent)


def _descending(text: str) -> tuple[int, ...]:
    return (*(-ord(ch) for ch in text), 0)  # latest first; none after any date


def copies_to_hash(table: pa.Table) -> list[tuple[int, str]]:
    """``(key_index, key)`` of the copies whose size equals their first-ranked copy's, and
    of those first-ranked copies: only these can be byte-identical, so only these are
    read whole and hashed (``content_hash``); copies of another size differ."""
    copies = _copies(table)
    size_of = {row["key_index"]: row["size"] for row in copies}
    key_of = {row["key_index"]: row["key"] for row in copies}
    wanted: dict[int, str] = {}
    for row in copies:
        if row["copy_rank"] and row["size"] == size_of[row["copy_of"]]:
            wanted[row["key_index"]] = row["key"]
            wanted[row["copy_of"]] = key_of[row["copy_of"]]
    return sorted(wanted.items())


def has_copies(table: pa.Table) -> bool:
    """Whether any SOPInstanceUID has more than one usable copy (an inventory saved before
    copies were ranked has none)."""
    return "copy_of" in table.column_names and bool(pc.any(pc.is_valid(table.column("copy_of"))).as_py())


def _copies(table: pa.Table) -> list[dict[str, Any]]:
    if not has_copies(table):
        return []
    return table.filter(pc.is_valid(table.column("copy_of"))).to_pylist()


def content_hash(location: Location, key: str) -> str:
    """BLAKE2b of a whole file, read in 1 MiB blocks (duplicates of equal size only)."""
    digest = hashlib.blake2b(digest_size=20)
    with location.fs.open(location.path(key), "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def label_copies(table: pa.Table, hashes: dict[int, str]) -> pa.Table:
    """Tell byte-identical copies (``duplicate_sop_instance_uid``) from copies that differ
    from their first-ranked copy (``duplicate_differing_copy``): identical means the same
    size and the same ``content_hash``."""
    copies = _copies(table)
    size_of = {row["key_index"]: row["size"] for row in copies}
    label: dict[int, str] = {}
    for row in copies:
        index, of = row["key_index"], row["copy_of"]
        if not row["copy_rank"]:
            continue
        same = size_of[index] == size_of[of] and hashes.get(index) is not None and hashes.get(index) == hashes.get(of)
        label[index] = DUPLICATE if same else DIFFERING_DUPLICATE
    if not label:
        return table
    at = pc.index_in(table.column("key_index"), value_set=pa.array(list(label), pa.int64()))
    errors = pc.coalesce(pc.take(pa.array(list(label.values()), pa.string()), at), table.column("error"))
    return _set_columns(table, error=errors)


def mark_duplicates(table: pa.Table, hashes: dict[int, str] | None = None) -> pa.Table:
    """Rank the copies of repeated SOPInstanceUIDs and label the others (``rank_copies``,
    ``label_copies``); without ``hashes`` every other copy is labelled by size alone."""
    return label_copies(rank_copies(table), hashes or {})


def next_copies(table: pa.Table, statuses: dict[int, str]) -> list[tuple[int, str]]:
    """``(key_index, key)`` of the next copy to try for every repeated SOPInstanceUID none of
    whose tried copies was written: ``statuses`` holds each tried key's audit status."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in _copies(table):
        groups.setdefault(row["copy_of"], []).append(row)
    tries = []
    for rows in groups.values():
        rows.sort(key=lambda r: r["copy_rank"])
        if any(statuses.get(r["key_index"]) == "written" for r in rows):
            continue
        untried = [r for r in rows if r["key_index"] not in statuses]
        if untried:
            tries.append((untried[0]["key_index"], untried[0]["key"]))
    return sorted(tries)


def written_copies(table: pa.Table, statuses: dict[int, str]) -> dict[int, int]:
    """For every copy of a repeated SOPInstanceUID, the key index of the copy written (if
    one was): the ``duplicate_of`` of its audit row."""
    groups: dict[int, list[int]] = {}
    for row in _copies(table):
        groups.setdefault(row["copy_of"], []).append(row["key_index"])
    out: dict[int, int] = {}
    for members in groups.values():
        written = [index for index in members if statuses.get(index) == "written"]
        if written:
            out.update({index: written[0] for index in members if index != written[0]})
    return out


# --- the inventory as a Parquet file in memory: read a batch of rows at a time ----------

#: Inventory rows read at once from its Parquet file.
BATCH_ROWS = 16_384


def batches(data: bytes | memoryview, columns: Iterable[str] | None = None) -> Callable[[], Iterator[pa.RecordBatch]]:
    """A callable that reads ``columns`` of the inventory's Parquet ``data`` anew, a batch of
    ``BATCH_ROWS`` rows at a time, in key order (what ``identity.extend`` reads)."""
    names = None if columns is None else list(columns)

    def read() -> Iterator[pa.RecordBatch]:
        return _parquet(data).iter_batches(batch_size=BATCH_ROWS, columns=names)

    return read


def read_columns(data: bytes | memoryview, columns: Iterable[str]) -> pa.Table:
    """The inventory's ``columns`` that its file holds (one saved before copies were ranked
    has no copies' columns), whole."""
    parquet = _parquet(data)
    names = parquet.schema_arrow.names
    return parquet.read(columns=[name for name in columns if name in names])


def schema_of(data: bytes | memoryview) -> pa.Schema:
    """The columns the inventory's file holds, with their types (its footer only)."""
    return _parquet(data).schema_arrow


def _parquet(data: bytes | memoryview) -> pq.ParquetFile:
    return pq.ParquetFile(pa.BufferReader(data))


def copy_rows(data: bytes | memoryview) -> pa.Table:
    """Every row of a usable file whose SOPInstanceUID another usable file carries too:
    all ``rank_copies`` needs (it ranks each SOPInstanceUID's copies among themselves).

    Read a batch of rows at a time, twice: first each usable row's SOPInstanceUID as a
    64-bit hash (8 bytes a file), then the rows whose hash repeats, of which those whose
    SOPInstanceUID repeats are kept (two SOPInstanceUIDs sharing a hash are told apart).
    """
    columns = ("key_index", "sop_instance_uid", "error")
    hashes = [_sop_hashes(batch) for batch in batches(data, columns)()]
    values, counts = np.unique(np.concatenate(hashes) if hashes else np.empty(0, np.uint64), return_counts=True)
    repeated = values[counts > 1]
    del hashes, values, counts
    if not len(repeated):
        return INVENTORY_SCHEMA.empty_table()
    found = []
    for batch in batches(data)():
        usable = _usable(pa.Table.from_batches([batch], schema=INVENTORY_SCHEMA))
        found.append(usable.filter(pa.array(np.isin(_sop_hashes(usable), repeated))))
    candidates = pa.concat_tables(found)
    counts_of = pc.value_counts(candidates.column("sop_instance_uid"))
    twice = counts_of.field("values").filter(pc.greater(counts_of.field("counts"), 1))
    return candidates.filter(pc.is_in(candidates.column("sop_instance_uid"), value_set=twice))


def _usable(rows: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """The rows pass 2 would write: no error, and a SOPInstanceUID."""
    return rows.filter(pc.and_(pc.is_null(rows.column("error")), pc.is_valid(rows.column("sop_instance_uid"))))


def _sop_hashes(rows: pa.Table | pa.RecordBatch) -> np.ndarray:
    """A 64-bit hash of each usable row's SOPInstanceUID."""
    sops = _usable(rows).column("sop_instance_uid").to_pylist()
    return np.fromiter((_hash64(sop) for sop in sops), np.uint64, count=len(sops))


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big")


def with_copies(data: bytes | memoryview, ranked: pa.Table) -> memoryview:
    """The inventory's Parquet ``data`` with the copies' ``error``, ``copy_of`` and ``copy_rank``
    of ``ranked`` (``copy_rows``, ranked and labelled), rewritten a batch of rows at a time."""
    patch = ranked.select(["key_index", "error", "copy_of", "copy_rank"])
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, INVENTORY_SCHEMA, compression="zstd") as writer:
        for batch in batches(data)():
            table = pa.Table.from_batches([batch], schema=INVENTORY_SCHEMA)
            at = pc.index_in(table.column("key_index"), value_set=patch.column("key_index"))
            writer.write_table(
                _set_columns(
                    table,
                    error=pc.if_else(pc.is_valid(at), pc.take(patch.column("error"), at), table.column("error")),
                    copy_of=pc.coalesce(pc.take(patch.column("copy_of"), at), table.column("copy_of")),
                    copy_rank=pc.coalesce(pc.take(patch.column("copy_rank"), at), table.column("copy_rank")),
                )
            )
    return memoryview(sink.getvalue())
