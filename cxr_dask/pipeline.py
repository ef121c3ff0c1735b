"""The run's Dask graphs (verify's are in ``pipeline_verify``): scan, mint ids, broadcast, de-identify, commit.

```
list -> pass 1 (bag: header-only scan) -> identity map (client) -> broadcast
     -> pass 2 (bag: de-identify + write each file, record the task in the journal)
     -> commit (Parquet tables + audit from the journal's parts, the review page)
```
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import dask.bag as db
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from distributed import Client, Future, as_completed
from distributed.scheduler import KilledWorker

from cxr_dask import commit, heap, inventory, lock, metadata, process, review, storage
from cxr_dask import identity as identity_mod
from cxr_dask.broadcast import IdentityRef, broadcast_crosswalk, resolve
from cxr_dask.cluster import total_threads
from cxr_dask.config import RunConfig
from cxr_dask.deid import freetext
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.errors import ConfigError
from cxr_dask.identity import IdentityMap
from cxr_dask.journal import RunJournal
from cxr_dask.storage import Location

#: A pass-2 work item: the key's index in the sorted listing, and the key.
Item = tuple[int, str]
T = TypeVar("T")

log = logging.getLogger(__name__)

METADATA_FILE = commit.METADATA_FILE
RECORD_LIST_FILE = commit.RECORD_LIST_FILE
STUDY_LIST_FILE = commit.STUDY_LIST_FILE


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


#: Tasks a pass keeps submitted at once, per thread of the cluster: enough that a thread
#: finds its next task queued when one ends, few enough that the client's futures, the
#: tasks' arguments and the scheduler's state stay the same size whatever the archive's.
WINDOW_PER_THREAD = 4
#: The window's floor (a cluster still arriving, or of one thread).
MIN_WINDOW = 8


def task_window(threads: int) -> int:
    """Tasks in flight at once for a cluster of ``threads`` threads."""
    return max(MIN_WINDOW, WINDOW_PER_THREAD * threads)


def _each_partition(
    client: Client,
    function: Callable[..., Any],
    chunks: Iterable[Any],
    sizes: list[int],
    label: str,
    config: RunConfig,
    args: tuple[Any, ...] = (),
    window: int = MIN_WINDOW,
) -> Iterator[tuple[int, Future]]:
    """Run ``function([chunk], *args)`` for each chunk, yielding ``(chunk index, finished
    future)`` as each ends.

    At most ``window`` tasks are submitted at once; each one that ends makes room for the
    next chunk, which is only then made (``chunks`` may be a generator): neither the client
    nor the scheduler holds a task per file. Each future is let go once yielded, so a
    worker that dies later does not make the scheduler recompute (and rewrite) work that
    already finished. Chunks smaller than the first (the last wave's,
    ``RunConfig.task_sizes_for``) go in at a lower priority, after the others.
    """
    pending = iter(chunks)
    whole = next((i for i, size in enumerate(sizes) if size < sizes[0]), len(sizes))
    name = f"{getattr(function, '__name__', 'task')}-{uuid.uuid4().hex}"
    finished = as_completed()
    index_of: dict[Any, int] = {}

    def submit(i: int) -> None:
        future = client.submit(
            function,
            [next(pending)],
            *args,
            key=f"{name}-{i}",
            retries=config.retries,
            priority=0 if i < whole else -1,  # below the default: nothing of another client's is overtaken
            pure=False,
        )
        index_of[future.key] = i
        finished.add(future)

    submitted = min(window, len(sizes))
    for i in range(submitted):
        submit(i)
    with _progress_bar(sum(sizes), label, config.progress) as bar:
        for future in finished:
            i = index_of.pop(future.key)
            if submitted < len(sizes):
                submit(submitted)
                submitted += 1
            yield i, future
            bar.update(sizes[i])


class _NoBar:
    """What ``_progress_bar`` gives when the bar is off."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _progress_bar(total: int, label: str, shown: bool) -> Any:
    """tqdm's bar, imported here: only the client draws one, so neither the workers nor the
    process they are forked from import tqdm (~20-30 ms of CPU before the first worker
    starts, docs/scaling.md, "sixth round"), nor a run without a bar (``--no-progress``)."""
    if not shown:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="file")


