"""The commit: the journal's parts become the run's audit and the dataset's tables, a
bounded number of rows at a time.

The audit parts are read a window of key indexes at a time (``RunJournal.audit_windows``:
parts are named by the keys they cover, so the windows are planned before any part is
read). Each window's rows are completed with the keys pass 1 turned away, the poison
inputs and the unrecorded keys, sorted, and written to the audit as one row group; the
client keeps counts and the few rows the review page reads, never the whole audit.

The metadata rows are held once as Arrow columns (the tables are sorted by subject,
study and image across the whole dataset, so a row's place needs all of them) and
written in slices of that order: no sorted copy of the table, no Parquet file of it in
memory but the compressed bytes being written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cxr_dask import inventory, metadata, storage
from cxr_dask.identity import read_parquet
from cxr_dask.journal import RunJournal
from cxr_dask.reasons import Reason
from cxr_dask.storage import Location

METADATA_FILE = "metadata.parquet"
RECORD_LIST_FILE = "record_list.parquet"
STUDY_LIST_FILE = "study_list.parquet"
AUDIT_FILE = "audit.parquet"
#: Rows of the audit (key indexes of a window of parts) or of a table slice held at once.
BATCH_ROWS = 16_384
#: The metadata table's order (MIMIC-CXR's files are listed by patient, study, image).
METADATA_ORDER = [("subject_id", "ascending"), ("study_id", "ascending"), ("dicom_id", "ascending")]


@dataclass
class Committed:
    """What the commit wrote, in counts, and the audit rows the review page reads."""

    written: int = 0
    patients: int = 0
    studies: int = 0
    storage_errors: int = 0
    pixels_cleaned: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    review_entries: list[dict[str, Any]] = field(default_factory=list)
    review_rows: list[dict[str, Any]] = field(default_factory=list)
    #: The most audit rows held at once (a window's): bounded by ``BATCH_ROWS`` and one
    #: window's overlapping parts, whatever the archive's size.
    most_rows_held: int = 0


def commit(
    output: Location, journal: RunJournal, table: pa.Table, poison: list[int], unrecorded: list[int]
) -> Committed:
    """Write the run's audit, then merge its rows into the dataset's tables.

    ``table`` is the inventory (sorted by key index): its ``error``, ``size`` and the
    copies' columns complete the audit. Rows are merged by dicom_id, so a rerun, a
    resumed commit or a later batch leaves each image once; every file is replaced in one
    atomic write.
    """
    done = Committed(review_entries=journal.read_review_entries())
    storage.write_atomic(
        journal.private, f"{journal.folder}/{AUDIT_FILE}", _audit_file(journal, table, poison, unrecorded, done)
    )
    fresh = journal.read_metadata()
    done.written = fresh.num_rows
    done.patients = pc.count_distinct(fresh.column("subject_id")).as_py()
    done.studies = pc.count_distinct(fresh.column("study_id")).as_py()
    _write_tables(output, _merge_by_dicom_id(read_table(output, METADATA_FILE), fresh))
    return done


def _audit_file(
    journal: RunJournal, table: pa.Table, poison: list[int], unrecorded: list[int], done: Committed
) -> memoryview:
    """The audit's Parquet bytes, written a window at a time; counts go to ``done``."""
    written = _written_copies(journal, table)
    keys = table.column("key_index").to_numpy()
    poison_keys, unrecorded_keys = np.sort(np.array(poison, np.int64)), np.sort(np.array(unrecorded, np.int64))
    entry_keys = pa.array([entry["key_index"] for entry in done.review_entries], pa.int64())
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, metadata.AUDIT_SCHEMA, compression="zstd") as writer:
        for start, end, rows in journal.audit_windows(BATCH_ROWS):
            done.most_rows_held = max(done.most_rows_held, rows.num_rows)
            a, b = (np.searchsorted(keys, start), len(keys) if end is None else np.searchsorted(keys, end))
            audit = complete_audit(
                table.slice(a, b - a),
                rows,
                _between(poison_keys, start, end),
                _between(unrecorded_keys, start, end),
                written,
            )
            del rows
            if audit.num_rows:
                writer.write_table(audit)
            _count(audit, entry_keys, done)
    return memoryview(sink.getvalue())


