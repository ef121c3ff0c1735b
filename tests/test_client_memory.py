"""The client holds no Python object per file: pass 1 and pass 2 send back summaries, the
journal's parts are merged as Arrow columns. Counts, never times or bytes of RSS."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import cxr_dask
from cxr_dask import commit, journal, metadata, pipeline
from cxr_dask.config import build_config
from cxr_dask.deid.freetext import WordCounts
from cxr_dask.dicom import layout
from cxr_dask.storage import Location


def _items(root: str) -> list[tuple[int, str, int]]:
    files = sorted((str(p.relative_to(root)), p.stat().st_size) for p in Path(root).rglob("*.dcm"))
    return pipeline.scan_items(files)


def test_a_pass_one_task_writes_its_records_and_sends_back_a_summary(corpus, tmp_path) -> None:
    items = _items(corpus.root)
    private = tmp_path / "private"
    config = build_config({}, {"input": corpus.root, "output": str(tmp_path / "out"), "private": str(private)})
    run = journal.RunJournal(Location(str(private)), "R1")
    (summary,) = pipeline.scan_partition_to_journal(items, config.input_location, config.profile, 10, run)
    assert summary.files == len(items) > 20
    # what travels back besides the capped word counts is the same few bytes for any partition
    bare = len(pickle.dumps(pipeline.ScanSummary(summary.part, summary.files, WordCounts(cap=10))))
    assert bare < 300
    assert all(len(seen) <= 10 for seen in summary.words.patients.values())
    table = run.read_inventory_parts([summary.part])
    assert table.column("key_index").to_pylist() == [index for index, _, _ in items]
    assert table.schema.names[:3] == ["key_index", "key", "size"]


def test_the_journal_keeps_one_audit_row_per_key_and_a_finished_one_first(tmp_path) -> None:
    run = journal.RunJournal(Location(str(tmp_path)), "R2")
    failed = metadata.audit_row(1, metadata.STORAGE_ERROR, reason=metadata.STORAGE_ERROR)
    run.write_part([0, 1], [metadata.audit_row(0, "written"), failed], [])
    run.write_part([1, 2], [metadata.audit_row(1, "written"), metadata.audit_row(2, "quarantined")], [])
    run.write_part([2], [metadata.audit_row(2, "written")], [])  # a task re-run elsewhere
    audit = run.read_audit()
    assert isinstance(audit, pa.Table)
    assert audit.column("key_index").to_pylist() == [0, 1, 2]
    assert audit.column("status").to_pylist()[:2] == ["written", "written"]
    assert run.done_key_indexes().to_pylist() == [0, 1, 2]
    assert run.statuses([1]) == {1: "written"}


def test_the_review_page_gets_only_the_rows_it_reads(tmp_path) -> None:
    run = journal.RunJournal(Location(str(tmp_path)), "R3")
    rows = [metadata.audit_row(i, "written", dicom_id=f"d{i}") for i in range(50)]
    rows[7]["pixel_regions_text"] = 2
    run.write_part(list(range(50)), rows, [])
    done = commit.Committed()
    commit._count(run.read_audit(), pa.array([], pa.int64()), done)
    assert [row["key_index"] for row in done.review_rows] == [7]


def test_record_and_study_lists_match_the_paths_of_one_image(tmp_path) -> None:
    table = pa.table(
        {"dicom_id": ["b", "a", "c"], "subject_id": [12345678, 12345678, 10000001], "study_id": [50000002, 50000001, 5]}
    )
    records = metadata.record_list(table).to_pylist()
    assert [r["path"] for r in records] == [
        layout.image_path(r["subject_id"], r["study_id"], r["dicom_id"]) for r in table.to_pylist()
    ]
    studies = metadata.study_list(table).to_pylist()
    assert [s["path"] for s in studies] == [
        layout.study_folder(s, st) for s, st in [(10000001, 5), (12345678, 50000001), (12345678, 50000002)]
    ]


def test_the_client_modules_load_no_image_libraries() -> None:
    """Importing what the client runs (pipeline, metadata, review, cli) loads neither OpenCV,
    scipy's image filters nor onnxruntime: only the workers' pixel modules need them."""
    code = (
        "import sys, cxr_dask.pipeline, cxr_dask.review, cxr_dask.metadata, cxr_dask.cli\n"
        "from cxr_dask.deid.pixels import REGION_CLASSES, PixelReport, PixelResult, RegionRecord\n"
        "print(sorted(m for m in ('cv2', 'scipy.ndimage', 'onnxruntime') if m in sys.modules))"
    )
    root = str(Path(cxr_dask.__file__).parents[1])  # this checkout's package, not an installed one
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"
    # and the worker's entry point does load them, so the check above can fail
    code = "import sys\nfrom cxr_dask.deid import pixels\npixels.clean\nprint('cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "True"


def test_the_work_lists_travel_as_arrow_bytes_not_a_tuple_a_file() -> None:
    files = [(f"c{i // 100:04d}/p{i}/s{i}/{i}.dcm", 15_000) for i in range(2_000)]
    listing = pipeline.listing_table(files)
    assert listing.column("key_index").to_pylist() == list(range(2_000))
    chunks = pipeline.work_chunks(listing.select(["key_index", "key"]), 200)
    assert len(chunks) == 10 and all(isinstance(chunk, bytes) for chunk in chunks)
    per_file = sum(len(chunk) for chunk in chunks) / len(files)
    assert per_file < 2 * len(files[-1][0])  # the key's bytes and two ints, not Python objects
    assert pipeline.chunk_items(chunks[3]) == [(i, key) for i, (key, _) in enumerate(files)][600:800]
    assert pipeline.chunk_sizes(listing, 600) == [600, 600, 600, 200]


def test_the_cli_client_never_imports_pandas() -> None:
    """pyarrow imports pandas on its first conversion unless told it is absent (~35 MB)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from cxr_dask import cluster\n"
        "cluster.arrow_without_pandas()\n"
        "from cxr_dask import identity, journal, pipeline\n"
        "import pyarrow as pa\n"
        "table = pipeline.listing_table([('a.dcm', 1), ('b.dcm', 2)])\n"
        "identity.read_parquet(identity.parquet_bytes(pa.Table.from_pylist(table.to_pylist())))\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
        "import pandas\n"
        "assert len(table.to_pandas()) == 2\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]


