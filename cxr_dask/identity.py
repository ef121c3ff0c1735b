"""Random research identifiers, minted once on the client and stable across runs.

Every id is drawn from an HMAC of the project secret and the real key, probing past ids
already taken, so it looks random, never collides, and a rerun with the same secret and
crosswalk reproduces it. The crosswalk (real <-> random) is PHI: it lives in the
private location only, beside the secret.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import os
import secrets
import uuid
from collections.abc import Callable, ItemsView, Iterable, Iterator, Mapping, ValuesView
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cxr_dask import heap, storage
from cxr_dask.deid.freetext import Vocabulary
from cxr_dask.dicom.layout import format_dicom_id
from cxr_dask.errors import ConfigError
from cxr_dask.storage import Location

SUBJECT_ID_RANGE = (10_000_000, 19_999_999)
STUDY_ID_RANGE = (50_000_000, 59_999_999)
#: The first study of every patient lands in one of these years: inside 2100-2200 with
#: headroom, 10 years below for an earlier study that turns up in a later batch and 30
#: above for the studies still to come (a patient's shift never changes once minted).
FIRST_STUDY_YEARS = (2110, 2169)
#: Shifts are whole weeks, so weekdays (and, roughly, seasons) survive.
SHIFT_MULTIPLE_DAYS = 7
#: Used only for a patient none of whose files has a readable date.
FALLBACK_ANCHOR = dt.date(2000, 1, 1)

SECRET_ENV = "CXR_DASK_SECRET"
SECRET_FILE = "secret.key"
CROSSWALK_DIR = "crosswalk"
_SEP = "\x1f"  # unit separator: cannot occur in DICOM text values
#: The inventory columns minting reads.
_EXTEND_COLUMNS = (
    "patient_id",
    "issuer_of_patient_id",
    "accession_number",
    "study_instance_uid",
    "sop_instance_uid",
    "anchor_date",
)
_MINT_SCHEMA = (*([pa.string()] * 5), pa.date32(), pa.string())

PATIENTS_SCHEMA = pa.schema(
    [
        ("issuer_of_patient_id", pa.string()),
        ("patient_id", pa.string()),
        ("subject_id", pa.int64()),
        ("shift_days", pa.int64()),
        ("first_date", pa.date32()),
    ]
)
STUDIES_SCHEMA = pa.schema([("study_key", pa.string()), ("subject_id", pa.int64()), ("study_id", pa.int64())])
IMAGES_SCHEMA = pa.schema(
    [
        ("sop_instance_uid", pa.string()),
        ("dicom_id", pa.string()),
        ("subject_id", pa.int64()),
        ("study_id", pa.int64()),
    ]
)


def patient_key(patient_id: str, issuer: str | None) -> str:
    """A patient is PatientID within its IssuerOfPatientID."""
    return f"{issuer or ''}{_SEP}{patient_id}"


def study_key(patient: str, accession: str | None, study_instance_uid: str) -> str:
    """A study is an accession (one report) of a patient, else its StudyInstanceUID."""
    if accession:
        return f"acc{_SEP}{patient}{_SEP}{accession}"
    return f"uid{_SEP}{study_instance_uid}"


class FileKeys(NamedTuple):
    """What the identity map knows a file by: its patient, study and image keys."""

    patient: str
    study: str
    sop: str


def file_keys(text: Callable[[str], str]) -> FileKeys:
    """The keys of a data set whose attribute ``keyword`` reads as ``text(keyword)``
    (stripped; "" when absent): the one derivation pass 2 and verify share."""
    patient = patient_key(text("PatientID"), text("IssuerOfPatientID"))
    study = study_key(patient, text("AccessionNumber"), text("StudyInstanceUID"))
    return FileKeys(patient, study, text("SOPInstanceUID"))


#: What a missing key's ``KeyError`` says: never the key, which is a real identifier (a
#: patient id, an accession number, a SOPInstanceUID) and would reach a traceback.
NOT_A_KEY = "not in the identity map (the key is not shown: it is PHI)"


class KeyTable(Mapping[str, Any]):
    """A read-mostly map from string keys to fixed-width tuples, held as Arrow columns.

    The identity map holds one entry per image of the archive; as dicts of Python
    tuples it cost ~400 bytes an image on the client (and on every worker). Here a key
    costs its UTF-8 bytes, each value its Arrow width, and the index 16 bytes: a sorted
    array of 64-bit keyed hashes and the row of each. New entries wait in a small dict
    until ``compact`` folds them into the columns. Iteration follows insertion order.
    """

    def __init__(self, types: tuple[pa.DataType, ...], scalar: bool = False) -> None:
        self._types = types
        self._scalar = scalar  # one column, whose values are returned bare (not 1-tuples)
        self._keys: list[pa.Array] = []
        self._columns: list[list[pa.Array]] = [[] for _ in types]
        self._rows = 0
        self._hashes = np.empty(0, dtype=np.uint64)
        self._order = np.empty(0, dtype=np.int64)
        self._indexed = 0  # rows the index covers
        self._pending: dict[str, tuple[Any, ...]] = {}

    # -- building ---------------------------------------------------------------------
    def append_columns(self, keys: pa.Array | pa.ChunkedArray, columns: list[pa.Array] | list[pa.ChunkedArray]) -> None:
        """Add entries whose keys are not in the table yet (the caller knows they are new)."""
        self._flush()
        self._append(keys, columns)

    def _append(self, keys: pa.Array | pa.ChunkedArray, columns: list[pa.Array] | list[pa.ChunkedArray]) -> None:
        if not len(keys):
            return
        self._keys.append(_one_chunk(keys).cast(pa.string()))
        for store, column, kind in zip(self._columns, columns, self._types, strict=True):
            store.append(_one_chunk(column).cast(kind))
        self._rows += len(keys)

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self:
            raise KeyError(f"{key!r} is already in the table: a minted value never changes")
        self._pending[key] = (value,) if self._scalar else tuple(value)
        if len(self._pending) >= _PENDING_MAX:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        keys = pa.array(list(self._pending), pa.string())
        values = list(zip(*self._pending.values(), strict=True))
        self._pending = {}
        self._append(keys, [pa.array(list(v), kind) for v, kind in zip(values, self._types, strict=True)])

    def compact(self) -> KeyTable:
        """Fold pending entries into the columns and index every row; returns self."""
        self._flush()
        if self._indexed < self._rows:
            chunk = self._chunked_keys().slice(self._indexed)
            hashes = np.fromiter((_key_hash(k) for k in _iter_values(chunk)), np.uint64, count=len(chunk))
            rows = np.arange(self._indexed, self._rows, dtype=np.int64)
            hashes = np.concatenate([self._hashes, hashes])
            rows = np.concatenate([self._order, rows])
            order = np.argsort(hashes, kind="stable")
            self._hashes, self._order, self._indexed = hashes[order], rows[order], self._rows
        if len(self._keys) > 1:  # one chunk each: cheap row access
            self._keys = [pa.concat_arrays(self._keys)]
            self._columns = [[pa.concat_arrays(store)] if store else [] for store in self._columns]
        return self

    # -- reading ----------------------------------------------------------------------
    def _chunked_keys(self) -> pa.ChunkedArray:
        return pa.chunked_array(self._keys, pa.string())

    def column(self, i: int) -> pa.ChunkedArray:
        """The ``i``-th value column over every entry, pending ones included."""
        self._flush()
        return pa.chunked_array(self._columns[i], self._types[i])

    def keys_array(self) -> pa.ChunkedArray:
        self._flush()
        return self._chunked_keys()

    def _row(self, key: str) -> int | None:
        if self._indexed < self._rows:
            self.compact()
        h = np.uint64(_key_hash(key))
        at = int(np.searchsorted(self._hashes, h, side="left"))
        keys = self._keys[0] if self._keys else None
        while at < len(self._hashes) and self._hashes[at] == h:
            row = int(self._order[at])
            if keys is not None and keys[row].as_py() == key:
                return row
            at += 1
        return None

    def rows_of(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The row of each of ``keys`` (every one in the table, none null), from the hash
        index: a batch's keys as Python strings and numpy arrays the batch's size, where
        ``pc.index_in`` builds a hash table of every key of the table for each call."""
        self.compact()
        hashes = np.fromiter((_key_hash(k) for k in _iter_values(_chunked(keys))), np.uint64, count=len(keys))
        at = np.minimum(np.searchsorted(self._hashes, hashes, side="left"), max(len(self._hashes) - 1, 0))
        rows = self._order[at] if len(self._order) else np.zeros(len(keys), dtype=np.int64)
        same = pc.equal(self._chunked_keys().take(pa.array(rows)), _chunked(keys))
        for i in np.flatnonzero(~np.asarray(pc.fill_null(same, False), dtype=bool)):  # a shared hash
            key = keys[int(i)].as_py()
            row = self._row(key) if key is not None else None
            if row is None:
                raise KeyError(NOT_A_KEY)
            rows[i] = row
        return rows

    def __getitem__(self, key: str) -> Any:
        if key in self._pending:
            value = self._pending[key]
        else:
            row = self._row(key) if isinstance(key, str) else None
            if row is None:
                raise KeyError(NOT_A_KEY)
            value = tuple(store[0][row].as_py() for store in self._columns)
        return value[0] if self._scalar else value

    def __contains__(self, key: object) -> bool:
        return key in self._pending or (isinstance(key, str) and self._row(key) is not None)

    def __len__(self) -> int:
        return self._rows + len(self._pending)

    def __iter__(self) -> Iterator[str]:
        yield from _iter_values(self._chunked_keys())
        yield from list(self._pending)

    def items(self) -> ItemsView[str, Any]:
        return _Items(self)

    def values(self) -> ValuesView[Any]:
        return _Values(self)

    def _iter_rows(self) -> Iterator[tuple[str, Any]]:
        """(key, value) in insertion order, a batch of Python objects at a time."""
        self._flush()
        keys = self._chunked_keys()
        columns = [pa.chunked_array(store, kind) for store, kind in zip(self._columns, self._types, strict=True)]
        for start in range(0, self._rows, _BATCH):
            batch = [c.slice(start, _BATCH).to_pylist() for c in (keys, *columns)]
            for key, *value in zip(*batch, strict=True):
                yield key, (value[0] if self._scalar else tuple(value))

    @property
    def nbytes(self) -> int:
        """Bytes of the columns and the index (pending entries not counted)."""
        arrays = [*self._keys, *(a for store in self._columns for a in store)]
        return sum(a.nbytes for a in arrays) + self._hashes.nbytes + self._order.nbytes

    def __getstate__(self) -> dict[str, Any]:
        self.compact()
        return dict(self.__dict__)