def _between(values: np.ndarray, start: int, end: int | None) -> list[int]:
    a = np.searchsorted(values, start)
    b = len(values) if end is None else np.searchsorted(values, end)
    return values[a:b].tolist()


def _written_copies(journal: RunJournal, table: pa.Table) -> dict[int, int]:
    """For every copy of a repeated SOPInstanceUID, the key index of the copy written (if
    one was): read from the parts' statuses of the copies alone, before any window."""
    if not inventory.has_copies(table):
        return {}
    copies = table.filter(pc.is_valid(table.column("copy_of"))).column("key_index").to_pylist()
    return inventory.written_copies(table, journal.statuses(copies))


def _audit_table(n: int, **columns: Any) -> pa.Table:
    """``n`` audit rows with the given columns (arrays or lists), every other column null."""
    arrays = [
        pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type) for f in metadata.AUDIT_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=metadata.AUDIT_SCHEMA)


def complete_audit(
    table: pa.Table, audit: pa.Table, poison: list[int], unrecorded: list[int], written: dict[int, int]
) -> pa.Table:
    """Every audit row of the keys of ``table`` (the inventory, or a window of it), sorted
    by key index, as Arrow columns.

    The parts' rows (``audit``); then keys pass 1 already turned away (their inventory
    error), poison inputs (``worker_crash``), and keys whose task could not record its
    work (``storage_error``: retried by the next run). Every copy of a written repeated
    image names the written copy's key index (``duplicate_of``; ``written``, from
    ``inventory.written_copies``), whether it was never tried or quarantined when tried.
    """
    tried = pa.concat_arrays([audit.column("key_index").combine_chunks(), pa.array(poison, pa.int64())])
    turned_away = table.filter(pc.is_valid(table.column("error")))
    turned_away = turned_away.filter(pc.invert(pc.is_in(turned_away.column("key_index"), value_set=tried)))
    error = turned_away.column("error").combine_chunks()
    crashed = len(poison)
    audit = pa.concat_tables(
        [
            audit,
            _audit_table(
                turned_away.num_rows,
                key_index=turned_away.column("key_index").combine_chunks(),
                status=pc.if_else(pc.equal(error, metadata.STORAGE_ERROR), metadata.STORAGE_ERROR, "quarantined"),
                reason=error,
                bytes_in=turned_away.column("size").combine_chunks(),
            ),
            _audit_table(
                crashed, key_index=poison, status=["quarantined"] * crashed, reason=[Reason.WORKER_CRASH] * crashed
            ),
        ]
    )
    audit = _point_copies_at(audit, written)
    if unrecorded:
        known = pc.is_in(pa.array(unrecorded, pa.int64()), value_set=audit.column("key_index")).to_pylist()
        missing = sorted({index for index, seen in zip(unrecorded, known, strict=True) if not seen})
        n = len(missing)
        audit = pa.concat_tables(
            [
                audit,
                _audit_table(
                    n,
                    key_index=missing,
                    status=[metadata.STORAGE_ERROR] * n,
                    reason=[metadata.STORAGE_ERROR] * n,
                    detail=["journal"] * n,
                ),
            ]
        )
    return audit.sort_by("key_index")


def _point_copies_at(audit: pa.Table, written: dict[int, int]) -> pa.Table:
    """Set ``duplicate_of`` on every copy of a written repeated image: the written copy's
    key index."""
    if not written:
        return audit
    at = pc.index_in(audit.column("key_index"), value_set=pa.array(list(written), pa.int64()))
    pointer = pc.take(pa.array(list(written.values()), pa.int64()), at)
    column = audit.schema.get_field_index("duplicate_of")
    return audit.set_column(column, "duplicate_of", pc.coalesce(pointer, audit.column("duplicate_of")))