@dataclass(frozen=True)
class ScanSummary:
    """What a pass-1 task sends back: the key of the inventory part it wrote to the
    journal, its file count and its capped word counts. No row per file travels back:
    the client reads the parts as Arrow tables."""

    part: str | None
    files: int
    words: freetext.WordCounts


def scan_partition_to_journal(
    items: Iterable[tuple[int, str, int]],
    location: Location,
    options: ProfileOptions,
    min_patients: int,
    journal: RunJournal,
) -> list[ScanSummary]:
    """The pass-1 task: scan a partition's headers, write its records as an inventory part."""
    items = list(items)
    if len(items) == 1 and isinstance(items[0], bytes):  # one chunk of a listing table
        items = _rows(pa.ipc.open_stream(items[0]).read_all(), ("key_index", "key", "size"))
    (scanned,) = inventory.scan_partition_with_words(items, location, options, min_patients)
    if not items:
        return [ScanSummary(None, 0, scanned.words)]
    try:
        part = journal.write_inventory_part([index for index, _, _ in items], scanned.records)
    except Exception as error:
        if not storage.is_storage_error(error):
            raise
        raise storage.StorageError(type(error).__name__) from None  # the type only: keys may be PHI
    return [ScanSummary(part, len(items), scanned.words)]


def scan_bag(
    config: RunConfig, items: list[tuple[int, str, int]] | pa.Table, partition_size: int, journal: RunJournal
) -> db.Bag:
    """Pass 1's graph over ``(key_index, key, size)`` items (or those columns of a listing
    table, each task's run then travelling as Arrow IPC bytes): per partition one
    inventory part in the journal and the free-text tokens counted by patient (a
    ``ScanSummary``)."""
    if isinstance(items, pa.Table):
        chunks = work_chunks(items, partition_size)
        bag = db.from_sequence(chunks, npartitions=max(1, len(chunks)))
    else:
        bag = db.from_sequence(items, partition_size=partition_size)
    return bag.map_partitions(
        scan_partition_to_journal,
        config.input_location,
        config.profile,
        config.freetext.min_patients,
        journal,
    )


def scan_items(files: list[tuple[str, int]]) -> list[tuple[int, str, int]]:
    """``(key_index, key, size)`` for every listed file: the index is its place in the listing."""
    return [(index, key, size) for index, (key, size) in enumerate(files)]


def listing_table(files: list[tuple[str, int]]) -> pa.Table:
    """``scan_items`` as Arrow columns: the client keeps no Python object per listed file."""
    keys, sizes = (list(column) for column in zip(*files, strict=True)) if files else ([], [])
    return pa.table(
        {
            "key_index": pa.array(np.arange(len(files), dtype=np.int64)),
            "key": pa.array(keys, pa.string()),
            "size": pa.array(sizes, pa.int64()),
        }
    )


#: Listed files held as Python objects at once before they become Arrow columns.
LIST_BATCH = 16_384


def list_table(location: Location) -> pa.Table:
    """``listing_table(storage.list_files(location))``, built ``LIST_BATCH`` files at a time
    and sorted as Arrow columns: the client never holds a Python tuple per listed file.
    (Arrow orders strings by their UTF-8 bytes, which is the order of Python's ``sorted``.)"""
    keys: list[pa.Array] = []
    sizes: list[pa.Array] = []
    batch: list[tuple[str, int]] = []
    for file in storage.iter_files(location):
        batch.append(file)
        if len(batch) >= LIST_BATCH:
            keys.append(pa.array([key for key, _ in batch], pa.string()))
            sizes.append(pa.array([size for _, size in batch], pa.int64()))
            batch.clear()
    keys.append(pa.array([key for key, _ in batch], pa.string()))
    sizes.append(pa.array([size for _, size in batch], pa.int64()))
    del batch
    listed = pa.table({"key": pa.chunked_array(keys, pa.string()), "size": pa.chunked_array(sizes, pa.int64())})
    del keys, sizes
    listed = listed.take(pc.sort_indices(listed, sort_keys=[("key", "ascending")]))
    return pa.table(
        {
            "key_index": pa.array(np.arange(listed.num_rows, dtype=np.int64)),
            "key": listed.column("key"),
            "size": listed.column("size"),
        }
    )


