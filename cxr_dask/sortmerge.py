"""An external merge sort of Arrow rows, so the commit never holds a column of the archive.

Rows come in (``ExternalSort.add``) a part at a time; every ``RUN_ROWS`` of them are
sorted and spilled to a local temporary folder as a Parquet run; the runs are then merged
``FAN_IN`` at a time, ``GROUP_ROWS`` rows of each read at once (more runs than that are
merged into longer runs first). What is held at once is bounded by these three numbers,
whatever the number of rows: ``most_rows_held`` counts it. The sort keys must be unique
and never null (the commit adds each row's place in its input as the last key).

The spilled rows are the dataset's public metadata (no PHI); the folder is the caller's
(``tempfile.TemporaryDirectory``: owner-only, removed when the commit ends or fails).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: Rows sorted and spilled at once.
RUN_ROWS = 16_384
#: Rows read from each run at a time while merging.
GROUP_ROWS = 1_024
#: Runs merged at once.
FAN_IN = 16


class ExternalSort:
    """Rows of ``schema`` sorted by ``keys`` (``[(column, "ascending"), ...]``), held a
    bounded number at a time."""

    def __init__(self, schema: pa.Schema, keys: list[tuple[str, str]], folder: str) -> None:
        self.schema, self.keys, self.folder = schema, keys, folder
        self.names = [name for name, _ in keys]
        self._held: list[pa.Table] = []
        self._held_rows = 0
        self._runs: list[str] = []
        self._spilled = 0
        #: The most rows held at once: the rows waiting to be spilled, or the merge's buffers.
        self.most_rows_held = 0

    def add(self, table: pa.Table) -> None:
        """Take ``table``'s rows; spill a sorted run every ``RUN_ROWS`` rows."""
        if not table.num_rows:
            return
        self._held.append(table.cast(self.schema))
        self._held_rows += table.num_rows
        self._note(self._held_rows)
        if self._held_rows >= RUN_ROWS:
            self._spill()

    def _note(self, rows: int) -> None:
        self.most_rows_held = max(self.most_rows_held, rows)

    def _sorted_held(self) -> pa.Table:
        table = pa.concat_tables(self._held) if self._held else self.schema.empty_table()
        self._held, self._held_rows = [], 0
        return table.sort_by(self.keys)

    def _path(self) -> str:
        self._spilled += 1
        return os.path.join(self.folder, f"run-{self._spilled:06d}.parquet")

    def _spill(self) -> None:
        path = self._path()
        pq.write_table(self._sorted_held(), path, row_group_size=GROUP_ROWS, compression="lz4")
        self._runs.append(path)

    def sorted_batches(self) -> Iterator[pa.Table]:
        """Every row taken, in order, a bounded number at a time (rows held but never
        spilled are sorted in memory: fewer than ``RUN_ROWS``)."""
        if not self._runs:
            table = self._sorted_held()
            for start in range(0, table.num_rows, GROUP_ROWS):
                yield table.slice(start, GROUP_ROWS)
            return
        if self._held_rows:
            self._spill()
        runs = self._runs
        while len(runs) > FAN_IN:  # longer runs first: the merge below reads FAN_IN at once
            longer = []
            for start in range(0, len(runs), FAN_IN):
                path = self._path()
                with pq.ParquetWriter(path, self.schema, compression="lz4") as writer:
                    for batch in self._merge(runs[start : start + FAN_IN]):
                        writer.write_table(batch, row_group_size=GROUP_ROWS)
                for done in runs[start : start + FAN_IN]:
                    os.remove(done)
                longer.append(path)
            runs = longer
        self._runs = runs
        yield from self._merge(runs)

    def _merge(self, paths: list[str]) -> Iterator[pa.Table]:
        """The runs at ``paths`` merged: each time, every buffered row up to the smallest
        last key of the buffers (so no row still unread comes before them), sorted."""
        readers = [pq.ParquetFile(path).iter_batches(batch_size=GROUP_ROWS) for path in paths]
        buffers: list[pa.Table | None] = [_next(reader, self.schema) for reader in readers]
        while True:
            live = {i: buffer for i, buffer in enumerate(buffers) if buffer is not None}
            if not live:
                return
            self._note(sum(buffer.num_rows for buffer in live.values()))
            frontier = min(self._last_key(buffer) for buffer in live.values())
            out = []
            for i, buffer in live.items():
                n = _rows_at_most(buffer, self.names, frontier)
                if n:
                    out.append(buffer.slice(0, n))
                buffers[i] = buffer.slice(n) if n < buffer.num_rows else _next(readers[i], self.schema)
            yield pa.concat_tables(out).sort_by(self.keys)

    def _last_key(self, table: pa.Table) -> tuple[Any, ...]:
        return tuple(table.column(name)[-1].as_py() for name in self.names)


def _next(reader: Iterator[pa.RecordBatch], schema: pa.Schema) -> pa.Table | None:
    for batch in reader:
        if batch.num_rows:
            return pa.Table.from_batches([batch], schema=schema)
    return None


def _rows_at_most(table: pa.Table, names: list[str], key: tuple[Any, ...]) -> int:
    """How many rows of ``table`` (sorted by ``names``) sort at or before ``key``: the
    lexicographic comparison, a column at a time from the last."""
    at_most = pc.less_equal(table.column(names[-1]), key[-1])
    for name, value in zip(reversed(names[:-1]), reversed(key[:-1]), strict=True):
        column = table.column(name)
        at_most = pc.or_(pc.less(column, value), pc.and_(pc.equal(column, value), at_most))
    return int(pc.sum(at_most).as_py() or 0)
