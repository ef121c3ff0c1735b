"""The commit: the journal's parts become the run's audit and the dataset's tables, a
bounded number of rows at a time.

The audit parts are read a window of key indexes at a time (``RunJournal.audit_windows``:
parts are named by the keys they cover, so the windows are planned before any part is
read). Each window's rows are completed with the keys pass 1 turned away, the poison
inputs and the unrecorded keys, sorted, and written to the audit as one row group; the
client keeps counts and the few rows the review page reads, never the whole audit.

The metadata rows are sorted by subject, study and image across the whole dataset (this
run's parts and the rows an earlier run left in the tables) by an external merge sort
(``sortmerge``): sorted runs of ``sortmerge.RUN_ROWS`` rows spilled to a temporary folder,
merged a few thousand rows at a time. Each row carries its place in the input as the
last sort key, so an image written twice (a task re-run) keeps its first row and this
run's row replaces an earlier run's: the copies of one dicom_id sort next to each other
(a dicom_id has one subject and study, from the crosswalk). The tables and the audit are
written to the temporary folder and copied to their place in one atomic write each: the
client holds a bounded number of rows, never a column of the archive.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cxr_dask import inventory, metadata, sortmerge, storage
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
    #: The most metadata rows held at once (``sortmerge.ExternalSort.most_rows_held``):
    #: bounded by the sort's run and merge sizes, whatever the archive's size.
    most_metadata_rows_held: int = 0


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
    # the audit and the spilled rows are staged in the run's folder when PRIVATE is a disk
    # (owner-only there, and PHI never leaves it); else in the system's (owner-only too)
    spill = journal.private.path(journal.folder) if journal.private.is_local else None
    with tempfile.TemporaryDirectory(prefix="cxr-commit-", dir=spill) as folder:  # removed on exit
        audit = os.path.join(folder, AUDIT_FILE)
        _audit_file(journal, table, poison, unrecorded, done, audit)
        storage.copy_atomic(journal.private, f"{journal.folder}/{AUDIT_FILE}", audit)
        os.remove(audit)
        sorter = sortmerge.ExternalSort(_RANKED_SCHEMA, [*METADATA_ORDER, (_RANK, "ascending")], folder)
        _write_tables(output, _merged_rows(output, journal, sorter, done), folder)
        done.most_metadata_rows_held = sorter.most_rows_held
    return done


#: The sort's last key: a row's place in the input (this run's parts in order, then the
#: rows already in the tables), so the first row of a dicom_id is the one kept.
_RANK = "_rank"
_RANKED_SCHEMA = metadata.METADATA_SCHEMA.append(pa.field(_RANK, pa.int64()))
#: The rank of the tables' earlier rows starts here: after every row of this run.
_EARLIER = 1 << 62


def _ranked(table: pa.Table, first: int) -> pa.Table:
    return table.append_column(_RANK, pa.array(np.arange(first, first + table.num_rows, dtype=np.int64)))


def _merged_rows(
    output: Location, journal: RunJournal, sorter: sortmerge.ExternalSort, done: Committed
) -> Iterator[pa.Table]:
    """The dataset's rows in ``METADATA_ORDER``, a bounded number at a time: this run's
    (the first row of each dicom_id) and the earlier ones this run did not write again.
    This run's rows, patients and studies are counted into ``done``."""
    rank = 0
    for part in journal.metadata_parts():
        sorter.add(_ranked(part, rank))
        rank += part.num_rows
    for earlier in _earlier_rows(output):
        sorter.add(_ranked(earlier, _EARLIER + rank))
        rank += earlier.num_rows
    last: tuple[str | None, int | None, int | None] = (None, None, None)  # dicom_id, and this run's subject, study
    for batch in sorter.sorted_batches():
        ids = batch.column("dicom_id").combine_chunks()
        before = pa.concat_arrays([pa.array([last[0]], pa.string()), ids.slice(0, len(ids) - 1)])
        rows = batch.filter(pc.fill_null(pc.not_equal(ids, before), True))
        fresh = pc.less(rows.column(_RANK), _EARLIER).to_numpy(zero_copy_only=False)
        subjects = rows.column("subject_id").to_numpy(zero_copy_only=False)[fresh]
        studies = rows.column("study_id").to_numpy(zero_copy_only=False)[fresh]
        if len(subjects):
            before_s = np.concatenate([[last[1] if last[1] is not None else -1], subjects[:-1]])
            before_t = np.concatenate([[last[2] if last[2] is not None else -1], studies[:-1]])
            done.written += len(subjects)
            done.patients += int(np.count_nonzero(subjects != before_s))
            done.studies += int(np.count_nonzero((subjects != before_s) | (studies != before_t)))
            last = (ids[-1].as_py(), int(subjects[-1]), int(studies[-1]))
        elif len(ids):
            last = (ids[-1].as_py(), last[1], last[2])
        yield rows.drop_columns([_RANK])