def _rows(table: pa.Table, names: tuple[str, ...]) -> list[tuple[Any, ...]]:
    return list(zip(*(table.column(name).to_pylist() for name in names), strict=True))


VOCABULARY_FILE = "vocabulary.json"


def _scan(
    client: Client,
    config: RunConfig,
    items: pa.Table,
    partition_size: int,
    journal: RunJournal,
    threads: int,
    label: str = "pass 1: scan headers",
) -> tuple[list[str], freetext.WordCounts]:
    """Run pass 1 over ``items`` (``key_index``, ``key`` and ``size`` columns): the inventory
    parts its tasks wrote, and the word counts.

    Each task writes its records to the journal and returns its (token, patient) pairs
    deduplicated and capped at k patients a token, so the client holds at most k patients
    per distinct token and never a Python object per file. The tasks go in a bounded
    window (``task_window``), each run's Arrow IPC bytes made as it is submitted.
    """
    sizes = chunk_sizes(items, partition_size)
    words = freetext.WordCounts(cap=config.freetext.min_patients)
    parts: list[str] = []
    args = (config.input_location, config.profile, config.freetext.min_patients, journal)
    chunks = iter_chunks(items, partition_size)
    window = task_window(threads)
    for _, future in _each_partition(client, scan_partition_to_journal, chunks, sizes, label, config, args, window):
        for summary in future.result():
            if summary.part is not None:
                parts.append(summary.part)
            words.merge(summary.words)
    return parts, words


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


#: How work is cut into tasks: files per task (every task alike), or each task's file
#: count in order (``RunConfig.task_sizes_for``: smaller tasks in the last wave).
Cuts = int | list[int]


def _starts(n: int, cuts: Cuts) -> list[tuple[int, int]]:
    """``(start, length)`` of each task's run of the ``n`` items."""
    if isinstance(cuts, int):
        return [(start, min(cuts, n - start)) for start in range(0, n, cuts)]
    if sum(cuts) != n:
        raise ValueError(f"task sizes add up to {sum(cuts)}, not to the {n} items")
    starts: Sequence[int] = np.concatenate([[0], np.cumsum(cuts[:-1], dtype=np.int64)]).tolist() if cuts else []
    return [(int(start), length) for start, length in zip(starts, cuts, strict=True)]


def partitions(items: list[T], cuts: Cuts) -> list[list[T]]:
    """Consecutive runs of items, ``cuts`` long: one pass-2 task each."""
    return [items[start : start + length] for start, length in _starts(len(items), cuts)]


class KeyWindows:
    """Pass 2's work list, ``(key_index, key)`` rows, held as zstd-compressed Arrow IPC
    blocks (one per batch of the inventory's rows, ``inventory.BATCH_ROWS``) and decoded a
    block at a time as tasks are submitted: at 100,000 files the keys are ~7 MB as Arrow
    columns and a fraction of that compressed, and what the client holds in pass 2 no
    longer grows with them (``docs/scaling.md``). The last block decoded is kept, so the
    consecutive runs of a pass decode each block once."""

    def __init__(self, blocks: list[bytes], counts: list[int]) -> None:
        self._blocks = blocks
        self._ends = np.cumsum(np.asarray(counts, dtype=np.int64))
        self.num_rows = int(self._ends[-1]) if counts else 0
        self._decoded: tuple[int, pa.Table] | None = None
        #: Blocks decoded so far (a count for tests: once each in a pass, not once a task).
        self.decodes = 0

    @classmethod
    def from_batches(cls, batches: Iterable[pa.RecordBatch], done: pa.Array | None = None) -> KeyWindows:
        """The usable rows (no ``error``) of the inventory's ``batches`` not in ``done``."""
        blocks: list[bytes] = []
        counts: list[int] = []
        for batch in batches:
            rows = pa.Table.from_batches([batch])
            rows = rows.filter(pc.is_null(rows.column("error")))
            if done is not None:
                rows = rows.filter(pc.invert(pc.is_in(rows.column("key_index"), value_set=done)))
            if rows.num_rows:
                blocks.append(_ipc_bytes(rows.select(["key_index", "key"]), compression="zstd"))
                counts.append(rows.num_rows)
        return cls(blocks, counts)

    def _block(self, j: int) -> pa.Table:
        if self._decoded is None or self._decoded[0] != j:
            self._decoded = None  # the last block's buffers go before the next one's come
            self._decoded = (j, pa.ipc.open_stream(self._blocks[j]).read_all())
            self.decodes += 1
        return self._decoded[1]

    def slice(self, start: int, length: int) -> pa.Table:
        """Rows ``start`` to ``start + length`` as an Arrow table (as ``pa.Table.slice``)."""
        end = min(start + length, self.num_rows)
        j = int(np.searchsorted(self._ends, start, side="right"))
        pieces: list[pa.Table] = []
        while start < end:
            first = int(self._ends[j - 1]) if j else 0
            take = min(end, int(self._ends[j])) - start
            pieces.append(self._block(j).slice(start - first, take))
            start += take
            j += 1
        if not pieces:
            return pa.table({"key_index": pa.array([], pa.int64()), "key": pa.array([], pa.string())})
        return pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)


