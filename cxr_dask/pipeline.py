"""The only module that builds Dask graphs: scan, mint ids, broadcast, de-identify, commit.

```
list -> pass 1 (bag: header-only scan) -> identity map (client) -> broadcast
     -> pass 2 (bag: de-identify + write each file, record the task in the journal)
     -> commit (Parquet tables + audit from the journal's parts, the review page)
```
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dask.bag as db
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from distributed import Client, Future, as_completed
from distributed.scheduler import KilledWorker
from tqdm.auto import tqdm

from cxr_dask import identity as identity_mod
from cxr_dask import inventory, lock, metadata, process, review, storage
from cxr_dask.broadcast import IdentityRef, broadcast_identity, resolve
from cxr_dask.cluster import total_threads
from cxr_dask.config import RunConfig
from cxr_dask.deid import freetext
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.errors import ConfigError
from cxr_dask.identity import IdentityMap, parquet_bytes
from cxr_dask.journal import RunJournal, start_or_resume
from cxr_dask.storage import Location

#: A pass-2 work item: the key's index in the sorted listing, and the key.
Item = tuple[int, str]
T = TypeVar("T")

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.parquet"
RECORD_LIST_FILE = "record_list.parquet"
STUDY_LIST_FILE = "study_list.parquet"


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
    resumed: bool = False
    already_done: int = 0
    pixels_cleaned: int = 0
    review_page: str = ""
    pixels_flagged: int = 0
    storage_errors: int = 0

    @property
    def files_per_second(self) -> float:
        return self.files_seen / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        mb = self.bytes_in / 1e6
        out = [f"resumed run {self.run_id}: {self.already_done} files were already done"] if self.resumed else []
        out += [
            f"run {self.run_id}: {self.files_seen} files in {self.seconds:.1f} s "
            f"({self.files_per_second:.1f} files/s, {mb / max(self.seconds, 1e-9):.1f} MB/s)",
            f"  written      {self.written}  ({self.patients} patients, {self.studies} studies; "
            f"burned-in text cleaned in {self.pixels_cleaned})",
            f"  quarantined  {self.quarantined}"
            + (f"  ({', '.join(f'{k}: {v}' for k, v in sorted(self.reasons.items()))})" if self.reasons else ""),
            *(
                [f"  not done     {self.storage_errors}  (storage errors after retries: rerun the same command)"]
                if self.storage_errors
                else []
            ),
            f"  dataset      {self.output}",
            f"  private      {self.private}  (crosswalk, secret, audit: PHI, keep apart)",
        ]
        if self.review_page:
            out.append(f"  review       {self.review_page}  ({self.pixels_flagged} images flagged for a human look)")
        return out


def _each_partition(
    client: Client, bag: db.Bag, sizes: list[int], label: str, config: RunConfig
) -> Iterator[tuple[int, Future]]:
    """Compute a bag's partitions, yielding ``(partition index, finished future)`` as each ends.

    Each future is let go once yielded, so a worker that dies later does not make the
    scheduler recompute (and rewrite) partitions that already finished.
    """
    futures = client.compute(bag.to_delayed(), retries=config.retries)
    index_of = {future.key: i for i, future in enumerate(futures)}
    finished = as_completed(futures)
    del futures
    with tqdm(total=sum(sizes), desc=label, unit="file", disable=not config.progress) as bar:
        for future in finished:
            i = index_of[future.key]
            yield i, future
            bar.update(sizes[i])


def scan_bag(config: RunConfig, files: list[tuple[str, int]], partition_size: int) -> db.Bag:
    """Pass 1's graph: one header-only inventory record per key, and per partition the
    free-text tokens counted by patient (one ``inventory.ScanPart`` a partition)."""
    items = [(index, key, size) for index, (key, size) in enumerate(files)]
    return db.from_sequence(items, partition_size=partition_size).map_partitions(
        inventory.scan_partition_with_words,
        config.input_location,
        config.profile,
        config.freetext.min_patients,
    )


VOCABULARY_FILE = "vocabulary.json"


def _scan(client: Client, config: RunConfig, files: list[tuple[str, int]], partition_size: int):
    """Run pass 1: the inventory records and the run's free-text vocabulary.

    Each task returns its (token, patient) pairs deduplicated and capped at k patients a
    token, so the client holds at most k patients per distinct token.
    """
    sizes = [len(chunk) for chunk in partitions(files, partition_size)]
    words = freetext.WordCounts(cap=config.freetext.min_patients)
    records: list[dict[str, Any]] = []
    for _, future in _each_partition(
        client, scan_bag(config, files, partition_size), sizes, "pass 1: scan headers", config
    ):
        for part in future.result():
            records.extend(part.records)
            words.merge(part.words)
    vocabulary = freetext.build_vocabulary(words, config.freetext.min_patients, config.freetext.keep)
    return records, vocabulary


def _save_vocabulary(journal: RunJournal, vocabulary: freetext.Vocabulary) -> None:
    """Kept in PRIVATE beside the inventory, so a resumed run cleans text the same way."""
    data = json.dumps(sorted(vocabulary.safe), ensure_ascii=False).encode("utf-8")
    storage.write_atomic(journal.private, f"{journal.folder}/{VOCABULARY_FILE}", data)


def _load_vocabulary(journal: RunJournal) -> freetext.Vocabulary:
    key = f"{journal.folder}/{VOCABULARY_FILE}"
    if not storage.exists(journal.private, key):
        log.warning("resumed run has no saved vocabulary: free text is kept from the shipped vocabulary only")
        return freetext.shipped_vocabulary()
    return freetext.Vocabulary(frozenset(json.loads(storage.read_bytes(journal.private, key).decode("utf-8"))))


def partitions(items: list[T], partition_size: int) -> list[list[T]]:
    """Consecutive runs of ``partition_size`` items: one pass-2 task each."""
    return [items[start : start + partition_size] for start in range(0, len(items), partition_size)]


def deidentify_partition(
    chunks: list[list[Item]],
    source: Location,
    destination: Location,
    identity: IdentityRef | IdentityMap,
    options: ProfileOptions,
    journal: RunJournal,
) -> int:
    """The pass-2 task: de-identify and write its files, then record them in the journal."""
    (items,) = chunks
    reviews: list[process.ReviewItem] = []
    outcomes = process.process_partition(items, source, destination, resolve(identity), options, reviews)
    try:
        entries = [
            review.write_images(journal.private, journal.review_folder, r.key_index, r.dicom_id, r.path, r.rendered)
            for r in reviews
        ]
        journal.write_part(
            [index for index, _ in items],
            [audit for audit, _ in outcomes],
            [row for _, row in outcomes if row is not None],
            review_entries=entries,
        )
    except Exception as error:
        if not storage.is_storage_error(error):
            raise
        # Dask reports a task's error with its message, which may quote a key: the type only.
        raise storage.StorageError(type(error).__name__) from None
    return len(items)


def deidentify_bag(
    config: RunConfig,
    items: list[Item],
    identity: IdentityRef | IdentityMap,
    partition_size: int,
    journal: RunJournal,
) -> db.Bag:
    """Pass 2's graph: each task de-identifies, writes and records one partition of files.

    ``identity`` is the broadcast reference: the graph holds its name, not the map, so
    the map travels once per worker however many tasks there are.
    """
    chunks = partitions(items, partition_size)
    return db.from_sequence(chunks, npartitions=max(1, len(chunks))).map_partitions(
        deidentify_partition,
        config.input_location,
        config.output_location,
        identity,
        config.profile,
        journal,
    )


@dataclass(frozen=True)
class _Pass2:
    """What every round of pass-2 tasks shares; rounds differ in their items and sizes."""

    client: Client
    config: RunConfig
    identity: IdentityRef
    journal: RunJournal
    #: Key indexes of tasks that could not record their work (the journal's store failed
    #: after its retries): not done, so the next run retries them.
    unrecorded: list[int] = field(default_factory=list)

    def run(self, items: list[Item], partition_size: int) -> list[int]:
        """Run pass 2; returns the key indexes of poison inputs, files that kill every worker.

        A worker that dies takes its task elsewhere (the scheduler's ``allowed-failures``).
        Files of a task that keeps killing workers are retried one per task, then those
        still failing one at a time, so a file is only called poison when it kills workers
        on its own (a task queued on a dying worker is blamed with it), then quarantined,
        not retried forever.
        """
        suspects = self.killing_items(items, partition_size, "pass 2: de-identify")
        if suspects:
            log.warning("pass 2: %d files were in tasks that killed workers; retrying them", len(suspects))
            suspects = self.killing_items(suspects, 1, "pass 2: retry")
        return [item[0] for item in suspects if self.killing_items([item], 1, "pass 2: isolate")]

    def killing_items(self, items: list[Item], partition_size: int, label: str) -> list[Item]:
        """Run ``items`` in tasks of ``partition_size``; the items of tasks that killed workers."""
        chunks = partitions(items, partition_size)
        bag = deidentify_bag(self.config, items, self.identity, partition_size, self.journal)
        killed: list[Item] = []
        for i, future in _each_partition(self.client, bag, [len(c) for c in chunks], label, self.config):
            if future.status == "error" and isinstance(future.exception(), KilledWorker):
                killed += chunks[i]
            elif future.status == "error" and storage.is_storage_error(future.exception()):
                log.warning("pass 2: a task could not record %d files (storage error)", len(chunks[i]))
                self.unrecorded.extend(index for index, _ in chunks[i])
            else:
                future.result()  # anything else (e.g. the journal's store is down) stops the run
        return killed


def _hash_copies(client: Client, config: RunConfig, table: pa.Table) -> dict[int, str]:
    """Pass 1b: hash the copies of repeated SOPInstanceUIDs that could be byte-identical.

    Pass 1 reads a header block only, so it cannot hash; copies of equal size (and the
    copy ranked first) are read whole here, on the workers. Only duplicates pay for it.
    """
    wanted = inventory.copies_to_hash(table)
    if not wanted:
        return {}
    bag = db.from_sequence(wanted, npartitions=min(len(wanted), 64)).map(
        lambda item, location: (item[0], inventory.content_hash(location, item[1])), config.input_location
    )
    log.info("pass 1b: hashing %d copies of repeated SOPInstanceUIDs", len(wanted))
    return dict(client.compute(bag).result())


def _try_next_copies(pass2: _Pass2, table: pa.Table, poison: list[int], threads: int) -> list[int]:
    """Pass 2b: while a repeated SOPInstanceUID has no written copy, try its next copy.

    The copies share the SOPInstanceUID, so the identity map gives the next one the ids
    the first would have had. Which copies were tried is read back from the journal, so
    a resumed run carries on where the interrupted one stopped. Returns the poison keys.
    """
    found: list[int] = []
    if not inventory.has_copies(table):
        return found
    while True:
        statuses = pass2.journal.statuses() | dict.fromkeys(poison + found, "quarantined")
        retry = inventory.next_copies(table, statuses)
        if not retry:
            return found
        log.info("pass 2b: %d repeated images whose chosen copy was quarantined; trying the next copy", len(retry))
        found += pass2.run(retry, pass2.config.partition_size_for(len(retry), threads))


def _point_copies_at_the_written_one(table: pa.Table, audit_rows: list[dict[str, Any]]) -> None:
    """Every copy of a written repeated image names the written copy's key index in its
    audit row (``duplicate_of``), whether it was never tried or quarantined when tried."""
    statuses = {row["key_index"]: row["status"] for row in audit_rows}
    written = inventory.written_copies(table, statuses)
    for row in audit_rows:
        if row["key_index"] in written:
            row["duplicate_of"] = written[row["key_index"]]


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
    """The whole job against an existing client; returns counts, writes tables.

    Holds the PRIVATE lock throughout; resumes the unfinished run of the same input and
    output if PRIVATE has one.
    """
    source, output, private = config.input_location, config.output_location, config.private_location
    started = time.perf_counter()
    check_workers_reach_storage(client, config)
    with lock.hold(private):
        journal, resumed = start_or_resume(private, config.input, config.output)
        storage.remove_partials(output)
        storage.remove_partials(private)
        summary = RunSummary(run_id=journal.run_id, output=config.output, private=config.private, resumed=resumed)
        threads = total_threads(client)

        table = journal.load_inventory()
        if table is None:
            files = storage.list_files(source)
            partition_size = config.partition_size_for(len(files), threads)
            log.info("pass 1: %d files in partitions of %d", len(files), partition_size)
            records, vocabulary = _scan(client, config, files, partition_size)
            table = inventory.rank_copies(inventory.to_table(records))
            table = inventory.label_copies(table, _hash_copies(client, config, table))
            _save_vocabulary(journal, vocabulary)  # before the inventory, which marks pass 1 done
            journal.save_inventory(table)
        else:
            vocabulary = _load_vocabulary(journal)
            if storage_failed(table):
                table = _rescan_storage_errors(client, config, table, threads)
                journal.save_inventory(table)
        summary.files_seen = table.num_rows
        summary.bytes_in = sum(size or 0 for size in table.column("size").to_pylist())

        secret = identity_mod.load_or_create_secret(private)
        identity = identity_mod.extend(identity_mod.load_crosswalk(private, secret), table)
        identity_mod.save_crosswalk(private, identity)
        identity.vocabulary = vocabulary  # broadcast with the map, never saved with the crosswalk

        valid = table.filter(pc.is_null(table.column("error")))
        done = journal.done_key_indexes() if resumed else set()
        items = [
            (index, key)
            for index, key in zip(valid.column("key_index").to_pylist(), valid.column("key").to_pylist(), strict=True)
            if index not in done
        ]
        summary.already_done = len(done)
        poison: list[int] = []
        unrecorded: list[int] = []
        if items or inventory.has_copies(table):
            with broadcast_identity(client, identity) as identity_ref:
                pass2 = _Pass2(client, config, identity_ref, journal)
                if items:
                    partition_size = config.partition_size_for(len(items), threads)
                    log.info("pass 2: %d files in partitions of %d", len(items), partition_size)
                    poison = pass2.run(items, partition_size)
                poison += _try_next_copies(pass2, table, poison, threads)
                unrecorded = pass2.unrecorded

        audit_rows, new_rows = journal.read_parts()
        tried = {row["key_index"] for row in audit_rows} | set(poison)
        audit_rows += [
            metadata.audit_row(r["key_index"], _status_of(r["error"]), reason=r["error"], bytes_in=r["size"])
            for r in table.filter(pc.invert(pc.is_null(table.column("error")))).to_pylist()
            if r["key_index"] not in tried
        ]
        audit_rows += [metadata.audit_row(index, "quarantined", reason="worker_crash") for index in poison]
        _point_copies_at_the_written_one(table, audit_rows)
        recorded = {row["key_index"] for row in audit_rows}
        audit_rows += [
            metadata.audit_row(index, metadata.STORAGE_ERROR, reason=metadata.STORAGE_ERROR, detail="journal")
            for index in sorted(set(unrecorded) - recorded)
        ]
        audit_rows.sort(key=lambda row: row["key_index"])
        _commit(output, journal, audit_rows, new_rows)
        reviewed = review.build(
            private, journal.review_folder, journal.run_id, journal.read_review_entries(), audit_rows
        )
        summary.storage_errors = sum(row["status"] == metadata.STORAGE_ERROR for row in audit_rows)
        if not summary.storage_errors:
            journal.finish()  # else the run stays unfinished: the same command resumes it
        storage.remove_partials(output)

    reasons = Counter(row["reason"] for row in audit_rows if row["status"] == "quarantined")
    summary.reasons = dict(reasons)
    summary.quarantined = sum(reasons.values())
    summary.written = new_rows.num_rows
    summary.pixels_cleaned = sum(row.get("pixel_action") == "cleaned" for row in audit_rows)
    summary.pixels_flagged = reviewed.flagged
    summary.review_page = review.index_location(private, journal.review_folder)
    summary.patients = len(set(new_rows.column("subject_id").to_pylist()))
    summary.studies = len(set(new_rows.column("study_id").to_pylist()))
    summary.seconds = time.perf_counter() - started
    return summary


def _status_of(inventory_error: str) -> str:
    return metadata.STORAGE_ERROR if inventory_error == metadata.STORAGE_ERROR else "quarantined"


def storage_failed(table: pa.Table) -> bool:
    """True when pass 1 could not read some keys (the store failed after its retries)."""
    return pc.any(pc.equal(table.column("error"), metadata.STORAGE_ERROR)).as_py() is True


def _rescan_storage_errors(client: Client, config: RunConfig, table: pa.Table, threads: int) -> pa.Table:
    """A resumed run's pass 1 over the keys the last run could not read, merged in place.

    Every other record stays as it was (ids already minted from it must not move): a
    rescanned file whose SOPInstanceUID an earlier record holds is the duplicate.
    """
    failed = table.filter(pc.equal(table.column("error"), metadata.STORAGE_ERROR))
    files = list(zip(failed.column("key").to_pylist(), failed.column("size").to_pylist(), strict=True))
    indexes = failed.column("key_index").to_pylist()
    partition_size = config.partition_size_for(len(files), threads)
    log.info("pass 1: rescanning %d files the last run could not read", len(files))
    items = [(index, key, size) for index, (key, size) in zip(indexes, files, strict=True)]
    bag = db.from_sequence(items, partition_size=partition_size).map_partitions(
        inventory.scan_partition, config.input_location
    )
    sizes = [len(chunk) for chunk in partitions(items, partition_size)]
    rescanned = {
        record["key_index"]: record
        for _, future in _each_partition(client, bag, sizes, "pass 1: rescan", config)
        for record in future.result()
    }
    rows = table.to_pylist()
    seen = {row["sop_instance_uid"] for row in rows if row["error"] is None and row["sop_instance_uid"]}
    for i, row in enumerate(rows):
        record = rescanned.get(row["key_index"])
        if record is None:
            continue
        if record["error"] is None and record["sop_instance_uid"] in seen:
            record["error"] = "duplicate_sop_instance_uid"
        elif record["error"] is None:
            seen.add(record["sop_instance_uid"])
        rows[i] = record
    return inventory.to_table(rows)


def _commit(output: Location, journal: RunJournal, audit_rows: list[dict[str, Any]], fresh: pa.Table) -> None:
    """Write the run's audit, then merge its rows into the dataset's tables.

    Rows are merged by dicom_id, so a rerun, a resumed commit or a later batch leaves
    each image once; every table is replaced in one atomic write.
    """
    journal.save_audit(audit_rows)
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