def _earlier_rows(output: Location) -> Iterator[pa.Table]:
    """The rows already in the dataset's metadata table, a batch at a time (none before
    the first run)."""
    if not storage.exists(output, METADATA_FILE):
        return
    with output.fs.open(output.path(METADATA_FILE), "rb") as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=BATCH_ROWS):
            yield pa.Table.from_batches([batch]).cast(metadata.METADATA_SCHEMA)


def _audit_file(
    journal: RunJournal, table: pa.Table, poison: list[int], unrecorded: list[int], done: Committed, path: str
) -> None:
    """The audit's Parquet file at ``path``, written a window at a time; counts go to ``done``."""
    written = _written_copies(journal, table)
    keys = table.column("key_index").to_numpy()
    poison_keys, unrecorded_keys = np.sort(np.array(poison, np.int64)), np.sort(np.array(unrecorded, np.int64))
    entry_keys = pa.array([entry["key_index"] for entry in done.review_entries], pa.int64())
    with pq.ParquetWriter(path, metadata.AUDIT_SCHEMA, compression="zstd") as writer:
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


def _write_tables(output: Location, rows: Iterable[pa.Table], folder: str) -> None:
    """``metadata``, ``record_list`` and ``study_list`` from ``rows`` (in ``METADATA_ORDER``),
    written ``BATCH_ROWS`` rows at a time to ``folder``, then each copied to its place in one
    atomic write: a study's rows are consecutive, so each distinct (subject, study) is found
    from the row before it."""
    schemas = {
        METADATA_FILE: metadata.METADATA_SCHEMA,
        RECORD_LIST_FILE: metadata.RECORD_LIST_SCHEMA,
        STUDY_LIST_FILE: metadata.STUDY_LIST_SCHEMA,
    }
    paths = {name: os.path.join(folder, name) for name in schemas}
    writers = {name: pq.ParquetWriter(paths[name], schemas[name], compression="zstd") for name in schemas}
    last: tuple[int, int] | None = None
    try:
        for batch in _rebatched(rows, BATCH_ROWS):
            writers[METADATA_FILE].write_table(batch)
            writers[RECORD_LIST_FILE].write_table(metadata.record_list(batch))
            studies = metadata.study_list_of_sorted(batch.column("subject_id"), batch.column("study_id"), last)
            writers[STUDY_LIST_FILE].write_table(studies)
            last = (batch.column("subject_id")[-1].as_py(), batch.column("study_id")[-1].as_py())
    finally:
        for writer in writers.values():
            writer.close()
    for name, path in paths.items():
        storage.copy_atomic(output, name, path)


def _rebatched(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """``tables``' rows in tables of exactly ``rows`` rows (the last fewer): the tables'
    row groups, and so their bytes, do not depend on how the merge cut its batches."""
    held: list[pa.Table] = []
    count = 0
    for table in tables:
        held.append(table)
        count += table.num_rows
        while count >= rows:
            whole = pa.concat_tables(held)
            yield whole.slice(0, rows).combine_chunks()
            rest = whole.slice(rows)
            held, count = [rest], rest.num_rows
    if count:
        yield pa.concat_tables(held).combine_chunks()
