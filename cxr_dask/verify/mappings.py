"""The run's id mappings in the form the MIDI-B validator reads (CBIIT/MIDI_validation_script).

That validator's config names two CSV files, ``uid_mapping_file`` and
``patid_mapping_file``; it reads each with ``pandas.read_csv`` and uses the columns
``id_old`` and ``id_new`` (every value as text). This writes, into DEST:

- ``uid_mapping.csv``: every original Study, Series and SOP Instance UID of the inputs
  the crosswalk knows, and the ``2.25.`` UID the de-identifier put in its place (the
  keyed hash of PRIVATE's secret, recomputed here);
- ``patid_mapping.csv``: every original PatientID and the subject id it became.

Both are PHI (they link research ids to real ones): DEST must not be inside OUTPUT, and
the files are written owner-readable only.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath

import pyarrow.parquet as pq

from cxr_dask import storage
from cxr_dask.errors import ConfigError
from cxr_dask.identity import SECRET_ENV, SECRET_FILE, load_crosswalk
from cxr_dask.storage import Location

UID_MAPPING_FILE = "uid_mapping.csv"
PATID_MAPPING_FILE = "patid_mapping.csv"
_UID_COLUMNS = ("study_instance_uid", "series_instance_uid", "sop_instance_uid")
#: Names that mark a folder as a cxr-dask dataset (OUTPUT), whoever made it.
_DATASET_MARKERS = ("metadata.parquet", "record_list.parquet")


def _secret(private: Location) -> bytes:
    """The run's HMAC key, read only: exporting never creates a secret."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        return from_env.encode()
    if not storage.exists(private, SECRET_FILE):
        raise ConfigError("no secret in the private location (nor in $CXR_DASK_SECRET): run cxr-dask run first")
    return storage.read_bytes(private, SECRET_FILE).decode().strip().encode()


def inside_a_dataset(dest: Location, output: Location | None = None) -> bool:
    """True when ``dest`` is OUTPUT or below it, or below any folder holding a dataset's tables."""
    if output is not None and storage.overlaps(dest, output):
        return True
    if not dest.is_local:
        return False
    folder = os.path.realpath(dest.root)
    while True:
        if any(os.path.exists(os.path.join(folder, marker)) for marker in _DATASET_MARKERS):
            return True
        parent = os.path.dirname(folder)
        if parent == folder:
            return False
        folder = parent


def _original_uids(private: Location) -> dict[str, set[str]]:
    """Every original study/series/SOP UID the runs' inventories saw, by SOP instance."""
    by_sop: dict[str, set[str]] = {}
    for key in storage.list_keys(private, "runs"):
        if posixpath.basename(key) != "inventory.parquet":
            continue
        table = pq.read_table(io.BytesIO(storage.read_bytes(private, key)), columns=list(_UID_COLUMNS))
        for study, series, sop in zip(*(table.column(c).to_pylist() for c in _UID_COLUMNS), strict=True):
            if sop:
                by_sop.setdefault(sop, set()).update(uid for uid in (study, series, sop) if uid)
    return by_sop


def export_mappings(private: Location, dest: Location, output: Location | None = None) -> tuple[int, int]:
    """Write the two mapping CSVs into ``dest``; return (UIDs, patient ids) written."""
    if inside_a_dataset(dest, output):
        raise ConfigError("the destination is inside the dataset (OUTPUT): the mappings are PHI, keep them apart")
    identity = load_crosswalk(private, _secret(private))
    if not identity.patients:
        raise ConfigError("no crosswalk in the private location: run cxr-dask run first")
    originals = _original_uids(private)
    uids: dict[str, str] = {}
    for sop in identity.images:
        for uid in sorted(originals.get(sop, {sop})):
            uids.setdefault(uid, identity.remap_uid(uid))
    patients: dict[str, str] = {}
    for key, (subject, _) in identity.patients.items():
        patient_id = key.split("\x1f", 1)[1]
        patients.setdefault(patient_id, str(subject))
    for name, rows in ((UID_MAPPING_FILE, uids), (PATID_MAPPING_FILE, patients)):
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(("id_old", "id_new"))
        writer.writerows(sorted(rows.items()))
        storage.write_atomic(dest, name, text.getvalue().encode())
        if dest.is_local:
            os.chmod(dest.path(name), 0o600)
    return len(uids), len(patients)