def test_the_commit_reads_the_audit_parts_a_window_at_a_time(tmp_path, monkeypatch) -> None:
    """The commit holds the audit rows of one window of parts at a time, never all of them
    (main read every part at once), and writes the same rows as a whole-table commit."""
    from cxr_dask.inventory import INVENTORY_SCHEMA

    private, output = Location(str(tmp_path / "private")), Location(str(tmp_path / "out"))
    run = journal.RunJournal(private, "R4")
    n, size = 2_000, 50

    def ids(k: int) -> dict[str, object]:
        return {"dicom_id": f"{k * 7919 % n:05d}", "subject_id": 10_000_000 + k % 97, "study_id": 50_000_000 + k // 3}

    def meta(k: int) -> dict[str, object]:
        return {name: None for name in metadata.METADATA_SCHEMA.names} | ids(k)

    for first in range(0, n, size):
        keys = list(range(first, first + size))
        run.write_part(keys, [metadata.audit_row(k, "written", **ids(k)) for k in keys], [meta(k) for k in keys])
    # a task re-run over two keys of one part, and keys pass 1 turned away after the last part
    run.write_part([110, 111], [metadata.audit_row(110, "quarantined", reason="not_dicom")], [])
    errors = [None] * n + ["not_dicom"] * 10
    columns = {"key_index": list(range(n + 10)), "size": [1] * (n + 10), "error": errors}
    inventory = pa.table(
        {
            f.name: pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n + 10, f.type)
            for f in INVENTORY_SCHEMA
        }
    )
    held: list[int] = []
    whole_read = journal.RunJournal._audit_table

    def counting(self, keys, columns=None):
        table = whole_read(self, keys, columns)
        if columns is None:
            held.append(table.num_rows)
        return table

    monkeypatch.setattr(journal.RunJournal, "_audit_table", counting)
    monkeypatch.setattr(commit, "BATCH_ROWS", 300)
    done = commit.commit(output, run, inventory, [n + 9], [])
    assert len(held) >= n // (300 + size) and max(held) <= 300 + size, held
    assert done.written == n and done.reasons == {"not_dicom": 9, "worker_crash": 1}

    audit = pq.read_table(private.path(f"{run.folder}/audit.parquet"))
    whole = commit.complete_audit(inventory, run.read_audit(), [n + 9], [], {})
    assert held[-1] == n  # the counter sees a whole read: main's commit held this at once
    assert audit.equals(whole)
    assert audit.column("status").to_pylist()[110:112] == ["written", "written"]  # the finished row of the first part
    tables = {name: pq.read_table(output.path(name)) for name in ("metadata.parquet", "study_list.parquet")}
    rows = pa.Table.from_pylist([meta(k) for k in range(n)], schema=metadata.METADATA_SCHEMA)
    assert tables["metadata.parquet"].equals(rows.sort_by(commit.METADATA_ORDER))
    pairs = sorted({(row["subject_id"], row["study_id"]) for row in rows.to_pylist()})
    assert tables["study_list.parquet"].to_pylist() == [
        {"subject_id": s, "study_id": st, "path": layout.study_folder(s, st)} for s, st in pairs
    ]