#: Pass 2's work: ``(key_index, key)`` items, or the same as the columns of an Arrow table
#: (or of compressed blocks of one, ``KeyWindows``).
Work: TypeAlias = list[Item] | pa.Table | KeyWindows
#: One pass-2 task's share of the work: items, or their columns as Arrow IPC bytes.
Chunk: TypeAlias = list[Item] | bytes


def work_chunks(work: Work, cuts: Cuts) -> list[Chunk]:
    """The work in consecutive runs, ``cuts`` long. A table's runs travel as Arrow IPC
    bytes, so the client's graph holds a few bytes a file instead of a tuple, an int and
    a string."""
    return list(iter_chunks(work, cuts))


def iter_chunks(work: Work, cuts: Cuts) -> Iterator[Chunk]:
    """``work_chunks`` one at a time: a run's bytes are made when its task is submitted."""
    if isinstance(work, list):
        yield from partitions(work, cuts)
        return
    for start, length in _starts(work.num_rows, cuts):
        yield _ipc_bytes(work.slice(start, length))


def chunk_sizes(work: Work, cuts: Cuts) -> list[int]:
    n = len(work) if isinstance(work, list) else work.num_rows
    return [length for _, length in _starts(n, cuts)]


def chunk_items(chunk: Chunk) -> list[Item]:
    """A chunk's ``(key_index, key)`` items (decoded on the worker that runs it)."""
    if not isinstance(chunk, bytes):
        return chunk
    return _rows(pa.ipc.open_stream(chunk).read_all(), ("key_index", "key"))


