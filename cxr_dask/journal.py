"""What a run has finished, kept in PRIVATE so an interrupted run resumes where it stopped.

```
PRIVATE/runs/active.json                      the unfinished run: id, input, output
PRIVATE/runs/<run id>/inventory/<first>-<last>-<token>.parquet   records a pass-1 task made
PRIVATE/runs/<run id>/inventory.parquet       pass 1's records, merged (saved before pass 2)
PRIVATE/runs/<run id>/parts/<first>-<last>-<token>.metadata.parquet   rows a pass-2 task made
PRIVATE/runs/<run id>/parts/<first>-<last>-<token>.audit.parquet      its audit rows, written last:
                                                              the task's completion mark
PRIVATE/runs/<run id>/audit.parquet           every input key's row, at commit
PRIVATE/runs/<run id>/review/parts/<first>-<last>.review.json  the task's review entries
                                                              (before its audit part)
```

Pass-1 and pass-2 tasks write their part files on the worker that made the rows (pass 2
after the task's DICOMs are written), so no row per file travels back to the client; the
client merges the parts as Arrow tables, read a batch of parts at a time (the audit parts
a window of key indexes at a time: ``audit_windows``, for ``commit.py``). Rerunning the
same command finds ``active.json``, reuses the saved inventory and crosswalk (so every id
is the same), skips every key an audit part covers and commits from all parts: the
outputs are those of a run that was never interrupted.
Parts are named by the key indexes they cover, so a resumed run may partition the rest
differently.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cxr_dask import metadata, review, storage
from cxr_dask.errors import ConfigError
from cxr_dask.identity import parquet_bytes, read_parquet
from cxr_dask.inventory import INVENTORY_SCHEMA
from cxr_dask.storage import Location

RUNS_DIR = "runs"
ACTIVE_KEY = f"{RUNS_DIR}/active.json"
AUDIT_SUFFIX = ".audit.parquet"
METADATA_SUFFIX = ".metadata.parquet"
REVIEW_SUFFIX = ".review.json"
#: Parts read per request batch at the commit: bounds the raw bytes held at once.
READ_BATCH = 256
#: Inventory rows merged into one row group of the saved inventory.
INVENTORY_ROWS = 16_384


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


@dataclass(frozen=True)
class RunJournal:
    """One run's records in PRIVATE; small and picklable, so pass-2 tasks carry it."""

    private: Location
    run_id: str

    @property
    def folder(self) -> str:
        return f"{RUNS_DIR}/{self.run_id}"

    @property
    def parts_folder(self) -> str:
        return f"{self.folder}/parts"

    @property
    def review_folder(self) -> str:
        return f"{self.folder}/{review.REVIEW_DIR}"

    @property
    def review_parts_folder(self) -> str:
        return f"{self.review_folder}/{review.PARTS_DIR}"

    @property
    def inventory_parts_folder(self) -> str:
        return f"{self.folder}/inventory"

    # -- pass 1 -------------------------------------------------------------------------
    def write_inventory_part(self, key_indexes: list[int], records: list[dict[str, Any]]) -> str:
        """Record one pass-1 task's inventory records (on the worker); returns the part's key.

        The client reads exactly the parts its finished tasks name, so a part left by an
        interrupted pass 1 or by a task re-run after its worker died is never read twice.
        """
        token = uuid.uuid4().hex[:8]
        key = f"{self.inventory_parts_folder}/{min(key_indexes):09d}-{max(key_indexes):09d}-{token}.parquet"
        storage.write_atomic(self.private, key, _table_bytes(records, INVENTORY_SCHEMA))
        return key

    def read_inventory_parts(self, keys: list[str]) -> pa.Table:
        """The records of the named pass-1 parts as one Arrow table sorted by key index."""
        # Each part is sorted on its own and the parts are put in order of their first key
        # index: sorting the merged table would copy every column of it at once.
        tables = [table.cast(INVENTORY_SCHEMA).sort_by("key_index") for _, table in self._read_tables(keys)]
        tables = [table for table in tables if table.num_rows]
        tables.sort(key=lambda table: table.column("key_index")[0].as_py())
        table = pa.concat_tables(tables) if tables else INVENTORY_SCHEMA.empty_table()
        if not _ascending(table.column("key_index")):
            table = table.sort_by("key_index")  # parts that overlap (never written so): still right
        return table

    def merge_inventory_parts(self, keys: list[str]) -> memoryview:
        """The named pass-1 parts as one Parquet file in memory, sorted by key index
        (``read_inventory_parts``' rows), written a few parts at a time: the client holds
        the compressed file and ``INVENTORY_ROWS`` rows, never the inventory's columns whole."""
        spans = sorted((part_span(key), key) for key in keys)
        if any(a[0][1] >= b[0][0] for a, b in itertools.pairwise(spans)):
            # parts that overlap (never written so by one pass 1): merged whole, still right
            return memoryview(parquet_bytes(self.read_inventory_parts(keys)))
        sink = pa.BufferOutputStream()
        held: list[pa.Table] = []
        rows = 0
        with pq.ParquetWriter(sink, INVENTORY_SCHEMA, compression="zstd") as writer:
            for _, table in self._read_tables([key for _, key in spans]):
                held.append(table.cast(INVENTORY_SCHEMA).sort_by("key_index"))
                rows += table.num_rows
                if rows >= INVENTORY_ROWS:
                    writer.write_table(pa.concat_tables(held))
                    held, rows = [], 0
            writer.write_table(pa.concat_tables(held) if held else INVENTORY_SCHEMA.empty_table())
        return memoryview(sink.getvalue())

    def _read_tables(self, keys: list[str], columns: list[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
        """Each part as an Arrow table, fetched ``READ_BATCH`` parts at a time (concurrently
        on object stores): the raw bytes of one batch are held at once, never all."""
        for start in range(0, len(keys), READ_BATCH):
            batch = storage.read_many(self.private, keys[start : start + READ_BATCH])
            for key, blob in batch.items():
                yield key, read_parquet(blob, columns)

    def save_inventory(self, table: pa.Table) -> None:
        """Save the merged inventory: pass 1 is done. Its parts stay, as pass 2's do (removing
        them would cost a HEAD and a DELETE a part on object stores)."""
        storage.write_atomic(self.private, f"{self.folder}/inventory.parquet", parquet_bytes(table))

    def save_inventory_file(self, data: bytes | memoryview) -> None:
        """``save_inventory`` of an inventory already in Parquet form (``merge_inventory_parts``)."""
        storage.write_atomic(self.private, f"{self.folder}/inventory.parquet", data)

    def load_inventory_file(self) -> bytes | None:
        """The saved inventory's Parquet bytes (read a batch of rows or a few columns at a
        time: ``inventory.batches``), or None before pass 1 is done."""
        key = f"{self.folder}/inventory.parquet"
        if not storage.exists(self.private, key):
            return None
        return storage.read_bytes(self.private, key)

    def load_inventory(self) -> pa.Table | None:
        key = f"{self.folder}/inventory.parquet"
        if not storage.exists(self.private, key):
            return None
        return read_parquet(storage.read_bytes(self.private, key))

    # -- pass 2 (runs on workers) -------------------------------------------------------
    def write_part(
        self,
        key_indexes: list[int],
        audit_rows: list[dict[str, Any]],
        rows: list[dict[str, Any]],
        review_entries: list[dict[str, Any]] | None = None,
    ) -> None:
        """Record one finished task: metadata rows and review entries first, then the audit
        rows that mark it done.

        The name carries a token: a later task over the same first and last keys (a resumed
        run retrying a few keys) adds a part beside the old one, never overwrites it.
        """
        token = uuid.uuid4().hex[:8]
        name = f"{min(key_indexes):09d}-{max(key_indexes):09d}-{token}"
        stem = f"{self.parts_folder}/{name}"
        storage.write_atomic(self.private, stem + METADATA_SUFFIX, _table_bytes(rows, metadata.METADATA_SCHEMA))
        if review_entries:
            path = f"{self.review_parts_folder}/{name}{REVIEW_SUFFIX}"
            storage.write_atomic(self.private, path, review.part_bytes(review_entries))
        storage.write_atomic(self.private, stem + AUDIT_SUFFIX, _table_bytes(audit_rows, metadata.AUDIT_SCHEMA))

    # -- resume and commit (client) -----------------------------------------------------
    def _part_keys(self) -> tuple[list[str], list[str]]:
        """The audit parts and the metadata parts, from one listing of the parts folder."""
        keys = storage.list_keys(self.private, self.parts_folder)
        return [k for k in keys if k.endswith(AUDIT_SUFFIX)], [k for k in keys if k.endswith(METADATA_SUFFIX)]

    def _audit_table(self, audit_keys: list[str], columns: list[str] | None = None) -> pa.Table:
        """One row per key, as Arrow columns; a key covered by two parts (a task re-run after
        its worker died, a storage failure retried by a later run) keeps one, and a finished
        row (written or quarantined) wins over a ``storage_error`` one whatever the order of
        the parts (else the first part's row)."""
        schema = metadata.AUDIT_SCHEMA if columns is None else _subschema(columns)
        tables = [_conformed(t, schema) for _, t in self._read_tables(audit_keys, columns)]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        return unique_keys(table)

    def read_audit(self, columns: list[str] | None = None) -> pa.Table:
        """Every finished task's audit rows, one per key, sorted by key index."""
        audit_keys, _ = self._part_keys()
        return self._audit_table(audit_keys, columns)

    def metadata_parts(self) -> Iterator[pa.Table]:
        """Each finished task's metadata rows, a part at a time, in the parts' order (an
        image a task re-run wrote twice comes twice: the first row is the one kept).

        Metadata parts count only beside their audit part: the task that wrote them finished.
        """
        audit_keys, metadata_keys = self._part_keys()
        done_stems = {key.removesuffix(AUDIT_SUFFIX) for key in audit_keys}
        finished = [key for key in metadata_keys if key.removesuffix(METADATA_SUFFIX) in done_stems]
        for _, table in self._read_tables(finished):
            yield table.cast(metadata.METADATA_SCHEMA)

    def audit_windows(self, rows: int) -> Iterator[tuple[int, int | None, pa.Table]]:
        """The finished tasks' audit rows a window of key indexes at a time:
        ``(first key index, end key index or None for the last window, rows)``, the rows
        one per key (as ``read_audit``) and sorted; the windows ascend and cover every key.

        Parts are named by the first and last key index they cover, so the windows are
        planned from the listing alone: parts whose ranges overlap (a task re-run, a
        storage failure retried) fall in one window, and a window holds parts of about
        ``rows`` keys, read together; never all parts at once.
        """
        audit_keys, _ = self._part_keys()
        windows = _windows(audit_keys, rows)
        if not windows:
            yield 0, None, self._audit_table([])
        for i, (start, keys) in enumerate(windows):
            end = windows[i + 1][0] if i + 1 < len(windows) else None
            yield (0 if i == 0 else start), end, self._audit_table(keys)

    def read_review_entries(self) -> list[dict[str, Any]]:
        """The review entries of every finished task (its audit part exists), one per key."""
        audit_keys, _ = self._part_keys()
        done = {key.removesuffix(AUDIT_SUFFIX).rsplit("/", 1)[-1] for key in audit_keys}
        keys = [
            key
            for key in storage.list_keys(self.private, self.review_parts_folder)
            if key.endswith(REVIEW_SUFFIX) and key.removesuffix(REVIEW_SUFFIX).rsplit("/", 1)[-1] in done
        ]
        by_key: dict[int, dict[str, Any]] = {}
        for blob in storage.read_many(self.private, keys).values():
            for entry in review.entries_from_part(blob):
                by_key[entry["key_index"]] = entry
        return list(by_key.values())

    def done_key_indexes(self) -> pa.Array:
        """Keys a finished task covers, but for storage failures: a resumed run skips them."""
        audit = self.read_audit(["key_index", "status"])
        return (
            audit.filter(pc.not_equal(audit.column("status"), metadata.STORAGE_ERROR))
            .column("key_index")
            .combine_chunks()
        )

    def statuses(self, key_indexes: Iterable[int]) -> dict[int, str]:
        """The audit status (written or quarantined) of each of ``key_indexes`` a finished task
        covers: which copy of a repeated SOPInstanceUID to try next (``inventory.next_copies``)."""
        audit = self.read_audit(["key_index", "status"])
        audit = audit.filter(pc.is_in(audit.column("key_index"), value_set=pa.array(list(key_indexes), pa.int64())))
        return dict(zip(audit.column("key_index").to_pylist(), audit.column("status").to_pylist(), strict=True))

    def save_audit(self, table: pa.Table) -> None:
        storage.write_atomic(self.private, f"{self.folder}/audit.parquet", parquet_bytes(table))

    def finish(self) -> None:
        """The run is committed: the next run with this PRIVATE starts afresh."""
        storage.remove(self.private, ACTIVE_KEY)


def start_or_resume(private: Location, input_url: str, output_url: str) -> tuple[RunJournal, bool]:
    """The unfinished run of this input and output if there is one, else a new run.

    An unfinished run of another input or output is refused rather than abandoned: its
    finished work would otherwise be missing from that dataset's tables.
    """
    active = refuse_other_unfinished(private, input_url, output_url)
    if active is not None:
        return RunJournal(private, active["run_id"]), True
    journal = RunJournal(private, new_run_id())
    record = {"run_id": journal.run_id, "input": input_url, "output": output_url}
    storage.write_atomic(private, ACTIVE_KEY, json.dumps(record).encode())
    return journal, False


def refuse_other_unfinished(private: Location, input_url: str, output_url: str) -> dict[str, str] | None:
    """The unfinished run's record if it is of this input and output; ConfigError if of others."""
    if not storage.exists(private, ACTIVE_KEY):
        return None
    active = json.loads(storage.read_bytes(private, ACTIVE_KEY))
    if (active["input"], active["output"]) != (input_url, output_url):
        raise ConfigError(
            f"{private.url} holds the unfinished run {active['run_id']} of another input or output; "
            "rerun that command to finish it first"
        )
    return active


def _ascending(column: pa.ChunkedArray) -> bool:
    """Whether the values strictly increase (no Python object per value)."""
    values = column.to_numpy()
    return bool(np.all(values[1:] > values[:-1]))


def _table_bytes(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> bytes:
    return parquet_bytes(pa.Table.from_pylist(list(rows), schema=schema))


def _conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """An audit part as ``schema``: a column added since the part was written (a run
    resumed after an upgrade: ``pixel_regions_left``) is null in its rows."""
    for field in schema:
        if field.name not in table.column_names:
            table = table.append_column(field.name, pa.nulls(table.num_rows, field.type))
    return table.select(schema.names).cast(schema)


def _subschema(columns: list[str]) -> pa.Schema:
    return pa.schema([metadata.AUDIT_SCHEMA.field(name) for name in columns])


def unique_keys(audit: pa.Table) -> pa.Table:
    """One audit row per key index, sorted by it: a finished row before a ``storage_error``
    one, else the earliest row (columnar: no Python object per row)."""
    if audit.num_rows == 0:
        return audit
    order = pa.array(np.arange(audit.num_rows))
    failed = pc.fill_null(pc.equal(audit.column("status"), metadata.STORAGE_ERROR), False)
    ranked = pa.table({"key_index": audit.column("key_index"), "failed": failed, "order": order})
    ranked = ranked.sort_by([("key_index", "ascending"), ("failed", "ascending"), ("order", "ascending")])
    keys = ranked.column("key_index").to_numpy()
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return audit.take(ranked.column("order").filter(pa.array(first)))


def part_span(key: str) -> tuple[int, int]:
    """The first and last key index a part covers, from its name."""
    first, last, _ = key.rsplit("/", 1)[-1].split("-", 2)
    return int(first), int(last)


def _windows(keys: list[str], rows: int) -> list[tuple[int, list[str]]]:
    """``keys`` (parts) in windows of about ``rows`` key indexes: ``(first key index, parts)``.

    Parts whose ranges overlap are chained into one group, and a group is never split,
    so a key's rows are all in one window; within a window the parts keep their order in
    ``keys`` (which row of a key wins a tie depends on it, as in ``unique_keys``).
    """
    spans = [part_span(key) for key in keys]
    order = sorted(range(len(keys)), key=lambda i: (spans[i][0], i))
    groups: list[list[int]] = []
    top = -1
    for i in order:
        first, last = spans[i]
        if groups and first <= top:
            groups[-1].append(i)
        else:
            groups.append([i])
        top = max(top, last)
    windows: list[tuple[int, list[str]]] = []
    held = rows
    for group in groups:
        first = spans[group[0]][0]
        size = max(spans[i][1] for i in group) - first + 1
        if held + size > rows and held:
            windows.append((first, []))
            held = 0
        windows[-1][1].extend(keys[i] for i in sorted(group))
        held += size
    return windows
