"""The only module that builds Dask graphs: scan, mint ids, broadcast, de-identify, commit.

```
list -> pass 1 (bag: header-only scan) -> identity map (client) -> broadcast
     -> pass 2 (bag: de-identify + write each file) -> Parquet tables + audit
```
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import dask.bag as db
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from distributed import Client, Future, progress

from cxr_dask import identity as identity_mod
from cxr_dask import inventory, metadata, process, storage
from cxr_dask.cluster import total_threads
from cxr_dask.config import RunConfig
from cxr_dask.errors import ConfigError
from cxr_dask.identity import IdentityMap, parquet_bytes
from cxr_dask.storage import Location

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.parquet"
RECORD_LIST_FILE = "record_list.parquet"
STUDY_LIST_FILE = "study_list.parquet"
RUNS_DIR = "runs"


@dataclass
class RunSummary:
    """What a run did, in counts only (safe to print and log)."""

    run_id: str
    files_seen: int = 0
    written: int = 0
    quarantined: int = 0
    patients: int = 0
    studies: int = 0
    bytes_in: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    output: str = ""
    private: str = ""

    @property
    def files_per_second(self) -> float:
        return self.files_seen / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        mb = self.bytes_in / 1e6
        out = [
            f"run {self.run_id}: {self.files_seen} files in {self.seconds:.1f} s "
            f"({self.files_per_second:.1f} files/s, {mb / max(self.seconds, 1e-9):.1f} MB/s)",
            f"  written      {self.written}  ({self.patients} patients, {self.studies} studies)",
            f"  quarantined  {self.quarantined}"
            + (f"  ({', '.join(f'{k}: {v}' for k, v in sorted(self.reasons.items()))})" if self.reasons else ""),
            f"  dataset      {self.output}",
            f"  private      {self.private}  (crosswalk, secret, audit: PHI, keep apart)",
        ]
        return out


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _compute(client: Client, collection: db.Bag, config: RunConfig) -> list[Any]:
    future = client.compute(collection, retries=config.retries)
    if config.progress:
        bar = progress(future)
        if bar is not None:  # in a notebook, a widget: shown only when displayed
            from IPython.display import display

            display(bar)
    return future.result()


def scan_bag(config: RunConfig, files: list[tuple[str, int]], partition_size: int) -> db.Bag:
    """Pass 1's graph: one header-only inventory record per key."""
    items = [(index, key, size) for index, (key, size) in enumerate(files)]
    return db.from_sequence(items, partition_size=partition_size).map_partitions(
        inventory.scan_partition, config.input_location
    )


def deidentify_bag(
    config: RunConfig,
    items: list[tuple[int, str]],
    identity: Future | IdentityMap,
    partition_size: int,
) -> db.Bag:
    """Pass 2's graph: each task de-identifies and writes one partition of files.

    ``identity`` is the broadcast future: the graph holds its key, not the map, so the
    map travels once per worker however many tasks there are.
    """
    return db.from_sequence(items, partition_size=partition_size).map_partitions(
        process.process_partition,
        config.input_location,
        config.output_location,
        identity,
        config.profile,
    )


def check_workers_reach_storage(client: Client, config: RunConfig) -> None:
    """Repeat the storage checks on a worker before any work is submitted.

    The client checked the locations with its own credentials; the workers read and
    write with theirs (an IRSA role, environment variables). A cluster without access
    would otherwise quarantine every file as unreadable; this fails with one line.
    """
    check = client.submit(
        storage.check_locations, config.input_location, config.output_location, config.private_location, pure=False
    )
    try:
        check.result()
    except ConfigError as error:
        raise ConfigError(f"on the workers: {error}") from None