def _count(audit: pa.Table, entry_keys: pa.Array, done: Committed) -> None:
    """Add a window's counts to ``done``, and the rows the review page reads: the entries'
    keys and rows with pixel regions counted (every other row adds nothing to its counts)."""
    status = audit.column("status")
    done.storage_errors += pc.sum(pc.equal(status, metadata.STORAGE_ERROR)).as_py() or 0
    done.pixels_cleaned += pc.sum(pc.equal(audit.column("pixel_action"), "cleaned")).as_py() or 0
    reasons = pc.value_counts(audit.filter(pc.equal(status, "quarantined")).column("reason"))
    done.reasons.update(
        dict(zip(reasons.field("values").to_pylist(), reasons.field("counts").to_pylist(), strict=True))
    )
    counts = list(metadata.PIXEL_CLASS_COLUMNS.values())
    wanted = pc.is_in(audit.column("key_index"), value_set=entry_keys)
    for column in counts:
        wanted = pc.or_(wanted, pc.fill_null(pc.greater(audit.column(column), 0), False))
    done.review_rows += audit.filter(wanted).select(["key_index", "status", "dicom_id", *counts]).to_pylist()


def read_table(location: Location, key: str) -> pa.Table | None:
    """A Parquet table at ``key``, or None when it does not exist yet."""
    if not storage.exists(location, key):
        return None
    return read_parquet(storage.read_bytes(location, key))


def _merge_by_dicom_id(existing: pa.Table | None, fresh: pa.Table) -> pa.Table:
    """The dataset's rows: the earlier ones this run did not write again, then this run's."""
    if existing is None or existing.num_rows == 0:
        return fresh
    keep = pc.invert(pc.is_in(existing.column("dicom_id"), value_set=fresh.column("dicom_id")))
    return pa.concat_tables([existing.filter(keep).cast(metadata.METADATA_SCHEMA), fresh])


def _write_tables(output: Location, merged: pa.Table) -> None:
    """``metadata``, ``record_list`` and ``study_list``, each in ``METADATA_ORDER``, written
    from slices of that order (``BATCH_ROWS`` rows taken at a time): a study's rows are
    consecutive, so each distinct (subject, study) is found from the row before it."""
    order = pc.sort_indices(merged, sort_keys=METADATA_ORDER) if merged.num_rows else pa.array([], pa.uint64())
    sinks = {name: pa.BufferOutputStream() for name in (METADATA_FILE, RECORD_LIST_FILE, STUDY_LIST_FILE)}
    schemas = {
        METADATA_FILE: metadata.METADATA_SCHEMA,
        RECORD_LIST_FILE: metadata.RECORD_LIST_SCHEMA,
        STUDY_LIST_FILE: metadata.STUDY_LIST_SCHEMA,
    }
    writers = {name: pq.ParquetWriter(sink, schemas[name], compression="zstd") for name, sink in sinks.items()}
    last: tuple[int, int] | None = None
    try:
        for start in range(0, len(order), BATCH_ROWS):
            rows = merged.take(order.slice(start, BATCH_ROWS))
            writers[METADATA_FILE].write_table(rows)
            writers[RECORD_LIST_FILE].write_table(metadata.record_list(rows))
            studies = metadata.study_list_of_sorted(rows.column("subject_id"), rows.column("study_id"), last)
            writers[STUDY_LIST_FILE].write_table(studies)
            last = (rows.column("subject_id")[-1].as_py(), rows.column("study_id")[-1].as_py())
    finally:
        for writer in writers.values():
            writer.close()
    del order, merged
    for name, sink in sinks.items():
        storage.write_atomic(output, name, memoryview(sink.getvalue()))