def test_the_commit_sorts_the_metadata_rows_a_bounded_number_at_a_time(tmp_path, monkeypatch) -> None:
    """The commit merges the metadata parts by an external sort (``sortmerge``): it holds
    at most a run's rows or the merge's buffers, never every row (main read every part and
    the earlier table whole, then sorted them), and writes the rows a whole-table commit
    writes: the first row of an image written twice, this run's row over an earlier one."""
    import pyarrow.compute as pc

    from cxr_dask import sortmerge
    from cxr_dask.inventory import INVENTORY_SCHEMA

    private, output = Location(str(tmp_path / "private")), Location(str(tmp_path / "out"))
    run = journal.RunJournal(private, "R5")
    n, size = 1_500, 50

    def meta(k: int, view: str = "PA") -> dict[str, object]:
        row: dict[str, object] = {name: None for name in metadata.METADATA_SCHEMA.names}
        return row | {
            "dicom_id": f"{k * 7919 % 10_007:05d}",
            "subject_id": 10_000_000 + k // 3 % 37,  # a study has one subject, as ids are minted
            "study_id": 50_000_000 + k // 3,
            "ViewPosition": view,
        }

    # an earlier run's table: images 1,200-1,999, which this run writes again from 1,200 on
    earlier = pa.Table.from_pylist([meta(k, "earlier") for k in range(1_200, 2_000)], schema=metadata.METADATA_SCHEMA)
    output.fs.makedirs(output.root, exist_ok=True)
    pq.write_table(earlier.sort_by(commit.METADATA_ORDER), output.path(commit.METADATA_FILE))
    for first in range(0, n, size):
        keys = list(range(first, first + size))
        run.write_part(keys, [metadata.audit_row(k, "written") for k in keys], [meta(k) for k in keys])
    # a task re-run over keys 100 and 150 (its part listed after the first over 100-149):
    # an image's row again, which must not replace the first one
    run.write_part([100, 150], [metadata.audit_row(k, "written") for k in (100, 150)], [meta(100, "AP")])
    inventory = pa.table({f.name: pa.nulls(n, f.type) for f in INVENTORY_SCHEMA}).set_column(
        0, "key_index", pa.array(range(n), pa.int64())
    )
    # the expected rows: every part's, the first of each image (the re-run's row is not kept)
    rows = pa.concat_tables(run.metadata_parts())
    seen: set[str] = set()
    first = [i for i, d in enumerate(rows.column("dicom_id").to_pylist()) if not (d in seen or seen.add(d))]
    fresh = rows.take(first)
    kept = earlier.filter(pc.invert(pc.is_in(earlier.column("dicom_id"), value_set=fresh.column("dicom_id"))))
    expected = pa.concat_tables([kept, fresh]).sort_by(commit.METADATA_ORDER)

    monkeypatch.setattr(sortmerge, "RUN_ROWS", 200)
    monkeypatch.setattr(sortmerge, "GROUP_ROWS", 16)
    monkeypatch.setattr(sortmerge, "FAN_IN", 3)  # 12 runs: merged into longer runs first
    monkeypatch.setattr(commit, "BATCH_ROWS", 128)
    done = commit.commit(output, run, inventory, [], [])

    total = n + 1 + earlier.num_rows
    assert 0 < done.most_metadata_rows_held <= 200 + 128 < total  # a run's rows and one more read
    assert (done.written, done.patients, done.studies) == (n, 37, n // 3)
    table = pq.read_table(output.path(commit.METADATA_FILE))
    assert table.equals(expected)
    assert (
        table.filter(pc.equal(table.column("dicom_id"), meta(100)["dicom_id"])).column("ViewPosition")[0].as_py()
        == "PA"
    )
    assert pq.ParquetFile(output.path(commit.METADATA_FILE)).metadata.num_row_groups == -(-expected.num_rows // 128)
    pairs = sorted({(row["subject_id"], row["study_id"]) for row in expected.to_pylist()})
    assert pq.read_table(output.path(commit.STUDY_LIST_FILE)).to_pylist() == [
        {"subject_id": s, "study_id": st, "path": layout.study_folder(s, st)} for s, st in pairs
    ]
    assert pq.read_table(output.path(commit.RECORD_LIST_FILE)).column("dicom_id").equals(expected.column("dicom_id"))


def test_a_run_keeps_a_bounded_window_of_tasks_in_flight(client, small_workspace, monkeypatch) -> None:
    """Both passes submit their tasks a window at a time (``pipeline.task_window``): the
    scheduler never holds more unfinished tasks of the run than the window, however many
    tasks the passes have (main submitted each pass's every task in one graph)."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    from tests.utils import run

    class InFlight(SchedulerPlugin):
        """Counts the passes' tasks the scheduler holds unfinished, and every one it saw."""

        def __init__(self) -> None:
            self.unfinished: set[object] = set()
            self.seen: set[object] = set()
            self.most = 0

        def transition(self, key, start, finish, *args, **kwargs) -> None:
            name = key if isinstance(key, str) else str(key[0])
            if "scan_partition_to_journal" not in name and "deidentify_partition" not in name:
                return
            self.seen.add(key)
            if finish in ("memory", "erred", "released", "forgotten"):
                self.unfinished.discard(key)
            else:
                self.unfinished.add(key)
            self.most = max(self.most, len(self.unfinished))

    monkeypatch.setattr(pipeline, "MIN_WINDOW", 3)
    monkeypatch.setattr(pipeline, "WINDOW_PER_THREAD", 1)  # 2 threads: a window of 3 tasks
    counter = InFlight()
    scheduler = client.cluster.scheduler
    scheduler.add_plugin(counter, name="in-flight")
    try:
        summary = run(client, small_workspace, partition_size=1)
    finally:
        scheduler.remove_plugin(name="in-flight")
    assert summary.written > 10
    assert len(counter.seen) >= 2 * summary.written  # a task a file in each pass
    assert 1 <= counter.most <= 3, counter.most


def test_pass_two_holds_its_keys_compressed_and_decodes_each_block_once() -> None:
    """Pass 2's work list (``pipeline.KeyWindows``): the keys compressed a batch of the
    inventory's rows at a time, each run of a task the same rows as the table's slice."""
    files = [
        (f"c{i // 100:04d}/PATIENT_{i // 3}_MRN{i // 3:08d}/2001-01-01_ACC{i // 3}/PA_{i}.dcm", 1) for i in range(5_000)
    ]
    errors = pa.array(["bad" if i % 10 == 3 else None for i in range(5_000)], pa.string())
    table = pipeline.listing_table(files).append_column("error", errors)
    done = pa.array(list(range(0, 5_000, 7)), pa.int64())
    work = pipeline.KeyWindows.from_batches(table.to_batches(max_chunksize=1_024), done)
    usable = table.filter(pc.is_null(table.column("error")))
    usable = usable.filter(pc.invert(pc.is_in(usable.column("key_index"), value_set=done)))
    assert work.num_rows == usable.num_rows
    held = sum(len(block) for block in work._blocks)
    assert held < usable.column("key").nbytes / 3  # the keys' bytes are not held as they are
    sizes = pipeline.chunk_sizes(work, 300)
    chunks = list(pipeline.iter_chunks(work, 300))
    assert [len(pipeline.chunk_items(chunk)) for chunk in chunks] == sizes
    items = [item for chunk in chunks for item in pipeline.chunk_items(chunk)]
    assert items == list(zip(usable.column("key_index").to_pylist(), usable.column("key").to_pylist(), strict=True))
    assert work.decodes == len(work._blocks) == 5  # once each, not once a task
    assert pipeline._items_of_task(work, 300, 4) == items[1_200:1_500]


def test_a_run_never_reads_the_inventory_keys_whole(client, small_workspace, monkeypatch) -> None:
    """The inventory is never read whole: pass 2's set-up reads it once, a batch at a time."""
    from cxr_dask import inventory
    from tests.utils import run

    read, batches = inventory.read_columns, inventory.batches
    asked: list[list[str]] = []
    key_reads: list[int] = []  # each read of the inventory's file, a batch at a time, with its keys

    def spy(data, columns):
        asked.append(list(columns))
        return read(data, columns)

    def batches_spy(data, columns=None):
        reader = batches(data, columns)
        names = list(columns) if columns is not None else ["key"]

        def counted():
            if "key" in names:
                key_reads.append(1)
            return reader()

        return counted

    monkeypatch.setattr(inventory, "read_columns", spy)
    monkeypatch.setattr(inventory, "batches", batches_spy)
    monkeypatch.setattr(inventory, "BATCH_ROWS", 7)  # several blocks of keys in a small run
    summary = run(client, small_workspace, partition_size=5)
    assert summary.written > 10
    # pass 2's set-up decodes the file once, a batch at a time, for the commit's columns,
    # the keys and the copies (main read the commit's columns whole, then the keys again)
    assert asked == []
    assert len(key_reads) == 1


def test_the_client_loads_arrow_with_jemalloc_that_gives_freed_pages_back() -> None:
    """``heap.load_arrow``: jemalloc as the C++ default pool (Parquet's reader and writer
    allocate from it, not from the pool ``set_memory_pool`` sets) with decay 0 from the
    start; the environment is given back (no worker inherits it); a user's choice wins."""
    script = (
        "import os, sys\n"
        "from cxr_dask import heap\n"
        "assert heap.load_arrow()\n"
        "assert not heap.load_arrow()  # loaded already: its pools are chosen\n"
        "assert not set(heap.CLIENT_ARROW_ENV) & set(os.environ)\n"
        "import pyarrow as pa, pyarrow.compute as pc\n"
        "print(pa.default_memory_pool().backend_name)\n"
        "def anon():\n"
        "    status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "    return int(status['RssAnon'].split()[0]) * 1024\n"
        "base = pa.array(range(20_000), pa.int64())\n"
        "held = [pc.add(base, i) for i in range(600)]  # ~96 MB from the main thread's arena\n"
        "before = anon()\n"
        "size = sum(a.nbytes for a in held)\n"
        "del held\n"
        "print(round((before - anon()) / size, 2))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    backend, returned = done.stdout.split()
    assert backend == "jemalloc"
    assert float(returned) > 0.9  # pyarrow's own decay setting leaves ~40% held (the main arena's)
    chosen = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cxr_dask import heap; heap.load_arrow(); import pyarrow as pa\n"
            "print(pa.default_memory_pool().backend_name)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"},
    )
    assert chosen.stdout.split() == ["system"], chosen.stderr[-500:]