def run(client: Client, config: RunConfig) -> RunSummary:
    """The whole job against an existing client; returns counts, writes tables."""
    started = time.perf_counter()
    summary = RunSummary(run_id=new_run_id(), output=config.output, private=config.private)
    source, output, private = config.input_location, config.output_location, config.private_location
    check_workers_reach_storage(client, config)

    files = storage.list_files(source)
    summary.files_seen = len(files)
    summary.bytes_in = sum(size for _, size in files)
    partition_size = config.partition_size_for(len(files), total_threads(client))
    log.info("pass 1: %d files in partitions of %d", len(files), partition_size)
    records = _compute(client, scan_bag(config, files, partition_size), config) if files else []
    table = inventory.mark_duplicates(inventory.to_table(records))

    secret = identity_mod.load_or_create_secret(private)
    identity = identity_mod.extend(identity_mod.load_crosswalk(private, secret), table)
    identity_mod.save_crosswalk(private, identity)

    valid = table.filter(pc.is_null(table.column("error")))
    items = list(zip(valid.column("key_index").to_pylist(), valid.column("key").to_pylist(), strict=True))
    broadcast = client.scatter(identity, broadcast=True, hash=False) if items else identity
    log.info("pass 2: %d files", len(items))
    outcomes = _compute(client, deidentify_bag(config, items, broadcast, partition_size), config) if items else []

    audit_rows = [
        metadata.audit_row(r["key_index"], "quarantined", reason=r["error"], bytes_in=r["size"])
        for r in table.filter(pc.invert(pc.is_null(table.column("error")))).to_pylist()
    ]
    audit_rows += [audit for audit, _ in outcomes]
    audit_rows.sort(key=lambda row: row["key_index"])
    new_rows = [row for _, row in outcomes if row is not None]
    _commit(output, private, summary.run_id, table, audit_rows, new_rows)

    reasons = Counter(row["reason"] for row in audit_rows if row["status"] == "quarantined")
    summary.reasons = dict(reasons)
    summary.quarantined = sum(reasons.values())
    summary.written = len(new_rows)
    summary.patients = len({row["subject_id"] for row in new_rows})
    summary.studies = len({row["study_id"] for row in new_rows})
    summary.seconds = time.perf_counter() - started
    return summary


def _commit(
    output: Location,
    private: Location,
    run_id: str,
    inventory_table: pa.Table,
    audit_rows: list[dict[str, Any]],
    new_metadata: list[dict[str, Any]],
) -> None:
    """Write the run's private records, then merge its rows into the dataset's tables.

    Rows are merged by dicom_id, so a rerun or a later batch leaves each image once.
    """
    run_folder = f"{RUNS_DIR}/{run_id}"
    storage.write_atomic(private, f"{run_folder}/inventory.parquet", parquet_bytes(inventory_table))
    audit = pa.Table.from_pylist(audit_rows, schema=metadata.AUDIT_SCHEMA)
    storage.write_atomic(private, f"{run_folder}/audit.parquet", parquet_bytes(audit))

    fresh = pa.Table.from_pylist(new_metadata, schema=metadata.METADATA_SCHEMA)
    merged = _merge_by_dicom_id(read_table(output, METADATA_FILE), fresh)
    storage.write_atomic(output, METADATA_FILE, parquet_bytes(merged))
    storage.write_atomic(output, RECORD_LIST_FILE, parquet_bytes(metadata.record_list(merged)))
    storage.write_atomic(output, STUDY_LIST_FILE, parquet_bytes(metadata.study_list(merged)))


def read_table(location: Location, key: str) -> pa.Table | None:
    """A Parquet table at ``key``, or None when it does not exist yet."""
    if not storage.exists(location, key):
        return None
    return pq.read_table(io.BytesIO(storage.read_bytes(location, key)))


def _merge_by_dicom_id(existing: pa.Table | None, fresh: pa.Table) -> pa.Table:
    if existing is None or existing.num_rows == 0:
        merged = fresh
    else:
        fresh_ids = fresh.column("dicom_id")
        keep = pc.invert(pc.is_in(existing.column("dicom_id"), value_set=fresh_ids))
        merged = pa.concat_tables([existing.filter(keep).cast(metadata.METADATA_SCHEMA), fresh])
    return merged.sort_by([("subject_id", "ascending"), ("study_id", "ascending"), ("dicom_id", "ascending")])
