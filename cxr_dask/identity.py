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
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cxr_dask import storage
from cxr_dask.deid.freetext import Vocabulary
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


@dataclass
class IdentityMap:
    """Real keys to research ids; built on the client, broadcast read-only to workers."""

    uid_key: bytes
    patients: dict[str, tuple[int, int]] = field(default_factory=dict)
    first_dates: dict[str, dt.date | None] = field(default_factory=dict)
    studies: dict[str, tuple[int, int]] = field(default_factory=dict)  # -> (subject, study)
    images: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # -> (dicom, s, st)
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


def _digest(key: bytes, namespace: str, *parts: object) -> bytes:
    message = _SEP.join([namespace, *map(str, parts)]).encode("utf-8", "surrogateescape")
    return hmac.digest(key, message, hashlib.sha256)  # one-shot C path: ~2x hmac.new().digest()


def _mint_int(key: bytes, namespace: str, real: str, bounds: tuple[int, int], taken: set[int]) -> int:
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


def format_dicom_id(raw: bytes) -> str:
    """40 hex digits as five dash-joined groups of 8, as MIMIC-CXR writes dicom_id."""
    t = raw[:20].hex()
    return f"{t[:8]}-{t[8:16]}-{t[16:24]}-{t[24:32]}-{t[32:40]}"


def _mint_dicom_id(key: bytes, sop_uid: str, taken: set[str]) -> str:
    attempt = 0
    while True:
        value = format_dicom_id(_digest(key, "dicom", attempt, sop_uid))
        if value not in taken:
            taken.add(value)
            return value
        attempt += 1


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


def extend(identity: IdentityMap, inventory: pa.Table) -> IdentityMap:
    """Mint ids for every patient, study and image of ``inventory`` not yet known.

    Known keys keep their ids and shift (a later batch never moves an old patient);
    new keys are minted in sorted order so the result does not depend on partitioning.
    """
    # Columns, not row dicts: at 400,000 rows ``to_pylist()`` of the table costs more than
    # minting every id (see bench/scale.py).
    valid = inventory.filter(pc.is_null(inventory.column("error")))
    column = {name: valid.column(name).to_pylist() for name in _EXTEND_COLUMNS}
    patients = [
        patient_key(pid, issuer)
        for pid, issuer in zip(column["patient_id"], column["issuer_of_patient_id"], strict=True)
    ]
    studies = [
        study_key(pk, accession, uid)
        for pk, accession, uid in zip(patients, column["accession_number"], column["study_instance_uid"], strict=True)
    ]
    key = identity.uid_key
    first: dict[str, dt.date | None] = {}
    last: dict[str, dt.date | None] = {}
    for pk, date in zip(patients, column["anchor_date"], strict=True):
        first.setdefault(pk, None)
        last.setdefault(pk, None)
        if date is not None:
            first[pk] = min(first[pk] or date, date)
            last[pk] = max(last[pk] or date, date)

    taken_subjects = {subject for subject, _ in identity.patients.values()}
    for pk in sorted(first):
        if pk in identity.patients:
            continue
        subject = _mint_int(key, "subject", pk, SUBJECT_ID_RANGE, taken_subjects)
        identity.patients[pk] = (subject, shift_days_for(key, pk, first[pk], last[pk]))
        identity.first_dates[pk] = first[pk]

    taken_studies = {study for _, study in identity.studies.values()}
    taken_images = {dicom for dicom, _, _ in identity.images.values()}
    by_study: dict[str, str] = {}
    for sk, pk in zip(studies, patients, strict=True):
        by_study.setdefault(sk, pk)
    for sk in sorted(by_study):
        if sk not in identity.studies:
            subject = identity.patients[by_study[sk]][0]
            identity.studies[sk] = (subject, _mint_int(key, "study", sk, STUDY_ID_RANGE, taken_studies))

    study_of_image: dict[str, str] = {}
    for sop, sk in zip(column["sop_instance_uid"], studies, strict=True):
        study_of_image.setdefault(sop, sk)
    for sop in sorted(study_of_image):
        if sop in identity.images:
            continue
        subject, study = identity.studies[study_of_image[sop]]
        identity.images[sop] = (_mint_dicom_id(key, sop, taken_images), subject, study)
    return identity


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
    """The identity map persisted by earlier runs in PRIVATE (empty on the first run)."""
    identity = IdentityMap(uid_key=secret)
    if not storage.exists(private, f"{CROSSWALK_DIR}/patients.parquet"):
        return identity
    patients = _read_table(private, "patients")
    for r in patients.to_pylist():
        pk = patient_key(r["patient_id"], r["issuer_of_patient_id"])
        identity.patients[pk] = (r["subject_id"], r["shift_days"])
        identity.first_dates[pk] = r["first_date"]
    for r in _read_table(private, "studies").to_pylist():
        identity.studies[r["study_key"]] = (r["subject_id"], r["study_id"])
    for r in _read_table(private, "images").to_pylist():
        identity.images[r["sop_instance_uid"]] = (r["dicom_id"], r["subject_id"], r["study_id"])
    return identity


def save_crosswalk(private: Location, identity: IdentityMap) -> None:
    """Persist the map so later runs and batches keep every assignment."""
    split = [pk.split(_SEP, 1) for pk in identity.patients]
    patients = pa.table(
        {
            "issuer_of_patient_id": [issuer for issuer, _ in split],
            "patient_id": [pid for _, pid in split],
            "subject_id": [v[0] for v in identity.patients.values()],
            "shift_days": [v[1] for v in identity.patients.values()],
            "first_date": [identity.first_dates.get(pk) for pk in identity.patients],
        },
        schema=PATIENTS_SCHEMA,
    )
    studies = pa.table(
        {
            "study_key": list(identity.studies),
            "subject_id": [v[0] for v in identity.studies.values()],
            "study_id": [v[1] for v in identity.studies.values()],
        },
        schema=STUDIES_SCHEMA,
    )
    images = pa.table(
        {
            "sop_instance_uid": list(identity.images),
            "dicom_id": [v[0] for v in identity.images.values()],
            "subject_id": [v[1] for v in identity.images.values()],
            "study_id": [v[2] for v in identity.images.values()],
        },
        schema=IMAGES_SCHEMA,
    )
    for name, table in (("patients", patients), ("studies", studies), ("images", images)):
        storage.write_atomic(private, f"{CROSSWALK_DIR}/{name}.parquet", parquet_bytes(table))


def parquet_bytes(table: pa.Table) -> bytes:
    """A Parquet file in memory, so it can be written in one atomic PUT or rename."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def read_parquet(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file held in memory as a table.

    ``pq.ParquetFile``, not ``pq.read_table``: the latter goes through ``pyarrow.dataset``,
    whose import loads pandas too (some 35 MB of the client's RSS for nothing).
    """
    return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns)


def _read_table(private: Location, name: str) -> pa.Table:
    return read_parquet(storage.read_bytes(private, f"{CROSSWALK_DIR}/{name}.parquet"))