class _Items(ItemsView):
    _mapping: KeyTable

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        yield from self._mapping._iter_rows()


class _Values(ValuesView):
    _mapping: KeyTable

    def __iter__(self) -> Iterator[Any]:
        for _, value in self._mapping._iter_rows():
            yield value


#: Python objects a table or a minting loop holds at once before they become columns.
_BATCH = 65_536
_PENDING_MAX = _BATCH


def _chunked(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    return values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])


def _one_chunk(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array of ``values``: a chunked array's only chunk as it is (``combine_chunks``
    copies even one chunk: the images' keys and ids, a second time, as they joined the map)."""
    if not isinstance(values, pa.ChunkedArray):
        return values
    return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()


def _key_hash(key: str) -> int:
    """A 64-bit hash of a key that every process computes alike (``hash()`` is salted)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big")


def _iter_values(column: pa.ChunkedArray) -> Iterator[Any]:
    for start in range(0, len(column), _BATCH):
        yield from column.slice(start, _BATCH).to_pylist()


def _patients_table() -> KeyTable:
    return KeyTable((pa.int64(), pa.int64()))  # -> (subject, shift days)


def _first_dates_table() -> KeyTable:
    return KeyTable((pa.date32(),), scalar=True)


def _studies_table() -> KeyTable:
    return KeyTable((pa.int64(), pa.int64()))  # -> (subject, study)


def _images_table() -> KeyTable:
    return KeyTable((pa.string(), pa.int64(), pa.int64()))  # -> (dicom_id, subject, study)


@dataclass
class IdentityMap:
    """Real keys to research ids; built on the client, broadcast read-only to workers.

    Each map is a ``KeyTable`` (Arrow columns); any ``Mapping`` with the same values works
    too (tests build small ones as dicts)."""

    uid_key: bytes
    patients: Mapping[str, tuple[int, int]] = field(default_factory=_patients_table)
    first_dates: Mapping[str, dt.date | None] = field(default_factory=_first_dates_table)
    studies: Mapping[str, tuple[int, int]] = field(default_factory=_studies_table)  # -> (subject, study)
    images: Mapping[str, tuple[str, int, int]] = field(default_factory=_images_table)  # -> (dicom, s, st)
    #: The tokens free text may keep (deid/freetext.py), built by the run from pass 1 and
    #: broadcast with the map; None: a file is cleaned with the shipped vocabulary alone.
    vocabulary: Vocabulary | None = None

    def remap_uid(self, uid: str) -> str:
        """The same original UID always gives the same new ``2.25.`` UID (keyed hash)."""
        digest = _digest(self.uid_key, "uid", uid)
        return f"2.25.{uuid.UUID(bytes=digest[:16], version=4).int}"

    @property
    def n_patients(self) -> int:
        return len(self.patients)

    def compact(self) -> IdentityMap:
        """Index every map (before a broadcast: workers then only read)."""
        for table in (self.patients, self.first_dates, self.studies, self.images):
            if isinstance(table, KeyTable):
                table.compact()
        return self


def _digest(key: bytes, namespace: str, *parts: object) -> bytes:
    message = _SEP.join([namespace, *map(str, parts)]).encode("utf-8", "surrogateescape")
    return hmac.digest(key, message, hashlib.sha256)  # one-shot C path: ~2x hmac.new().digest()


#: Values minted in one id space held as a Python set before they join the sorted array
#: (a set costs ~75 bytes a value, the array 8: the set stays this size at any archive's).
TAKEN_SET_MAX = 16_384


class _Taken:
    """The values already used in one id space: those of the map as a sorted array, those
    minted now as a set, folded into the array every ``TAKEN_SET_MAX`` values. Quacks
    like the ``set`` ``_mint_int`` probes."""

    #: The most values the set held at once in the last ``_Taken`` (``tests/test_identity``).
    most_held = 0

    def __init__(self, existing: np.ndarray) -> None:
        self._existing = np.sort(existing.astype(np.int64))
        self._new: set[int] = set()
        _Taken.most_held = 0

    def __contains__(self, value: object) -> bool:
        if value in self._new:
            return True
        if not len(self._existing):  # a first run: nothing minted before
            return False
        at = int(np.searchsorted(self._existing, cast(int, value)))
        return at < len(self._existing) and int(self._existing[at]) == value

    def add(self, value: int) -> None:
        self._new.add(value)
        _Taken.most_held = max(_Taken.most_held, len(self._new))
        if len(self._new) >= TAKEN_SET_MAX:
            folded = np.fromiter(self._new, np.int64, count=len(self._new))
            self._existing = np.sort(np.concatenate([self._existing, folded]))
            self._new = set()

    def __len__(self) -> int:
        return len(self._existing) + len(self._new)


def _mint_int(key: bytes, namespace: str, real: str, bounds: tuple[int, int], taken: set[int] | _Taken) -> int:
    low, high = bounds
    span = high - low + 1
    if len(taken) >= span:
        raise ConfigError(f"the {namespace} id range is exhausted")
    attempt = 0
    while True:
        value = low + int.from_bytes(_digest(key, namespace, attempt, real)[:8], "big") % span
        if value not in taken:
            taken.add(value)
            return value
        attempt += 1


def _mint_dicom_id(key: bytes, sop_uid: str, taken: set[int] | _Taken) -> str:
    """``taken`` holds the first 64 bits of every dicom_id in use: distinct prefixes make
    distinct ids, and the client holds 8 bytes an image instead of a 40-digit string."""
    attempt = 0
    while True:
        raw = _digest(key, "dicom", attempt, sop_uid)
        prefix = int.from_bytes(raw[:8], "big", signed=True)
        if prefix not in taken:
            taken.add(prefix)
            return format_dicom_id(raw)
        attempt += 1


def _dicom_prefixes(dicom_ids: pa.ChunkedArray) -> np.ndarray:
    """The first 64 bits of each dicom_id (``format_dicom_id``'s first 16 hex digits)."""
    first, second = (pc.utf8_slice_codeunits(dicom_ids, a, b) for a, b in ((0, 8), (9, 17)))
    head = pc.binary_join_element_wise(first, second, "")
    return np.fromiter((int(h, 16) for h in _iter_values(head)), np.uint64, count=len(head)).view(np.int64)


def shift_days_for(key: bytes, patient: str, first_date: dt.date | None, last_date: dt.date | None = None) -> int:
    """Whole weeks that move the patient's first date into a year in FIRST_STUDY_YEARS.

    The year is drawn low enough that the patient's last known date stays within 2200
    too (a patient whose studies span 30 years starts no later than 2169).
    """
    digest = int.from_bytes(_digest(key, "shift", patient)[:8], "big")
    anchor = first_date or FALLBACK_ANCHOR
    span_years = ((last_date or anchor) - anchor).days // 365 + 1
    latest_first_year = max(FIRST_STUDY_YEARS[0], FIRST_STUDY_YEARS[1] - span_years)
    year = FIRST_STUDY_YEARS[0] + digest % (latest_first_year - FIRST_STUDY_YEARS[0] + 1)
    # 7..357 keeps the target a margin away from the year's ends, so rounding the shift to
    # whole weeks (at most 3 days) never leaves the chosen year.
    day_of_year = 7 + (digest >> 16) % 351
    target = dt.date(year, 1, 1) + dt.timedelta(days=day_of_year)
    weeks = round((target - anchor).days / SHIFT_MULTIPLE_DAYS)
    return weeks * SHIFT_MULTIPLE_DAYS


#: Where minting reads the inventory from: a table, or a callable that yields its rows
#: (the columns ``MINT_COLUMNS`` at least) in key order, a batch at a time, each call anew.
Batches = Callable[[], Iterable[pa.RecordBatch | pa.Table]]
#: The inventory columns minting reads.
MINT_COLUMNS = (*_EXTEND_COLUMNS, "error")


def extend(identity: IdentityMap, inventory: pa.Table | Batches) -> IdentityMap:
    """Mint ids for every patient, study and image of ``inventory`` not yet known.

    Known keys keep their ids and shift (a later batch never moves an old patient);
    new keys are minted in sorted order so the result does not depend on partitioning.
    The inventory is read three times, a batch of rows at a time (patients, then
    studies, then images): besides one batch, the client holds what each step reduces
    the rows to (one row per patient, study or image: the keys the map holds anyway),
    never the inventory's columns whole. Only the new keys become Python objects, a
    batch at a time.
    """
    global rows_held
    rows_held = 0
    batches = _batches_of(inventory) if isinstance(inventory, pa.Table) else inventory
    key = identity.uid_key

    # patients: first and last dates, then a subject and a shift for each new one
    dates = _reduce(batches, _first_and_last_dates, _merge_dates)
    dates = _new_only(dates.sort_by("patient"), "patient", identity.patients)
    taken_subjects = _Taken(_int_values(identity.patients, 0))
    minted: list[tuple[str, int, int, dt.date | None]] = []
    names = ("patient", "anchor_date_min", "anchor_date_max")
    for pk, first, last in _iter_rows(dates, names):
        subject = _mint_int(key, "subject", pk, SUBJECT_ID_RANGE, taken_subjects)
        minted.append((pk, subject, shift_days_for(key, pk, first, last), first))
        if len(minted) >= _BATCH:
            _add_patients(identity, minted)
    _add_patients(identity, minted)
    del dates
    heap.release()  # each step's leftovers back before the next step's peak (``cxr_dask.heap``)

    # studies: the subject of each study's first row (every patient is minted by now)
    def study_subjects(keys: pa.Table) -> pa.Table:
        first = _first_of(keys, "study", "patient")
        return pa.table(
            {
                "study": first.column("study"),
                "subject": _lookup_column(identity.patients, first.column("patient_first"), 0),
            }
        )

    studies = _new_only(_first_sorted(batches, study_subjects, "study"), "study", identity.studies)
    taken_studies = _Taken(_int_values(identity.studies, 1))
    study_ids = [
        _mint_int(key, "study", sk, STUDY_ID_RANGE, taken_studies) for sk in _iter_values(studies.column("study"))
    ]
    _append(identity, "studies", studies.column("study"), [studies.column("subject"), pa.array(study_ids, pa.int64())])
    del study_ids, studies
    heap.release()

    # images: the subject and study of each SOPInstanceUID's first row
    def image_studies(keys: pa.Table) -> pa.Table:
        first = _first_of(keys, "sop", "study")
        subject, study_id = _lookup_columns(identity.studies, first.column("study_first"), (0, 1))
        return pa.table({"sop": first.column("sop"), "subject": subject, "study_id": study_id})

    images = _new_only(_first_sorted(batches, image_studies, "sop"), "sop", identity.images)
    taken_images = _Taken(_image_prefixes(identity.images))
    dicom_ids: list[pa.Array] = []
    for start in range(0, images.num_rows, _BATCH):
        sops = images.column("sop").slice(start, _BATCH).to_pylist()
        dicom_ids.append(pa.array([_mint_dicom_id(key, sop, taken_images) for sop in sops], pa.string()))
        del sops
    # appended once, the sorted columns as they are: no batch's copy, no re-concatenation
    columns = [pa.chunked_array(dicom_ids, pa.string()), *(images.column(n) for n in ("subject", "study_id"))]
    _append(identity, "images", images.column("sop"), columns)
    del images, columns, dicom_ids
    return identity.compact()


def _batches_of(table: pa.Table) -> Batches:
    needed = table.select(list(MINT_COLUMNS))
    return lambda: needed.to_batches(_BATCH)


#: Most rows a step of minting reduces at once before it folds them into what it holds
#: (below the smallest archive measured, so what a batch costs is the same at every size).
MINT_BATCH = 16_384
#: The most inventory rows ``extend`` held at once in its last call (``tests/test_identity``).
rows_held = 0


def _reduce(
    batches: Batches, step: Callable[[pa.Table], pa.Table], merge: Callable[[pa.Table, pa.Table], pa.Table]
) -> pa.Table:
    """``step`` of each batch's usable rows (their keys: ``_inventory_keys``), folded with
    ``merge`` in key order; ``step`` of no rows when the inventory has none."""
    global rows_held
    held: pa.Table | None = None
    for batch in batches():
        for start in range(0, batch.num_rows, MINT_BATCH):
            rows = batch.slice(start, MINT_BATCH)
            rows_held = max(rows_held, rows.num_rows)
            error = rows.column("error")
            valid = rows if error.null_count == len(error) else rows.filter(pc.is_null(error))
            reduced = step(
                _inventory_keys(pa.Table.from_batches([valid]) if isinstance(valid, pa.RecordBatch) else valid)
            )
            held = reduced if held is None else merge(held, reduced)
    if held is None:
        held = step(_inventory_keys(_empty_inventory()))
    return held


def _reduced(batches: Batches, step: Callable[[pa.Table], pa.Table]) -> pa.Table:
    """``step`` of each batch's usable rows, the results chained in key order, not merged
    (``_first_sorted`` merges them once: folding each batch into what was held made a
    growing copy, and its hash tables, per batch)."""
    parts: list[pa.Table] = []

    def keep(held: pa.Table, more: pa.Table) -> pa.Table:
        if not parts:
            parts.append(held)
        parts.append(more)
        return more

    last = _reduce(batches, step, keep)
    return pa.concat_tables(parts) if parts else last


def _first_sorted(batches: Batches, step: Callable[[pa.Table], pa.Table], by: str) -> pa.Table:
    """Of ``_reduced(batches, step)``, the first row of each distinct non-null ``by`` (rows
    in key order), sorted by ``by``: one stable sort, no hash table (``pc.unique`` and
    ``index_in``).

    The sorted copy is made a column at a time, each unsorted column let go once its
    copy is made (the reduced rows are made here, so nothing else holds them): the
    images' step holds one copy of the keys and a column more, not the rows twice over
    (and thrice with the null filter's copy, now made only when a key is null)."""
    table = _reduced(batches, step)
    if table.column(by).null_count:
        table = table.filter(pc.is_valid(table.column(by)))
    order = pc.array_sort_indices(table.column(by))  # a stable sort: the first row of a key stays first
    names, schema = table.column_names, table.schema
    columns = [table.column(name) for name in names]
    del table
    for i, column in enumerate(columns):
        columns[i] = column.take(order)
        del column
    ordered = pa.table(columns, schema=schema)
    del columns, order
    column = ordered.column(by)
    if len(column) < 2:
        return ordered
    changed = pc.not_equal(column.slice(1), column.slice(0, len(column) - 1))
    if pc.all(changed).as_py():
        return ordered  # no key twice (images: the usual case)
    first = pa.concat_arrays([pa.array([True]), changed.combine_chunks()])
    return ordered.filter(first)


def _empty_inventory() -> pa.Table:
    return pa.table({name: pa.array([], f.type) for name, f in zip(MINT_COLUMNS, _MINT_SCHEMA, strict=True)})


def _inventory_keys(valid: pa.Table) -> pa.Table:
    """The patient, study and image key of each row, as ``patient_key``/``study_key`` make
    them (a null prints as ``None``, an absent issuer as empty), and its anchor date."""
    c = valid.column
    patient = pc.binary_join_element_wise(
        pc.fill_null(c("issuer_of_patient_id"), ""), pc.fill_null(c("patient_id"), "None"), _SEP
    )
    accession = c("accession_number")
    by_accession = pc.fill_null(pc.not_equal(accession, ""), False)
    study = pc.if_else(
        by_accession,
        pc.binary_join_element_wise("acc", patient, pc.fill_null(accession, ""), _SEP),
        pc.binary_join_element_wise("uid", pc.fill_null(c("study_instance_uid"), "None"), _SEP),
    )
    return pa.table({"patient": patient, "study": study, "sop": c("sop_instance_uid"), "anchor_date": c("anchor_date")})


def _groups(column: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The distinct values (in order of first appearance), each row's group and each
    group's first row. Compute kernels and numpy, not ``Table.group_by``: that loads
    pyarrow's Acero and dataset libraries (~20 MB of the client's RSS)."""
    distinct = pc.unique(column)
    group = pc.index_in(column, value_set=distinct).to_numpy()
    _, first_row = np.unique(group, return_index=True)
    return distinct, group, first_row


def _first_of(keys: pa.Table, by: str, value: str) -> pa.Table:
    """Each distinct ``by`` and the ``value`` of its first row, as columns ``by`` and
    ``{value}_first``."""
    rows = keys.filter(pc.is_valid(keys.column(by)))
    distinct, _, first_row = _groups(rows.column(by))
    return pa.table({by: distinct, f"{value}_first": rows.column(value).take(pa.array(first_row))})


def _first_and_last_dates(keys: pa.Table) -> pa.Table:
    """Each patient with the first and last of its rows' anchor dates (null when none)."""
    return _date_range(keys.column("patient"), keys.column("anchor_date"), keys.column("anchor_date"))


def _merge_dates(held: pa.Table, more: pa.Table) -> pa.Table:
    """Two batches' ``_first_and_last_dates`` as one, the patients in order of first appearance."""
    both = pa.concat_tables([held, more])
    return _date_range(both.column("patient"), both.column("anchor_date_min"), both.column("anchor_date_max"))


def _date_range(patient: pa.ChunkedArray, lows: pa.ChunkedArray, highs: pa.ChunkedArray) -> pa.Table:
    distinct, group, _ = _groups(patient)
    top, bottom = np.iinfo(np.int32).max, np.iinfo(np.int32).min
    first = np.full(len(distinct), top, dtype=np.int32)
    last = np.full(len(distinct), bottom, dtype=np.int32)
    np.minimum.at(first, group, pc.fill_null(pc.cast(lows, pa.int32()), top).to_numpy())
    np.maximum.at(last, group, pc.fill_null(pc.cast(highs, pa.int32()), bottom).to_numpy())
    return pa.table(
        {
            "patient": distinct,
            "anchor_date_min": pa.array(first, pa.int32(), mask=first == top).cast(pa.date32()),
            "anchor_date_max": pa.array(last, pa.int32(), mask=last == bottom).cast(pa.date32()),
        }
    )


def _new_only(table: pa.Table, column: str, known: Mapping[str, Any]) -> pa.Table:
    """The rows of ``table`` whose key ``known`` does not hold yet."""
    if not len(known):
        return table
    if isinstance(known, KeyTable):
        present = pc.is_in(table.column(column), value_set=known.keys_array())
    else:
        present = pa.array([k in known for k in _iter_values(table.column(column))], pa.bool_())
    return table.filter(pc.invert(present))


def _int_values(table: Mapping[str, Any], i: int) -> np.ndarray:
    if isinstance(table, KeyTable):
        return table.column(i).to_numpy()
    return np.array([value[i] for value in table.values()], dtype=np.int64)


def _image_prefixes(images: Mapping[str, tuple[str, int, int]]) -> np.ndarray:
    if isinstance(images, KeyTable):
        return _dicom_prefixes(images.column(0))
    return _dicom_prefixes(pa.chunked_array([pa.array([d for d, _, _ in images.values()], pa.string())]))


def _lookup_column(table: Mapping[str, Any], keys: pa.ChunkedArray, i: int) -> pa.Array:
    """Value ``i`` of each key (every key is in ``table``)."""
    return _lookup_columns(table, keys, (i,))[0]


def _lookup_columns(table: Mapping[str, Any], keys: pa.ChunkedArray, columns: tuple[int, ...]) -> list[pa.Array]:
    """Values ``columns`` of each key (every key is in ``table``), the rows found once
    for all the columns, from the table's own hash index (``KeyTable.rows_of``): not
    ``pc.index_in``, whose hash table of every key of ``table`` (at 100,000 files, the
    studies' ~68,000) was built for each batch and each column."""
    if isinstance(table, KeyTable):
        rows = pa.array(table.rows_of(keys))
        return [table.column(i).take(rows).combine_chunks() for i in columns]
    return [pa.array([table[k][i] for k in _iter_values(keys)], pa.int64()) for i in columns]


def _append(identity: IdentityMap, name: str, keys: pa.ChunkedArray | pa.Array, columns: list[pa.Array]) -> None:
    table = getattr(identity, name)
    keys = _one_chunk(keys)
    if isinstance(table, KeyTable):
        table.append_columns(keys, columns)
        table.compact()
        return
    for k, *value in zip(keys.to_pylist(), *(c.to_pylist() for c in columns), strict=True):
        table[k] = value[0] if len(value) == 1 else tuple(value)  # a plain dict (tests)


def _add_patients(identity: IdentityMap, minted: list[tuple[str, int, int, dt.date | None]]) -> None:
    if not minted:
        return
    pk, subject, shift, first = (list(v) for v in zip(*minted, strict=True))
    keys = pa.array(pk, pa.string())
    _append(identity, "patients", keys, [pa.array(subject, pa.int64()), pa.array(shift, pa.int64())])
    _append(identity, "first_dates", keys, [pa.array(first, pa.date32())])
    minted.clear()


def _iter_rows(table: pa.Table, names: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
    """The rows of ``table``'s ``names`` columns as tuples, a batch of Python objects at a time."""
    for start in range(0, table.num_rows, _BATCH):
        batch = table.slice(start, _BATCH)
        yield from zip(*(batch.column(n).to_pylist() for n in names), strict=True)


# --- the secret -------------------------------------------------------------------------


def load_or_create_secret(private: Location) -> bytes:
    """The HMAC key: ``$CXR_DASK_SECRET``, else PRIVATE/secret.key, else a new one there."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        if len(from_env) < 16:
            raise ConfigError(f"{SECRET_ENV} must be at least 16 characters")
        return from_env.encode()
    if storage.exists(private, SECRET_FILE):
        text = storage.read_bytes(private, SECRET_FILE).decode().strip()
        if len(text) < 16:
            raise ConfigError("the secret file in the private location is too short")
        return text.encode()
    text = secrets.token_hex(32)
    storage.write_atomic(private, SECRET_FILE, (text + "\n").encode())
    if private.is_local:
        os.chmod(private.path(SECRET_FILE), 0o600)
    return text.encode()


# --- the crosswalk ----------------------------------------------------------------------


def load_crosswalk(private: Location, secret: bytes) -> IdentityMap:
    """The identity map persisted by earlier runs in PRIVATE (empty on the first run),
    as Arrow columns straight from the Parquet files."""
    if not storage.exists(private, f"{CROSSWALK_DIR}/patients.parquet"):
        return IdentityMap(uid_key=secret)
    patients = _read_table(private, "patients").cast(PATIENTS_SCHEMA)
    keys = pc.binary_join_element_wise(
        pc.fill_null(patients.column("issuer_of_patient_id"), ""), patients.column("patient_id"), _SEP
    )
    patient_table, first_dates = _patients_table(), _first_dates_table()
    patient_table.append_columns(keys, [patients.column("subject_id"), patients.column("shift_days")])
    first_dates.append_columns(keys, [patients.column("first_date")])
    studies = _read_table(private, "studies").cast(STUDIES_SCHEMA)
    study_table = _studies_table()
    study_table.append_columns(studies.column("study_key"), [studies.column(n) for n in ("subject_id", "study_id")])
    images = _read_table(private, "images").cast(IMAGES_SCHEMA)
    image_table = _images_table()
    columns = [images.column(n) for n in ("dicom_id", "subject_id", "study_id")]
    image_table.append_columns(images.column("sop_instance_uid"), columns)
    identity = IdentityMap(secret, patient_table, first_dates, study_table, image_table)
    return identity.compact()


def save_crosswalk(private: Location, identity: IdentityMap) -> None:
    """Persist the map so later runs and batches keep every assignment."""
    patient_keys = _keys_of(identity.patients)
    split = pc.split_pattern(patient_keys, _SEP, max_splits=1)
    patients = pa.table(
        {
            "issuer_of_patient_id": pc.list_element(split, 0),
            "patient_id": pc.list_element(split, 1),
            "subject_id": _column_of(identity.patients, 0, pa.int64()),
            "shift_days": _column_of(identity.patients, 1, pa.int64()),
            "first_date": _dates_of(identity, patient_keys),
        },
        schema=PATIENTS_SCHEMA,
    )
    studies = pa.table(
        {
            "study_key": _keys_of(identity.studies),
            "subject_id": _column_of(identity.studies, 0, pa.int64()),
            "study_id": _column_of(identity.studies, 1, pa.int64()),
        },
        schema=STUDIES_SCHEMA,
    )
    images = pa.table(
        {
            "sop_instance_uid": _keys_of(identity.images),
            "dicom_id": _column_of(identity.images, 0, pa.string()),
            "subject_id": _column_of(identity.images, 1, pa.int64()),
            "study_id": _column_of(identity.images, 2, pa.int64()),
        },
        schema=IMAGES_SCHEMA,
    )
    for name, table in (("patients", patients), ("studies", studies), ("images", images)):
        # straight into the file on a local disk (the same bytes: one row group, as before)
        storage.write_atomic_stream(private, f"{CROSSWALK_DIR}/{name}.parquet", _parquet_writer(table))


def _parquet_writer(table: pa.Table) -> Callable[[Any], None]:
    return lambda handle: pq.write_table(table, handle, compression="zstd")


def _keys_of(table: Mapping[str, Any]) -> pa.ChunkedArray:
    if isinstance(table, KeyTable):
        return table.keys_array()
    return pa.chunked_array([pa.array(list(table), pa.string())])


def _column_of(table: Mapping[str, Any], i: int, kind: pa.DataType) -> pa.ChunkedArray:
    if isinstance(table, KeyTable):
        return table.column(i)
    return pa.chunked_array([pa.array([value[i] for value in table.values()], kind)])


def _dates_of(identity: IdentityMap, patient_keys: pa.ChunkedArray) -> pa.ChunkedArray:
    """Each patient's first date, in the patients' order (null where none is known)."""
    dates = identity.first_dates
    if isinstance(dates, KeyTable):
        at = pc.index_in(patient_keys, value_set=dates.keys_array())
        return pc.take(dates.column(0), at)
    return pa.chunked_array([pa.array([dates.get(k) for k in _iter_values(patient_keys)], pa.date32())])


def parquet_bytes(table: pa.Table) -> bytes:
    """A Parquet file in memory, so it can be written in one atomic PUT or rename."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def read_parquet(data: bytes | memoryview, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file held in memory as a table.

    ``pq.ParquetFile``, not ``pq.read_table``: the latter goes through ``pyarrow.dataset``,
    whose import loads pandas too (some 35 MB of the client's RSS for nothing).
    """
    return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns)


def _read_table(private: Location, name: str) -> pa.Table:
    return read_parquet(storage.read_bytes(private, f"{CROSSWALK_DIR}/{name}.parquet"))