def _ipc_bytes(table: pa.Table, compression: str | None = None) -> bytes:
    """A slice's rows alone (pickling a slice of an Arrow table would carry all of it)."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def deidentify_partition(
    chunks: list[Chunk],
    source: Location,
    destination: Location,
    identity: IdentityRef | IdentityMap,
    options: ProfileOptions,
    journal: RunJournal,
) -> int:
    """The pass-2 task: de-identify and write its files, then record them in the journal."""
    (chunk,) = chunks
    items = chunk_items(chunk)
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
    items: Work,
    identity: IdentityRef | IdentityMap,
    partition_size: Cuts,
    journal: RunJournal,
) -> db.Bag:
    """Pass 2's graph: each task de-identifies, writes and records one partition of files
    (``partition_size`` files each, or each task's count in order).

    ``identity`` is the broadcast reference: the graph holds its name, not the map, so
    the map travels once per worker however many tasks there are.
    """
    chunks = work_chunks(items, partition_size)
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
    #: Tasks in flight at once (``task_window``).
    window: int = MIN_WINDOW
    #: Key indexes of tasks that could not record their work (the journal's store failed
    #: after its retries): not done, so the next run retries them.
    unrecorded: list[int] = field(default_factory=list)

    def run(self, items: Work, partition_size: Cuts) -> list[int]:
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

    def killing_items(self, items: Work, partition_size: Cuts, label: str) -> list[Item]:
        """Run ``items`` in tasks of ``partition_size``, a bounded window of tasks at a time
        (``task_window``); the items of tasks that killed workers."""
        sizes = chunk_sizes(items, partition_size)
        config = self.config
        args = (config.input_location, config.output_location, self.identity, config.profile, self.journal)
        chunks = iter_chunks(items, partition_size)
        tasks = _each_partition(self.client, deidentify_partition, chunks, sizes, label, config, args, self.window)
        killed: list[Item] = []
        for i, future in tasks:
            if future.status == "error" and isinstance(future.exception(), KilledWorker):
                killed += _items_of_task(items, partition_size, i)
            elif future.status == "error" and storage.is_storage_error(future.exception()):
                log.warning("pass 2: a task could not record %d files (storage error)", sizes[i])
                self.unrecorded.extend(index for index, _ in _items_of_task(items, partition_size, i))
            else:
                future.result()  # anything else (e.g. the journal's store is down) stops the run
        return killed


def _items_of_task(work: Work, partition_size: Cuts, i: int) -> list[Item]:
    """The items of the ``i``-th task of ``work`` cut in runs of ``partition_size``."""
    start, length = _starts(len(work) if isinstance(work, list) else work.num_rows, partition_size)[i]
    if isinstance(work, list):
        return work[start : start + length]
    return _rows(work.slice(start, length), ("key_index", "key"))


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
    copies = table.filter(pc.is_valid(table.column("copy_of"))).column("key_index").to_pylist()
    while True:
        statuses = pass2.journal.statuses(copies) | dict.fromkeys(poison + found, "quarantined")
        retry = inventory.next_copies(table, statuses)
        if not retry:
            return found
        log.info("pass 2b: %d repeated images whose chosen copy was quarantined; trying the next copy", len(retry))
        found += pass2.run(retry, pass2.config.task_sizes_for(len(retry), threads))


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


def run(
    client: Client, config: RunConfig, claim: lock.RunClaim | None = None, check_workers: bool = True
) -> RunSummary:
    """The whole job against an existing client; returns counts, writes tables.

    Runs under ``claim`` (``lock.RunClaim``, held by the caller: the CLI takes it before
    its workers start), or takes one itself for its length: the PRIVATE lock, and the
    unfinished run of the same input and output resumed if PRIVATE has one. The storage
    checks are repeated on a worker first (``check_workers_reach_storage``) unless
    ``check_workers`` is False: the CLI's workers forked from its own process, which
    passed them (``workerenv.serves_from_here``), a round trip off the first task's way.
    """
    source, output, private = config.input_location, config.output_location, config.private_location
    started = time.perf_counter()
    if check_workers:
        check_workers_reach_storage(client, config)
    with _claimed(config, claim) as claim:
        journal, resumed = claim.start()
        storage.remove_partials(output)
        storage.remove_partials(private)
        summary = RunSummary(run_id=journal.run_id, output=config.output, private=config.private, resumed=resumed)
        # a LocalCluster's workers may still be arriving (``Starting.client``): cut for all
        threads = max(total_threads(client), 0 if config.scheduler else config.workers * config.threads_per_worker)

        data: bytes | memoryview | None = journal.load_inventory_file()
        if data is None:
            listing = list_table(source)
            partition_size = config.partition_size_for(listing.num_rows, threads)
            log.info("pass 1: %d files in partitions of %d", listing.num_rows, partition_size)
            parts, words = _scan(client, config, listing, partition_size, journal, threads)
            del listing
            vocabulary = freetext.build_vocabulary(words, config.freetext.min_patients, config.freetext.keep)
            data = _inventory_file(client, config, journal, parts)
            _save_vocabulary(journal, vocabulary)  # before the inventory, which marks pass 1 done
            journal.save_inventory_file(data)
        else:
            vocabulary = _load_vocabulary(journal)
            if storage_failed(inventory.read_columns(data, ["error"])):
                table = _rescan_storage_errors(client, config, identity_mod.read_parquet(data), threads, journal)
                journal.save_inventory(table)
                data = identity_mod.parquet_bytes(table)
                del table

        secret = identity_mod.load_or_create_secret(private)
        rows = inventory.batches(data, identity_mod.MINT_COLUMNS)
        identity = identity_mod.extend(identity_mod.load_crosswalk(private, secret), rows)
        identity_mod.save_crosswalk(private, identity)
        # the workers read the map from the crosswalk just saved: the client is done with it,
        # and of the inventory keeps the columns pass 2 and the commit read
        del identity
        heap.release()
        done_before = None
        if resumed:
            done_before = journal.done_key_indexes()
            summary.already_done = len(done_before)
        table, work, copies = _pass2_inputs(data, done_before)
        summary.files_seen = table.num_rows
        summary.bytes_in = pc.sum(table.column("size")).as_py() or 0
        del data, done_before
        heap.release()
        poison: list[int] = []
        unrecorded: list[int] = []
        if work.num_rows or copies is not None:
            # the vocabulary travels with the map's location, never saved with the crosswalk
            with broadcast_crosswalk(client, private, secret, vocabulary) as identity_ref:
                pass2 = _Pass2(client, config, identity_ref, journal, task_window(threads))
                if work.num_rows:
                    sizes = config.task_sizes_for(work.num_rows, threads)
                    log.info("pass 2: %d files in %d tasks of %d-%d", work.num_rows, len(sizes), min(sizes), max(sizes))
                    poison = pass2.run(work, sizes)
                if copies is not None:
                    poison += _try_next_copies(pass2, copies, poison, threads)
                unrecorded = pass2.unrecorded
        del work, copies
        heap.release()

        done = commit.commit(output, journal, table, poison, unrecorded)
        reviewed = review.build(private, journal.review_folder, journal.run_id, done.review_entries, done.review_rows)
        summary.storage_errors = done.storage_errors
        if not summary.storage_errors:
            journal.finish()  # else the run stays unfinished: the same command resumes it
        storage.remove_partials(output)

    summary.reasons = dict(done.reasons)
    summary.quarantined = sum(done.reasons.values())
    summary.written = done.written
    summary.pixels_cleaned = done.pixels_cleaned
    summary.pixels_flagged = reviewed.flagged
    summary.review_page = review.index_location(private, journal.review_folder)
    summary.patients = done.patients
    summary.studies = done.studies
    summary.seconds = time.perf_counter() - started
    return summary


@contextmanager
def _claimed(config: RunConfig, claim: lock.RunClaim | None) -> Iterator[lock.RunClaim]:
    """The caller's claim on the run's locations, else one held for the block."""
    if claim is None:
        with lock.RunClaim(config.private_location, config.input, config.output) as taken:
            yield taken
        return
    if not claim.of(config.private_location, config.input, config.output):
        raise ValueError("the claim given to pipeline.run is for other locations than its config's")
    yield claim


#: The inventory columns the commit reads, held through pass 2 (its keys are not: ``KeyWindows``).
_KEPT_FOR_COMMIT = ("key_index", "size", "error", "copy_of", "copy_rank")
#: The columns of the copies' rows pass 2b reads (``_try_next_copies``).
_COPY_COLUMNS = ("key_index", "key", "error", "copy_of", "copy_rank")


def _pass2_inputs(data: bytes | memoryview, done: pa.Array | None) -> tuple[pa.Table, KeyWindows, pa.Table | None]:
    """From one read of the inventory's file, a batch of rows at a time: the columns the
    commit reads (``_KEPT_FOR_COMMIT``), pass 2's work list (``KeyWindows``: the keys
    compressed, never whole) and the rows of repeated SOPInstanceUIDs' copies with their
    keys (pass 2b's retries; None when there are none). Each batch is decoded once, not
    once for each of the three (a file saved before copies were ranked has no copies'
    columns)."""
    schema = inventory.schema_of(data)  # the file's footer, parsed once
    names = schema.names
    kept_names = [name for name in _KEPT_FOR_COMMIT if name in names]
    wanted = [name for name in ("key", *_COPY_COLUMNS, *_KEPT_FOR_COMMIT) if name in names]
    kept: list[pa.RecordBatch] = []
    copies: list[pa.RecordBatch] = []

    def each_batch() -> Iterator[pa.RecordBatch]:
        for batch in inventory.batches(data, dict.fromkeys(wanted))():
            kept.append(batch.select(kept_names))
            if "copy_of" in names:
                copies.append(batch.select(list(_COPY_COLUMNS)).filter(pc.is_valid(batch.column("copy_of"))))
            yield batch

    work = KeyWindows.from_batches(each_batch(), done)
    table = pa.Table.from_batches(kept, pa.schema([schema.field(name) for name in kept_names]))
    if not inventory.has_copies(table):
        return table, work, None
    return table, work, pa.Table.from_batches(copies, pa.schema([schema.field(name) for name in _COPY_COLUMNS]))


def _inventory_file(client: Client, config: RunConfig, journal: RunJournal, parts: list[str]) -> memoryview:
    """Pass 1's parts merged into the inventory's Parquet file, its repeated
    SOPInstanceUIDs' copies ranked and labelled (``inventory.rank_copies``,
    ``label_copies``): only the copies' rows are ranked, and the file is rewritten with
    their columns a batch of rows at a time."""
    data = journal.merge_inventory_parts(parts)
    copies = inventory.copy_rows(data)
    if not copies.num_rows:
        return data
    ranked = inventory.rank_copies(copies)
    ranked = inventory.label_copies(ranked, _hash_copies(client, config, ranked))
    return inventory.with_copies(data, ranked)


def client_memory_pool() -> None:
    """The client's Arrow buffers from jemalloc, not pyarrow's default mimalloc.

    The client's steps (merging pass 1's parts, minting, the commit) allocate and free
    many short-lived buffers; mimalloc keeps the pages of freed ones, so the client's RSS
    grew with every batch read (at 100,000 files, minting from the same rows peaked
    ~50 MB higher: ``docs/scaling.md``). Buffers made before keep their own pool. A
    pyarrow built without jemalloc keeps its default. Process-wide, so the CLI sets it
    for its own process; ``run`` leaves a notebook's or a script's pool as it is.

    Freed pages go back to the system at once (jemalloc's decay 0, not after ~1 s): each
    step of minting and the commit frees buffers the size of a column of the archive,
    and kept they added up to a peak that grew with it (minting at 100,000 files: 289 ->
    273 MB; ``docs/scaling.md``). The client's steps allocate rarely, so the cost is small.
    """
    with contextlib.suppress(NotImplementedError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)


def storage_failed(table: pa.Table) -> bool:
    """True when pass 1 could not read some keys (the store failed after its retries)."""
    return pc.any(pc.equal(table.column("error"), metadata.STORAGE_ERROR)).as_py() is True


def _rescan_storage_errors(
    client: Client, config: RunConfig, table: pa.Table, threads: int, journal: RunJournal
) -> pa.Table:
    """A resumed run's pass 1 over the keys the last run could not read, merged in place.

    Every other record stays as it was (ids already minted from it must not move): a
    rescanned file whose SOPInstanceUID an earlier record holds is the duplicate.
    """
    failed = table.filter(pc.equal(table.column("error"), metadata.STORAGE_ERROR))
    items = failed.select(["key_index", "key", "size"])
    partition_size = config.partition_size_for(items.num_rows, threads)
    log.info("pass 1: rescanning %d files the last run could not read", items.num_rows)
    parts, _ = _scan(client, config, items, partition_size, journal, threads, "pass 1: rescan")
    rescanned = journal.read_inventory_parts(parts)
    kept = table.filter(pc.invert(pc.is_in(table.column("key_index"), value_set=rescanned.column("key_index"))))
    held = kept.filter(pc.and_(pc.is_null(kept.column("error")), pc.is_valid(kept.column("sop_instance_uid"))))
    sops = rescanned.column("sop_instance_uid")
    taken = pc.is_in(sops, value_set=held.column("sop_instance_uid")).to_pylist()
    errors = rescanned.column("error").to_pylist()
    seen: set[str] = set()
    for i, sop in enumerate(sops.to_pylist()):
        if errors[i] is None and (taken[i] or sop in seen):
            errors[i] = inventory.DUPLICATE
        elif errors[i] is None:
            seen.add(sop)
    at = rescanned.schema.get_field_index("error")
    rescanned = rescanned.set_column(at, "error", pa.array(errors, pa.string()))
    rescanned = rescanned.select(table.schema.names).cast(table.schema)
    return pa.concat_tables([kept, rescanned]).sort_by("key_index")
