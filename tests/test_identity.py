"""Identity invariants: ranges, uniqueness, determinism, stability across runs and batches."""

from __future__ import annotations

import datetime as dt
import os
import re
import stat

import pyarrow as pa
import pytest

from cxr_dask import identity as ident
from cxr_dask.errors import ConfigError
from cxr_dask.inventory import INVENTORY_SCHEMA
from cxr_dask.storage import Location

SECRET = b"0123456789abcdef-test-secret"
DICOM_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


def inventory(rows: list[dict]) -> pa.Table:
    full = []
    for index, row in enumerate(rows):
        record = dict.fromkeys(INVENTORY_SCHEMA.names)
        record.update(key_index=index, key=f"k{index}", size=1, issuer_of_patient_id="", accession_number="")
        record.update(row)
        full.append(record)
    return pa.Table.from_pylist(full, schema=INVENTORY_SCHEMA)


def corpus(n_patients: int, studies: int = 2, images: int = 2, prefix: str = "P") -> pa.Table:
    rows = []
    for p in range(n_patients):
        for s in range(studies):
            for i in range(images):
                rows.append(
                    {
                        "patient_id": f"{prefix}{p}",
                        "accession_number": f"A{prefix}{p}-{s}",
                        "study_instance_uid": f"1.2.3.{p}.{s}",
                        "sop_instance_uid": f"1.2.3.{p}.{s}.{i}.{prefix}",
                        "anchor_date": dt.date(1995 + p % 20, 1 + s, 10),
                    }
                )
    return inventory(rows)


def build(table: pa.Table, base: ident.IdentityMap | None = None) -> ident.IdentityMap:
    return ident.extend(base or ident.IdentityMap(uid_key=SECRET), table)


def test_ids_are_in_range_unique_and_well_formed():
    identity = build(corpus(2000))
    subjects = [s for s, _ in identity.patients.values()]
    studies = [st for _, st in identity.studies.values()]
    dicom_ids = [d for d, _, _ in identity.images.values()]
    assert len(subjects) == 2000 and len(set(subjects)) == 2000
    assert all(10_000_000 <= s <= 19_999_999 for s in subjects)
    assert len(studies) == 4000 and len(set(studies)) == 4000
    assert all(50_000_000 <= st <= 59_999_999 for st in studies)
    assert len(dicom_ids) == 8000 and len(set(dicom_ids)) == 8000
    assert all(DICOM_ID.match(d) for d in dicom_ids)


def test_every_image_of_a_study_shares_its_ids():
    identity = build(corpus(5))
    for sop, (_, subject, study) in identity.images.items():
        patient = f"P{sop.split('.')[3]}"
        assert identity.patients[ident.patient_key(patient, "")][0] == subject
        assert (
            identity.studies[ident.study_key(ident.patient_key(patient, ""), f"A{patient}-{sop.split('.')[4]}", "")][1]
            == study
        )


def test_same_inputs_give_same_ids_whatever_the_row_order():
    table = corpus(50)
    shuffled = table.take(list(reversed(range(table.num_rows))))
    a, b = build(table), build(shuffled)
    assert a.patients == b.patients and a.studies == b.studies and a.images == b.images


def test_another_secret_gives_other_ids():
    a = build(corpus(20))
    b = ident.extend(ident.IdentityMap(uid_key=b"another-secret-of-16+chars"), corpus(20))
    assert a.patients != b.patients


def test_shift_is_whole_weeks_and_puts_first_study_in_2100s():
    identity = build(corpus(300))
    for pk, (_, shift) in identity.patients.items():
        first = identity.first_dates[pk]
        assert shift % 7 == 0
        shifted = first + dt.timedelta(days=shift)
        assert 2100 <= shifted.year <= 2199
        assert shifted.weekday() == first.weekday()


def test_a_long_history_still_ends_before_2200():
    rows = [
        {
            "patient_id": f"L{p}",
            "study_instance_uid": f"{p}.{y}",
            "sop_instance_uid": f"{p}.{y}.1",
            "anchor_date": dt.date(1960 + y, 6, 1),
        }
        for p in range(200)
        for y in (0, 60)
    ]
    identity = build(inventory(rows))
    for pk, (_, shift) in identity.patients.items():
        last = dt.date(2020, 6, 1) + dt.timedelta(days=shift)
        assert (identity.first_dates[pk] + dt.timedelta(days=shift)).year >= 2100 and last.year <= 2200


def test_shift_uses_earliest_date_of_the_patient_across_files():
    table = inventory(
        [
            {
                "patient_id": "X",
                "study_instance_uid": "1.1",
                "sop_instance_uid": "1.1.1",
                "anchor_date": dt.date(2010, 5, 1),
            },
            {
                "patient_id": "X",
                "study_instance_uid": "1.2",
                "sop_instance_uid": "1.2.1",
                "anchor_date": dt.date(2001, 2, 3),
            },
            {"patient_id": "X", "study_instance_uid": "1.3", "sop_instance_uid": "1.3.1", "anchor_date": None},
        ]
    )
    identity = build(table)
    pk = ident.patient_key("X", "")
    assert identity.first_dates[pk] == dt.date(2001, 2, 3)
    assert len(identity.studies) == 3  # no accession: one study per StudyInstanceUID


def test_patient_without_any_date_still_gets_a_shift():
    identity = build(inventory([{"patient_id": "Y", "study_instance_uid": "9", "sop_instance_uid": "9.1"}]))
    ((_, shift),) = identity.patients.values()
    assert (ident.FALLBACK_ANCHOR + dt.timedelta(days=shift)).year in range(2100, 2200)


def test_issuer_separates_patients_with_the_same_id():
    table = inventory(
        [
            {
                "patient_id": "123",
                "issuer_of_patient_id": "HOSP_A",
                "study_instance_uid": "1",
                "sop_instance_uid": "1.1",
            },
            {
                "patient_id": "123",
                "issuer_of_patient_id": "HOSP_B",
                "study_instance_uid": "2",
                "sop_instance_uid": "2.1",
            },
        ]
    )
    assert len(build(table).patients) == 2


def test_quarantined_rows_get_no_ids():
    table = inventory([{"patient_id": "Z", "study_instance_uid": "1", "sop_instance_uid": "1.1", "error": "not_dicom"}])
    identity = build(table)
    assert not identity.patients and not identity.images


def test_second_batch_keeps_old_assignments_and_never_reuses_ids(tmp_path):
    private = Location(str(tmp_path / "private"))
    first = build(corpus(100))
    ident.save_crosswalk(private, first)
    reloaded = ident.load_crosswalk(private, SECRET)
    assert reloaded.patients == first.patients
    assert reloaded.studies == first.studies and reloaded.images == first.images
    before = (dict(reloaded.patients), dict(reloaded.studies), dict(reloaded.images))

    # New studies of old patients (P0..P49, 3rd study) and brand-new patients (Q*).
    old_patients_new_studies = inventory(
        [
            {
                "patient_id": f"P{p}",
                "accession_number": f"NEW-{p}",
                "study_instance_uid": f"9.9.{p}",
                "sop_instance_uid": f"9.9.{p}.1",
                "anchor_date": dt.date(1980, 1, 1),  # earlier than the known first date
            }
            for p in range(50)
        ]
    )
    second = ident.extend(reloaded, pa.concat_tables([old_patients_new_studies, corpus(100, prefix="Q")]))
    for pk, value in before[0].items():
        assert second.patients[pk] == value  # same subject_id and the same shift
    for sk, value in before[1].items():
        assert second.studies[sk] == value
    for sop, value in before[2].items():
        assert second.images[sop] == value
    subjects = [s for s, _ in second.patients.values()]
    studies = [st for _, st in second.studies.values()]
    dicom_ids = [d for d, _, _ in second.images.values()]
    assert len(set(subjects)) == len(subjects) == 200
    assert len(set(studies)) == len(studies) == 200 + 200 + 50
    assert len(set(dicom_ids)) == len(dicom_ids)
    for p in range(50):
        subject, _ = second.patients[ident.patient_key(f"P{p}", "")]
        new_study = second.studies[ident.study_key(ident.patient_key(f"P{p}", ""), f"NEW-{p}", "")]
        assert new_study[0] == subject


def test_crosswalk_round_trips_through_memory_filesystem():
    private = Location("memory://cxr-dask-test/private")
    identity = build(corpus(10))
    ident.save_crosswalk(private, identity)
    assert ident.load_crosswalk(private, SECRET).images == identity.images


def test_minting_probes_past_taken_values_and_refuses_an_exhausted_range():
    taken = {1, 2}
    assert ident._mint_int(SECRET, "t", "k", (1, 3), taken) == 3
    with pytest.raises(ConfigError):
        ident._mint_int(SECRET, "t", "k2", (1, 3), taken)


def test_uid_remap_is_keyed_stable_and_valid():
    a = ident.IdentityMap(uid_key=SECRET)
    b = ident.IdentityMap(uid_key=b"a-different-secret-key")
    uid = "1.2.840.113619.2.55.3.604688119.868.1249050624.12"
    assert a.remap_uid(uid) == a.remap_uid(uid)
    assert a.remap_uid(uid) != a.remap_uid(uid + "3")
    assert a.remap_uid(uid) != b.remap_uid(uid)
    new = a.remap_uid(uid)
    assert new.startswith("2.25.") and len(new) <= 64
    assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", new)


def test_secret_is_created_once_private_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv(ident.SECRET_ENV, raising=False)
    private = Location(str(tmp_path / "vault"))
    first = ident.load_or_create_secret(private)
    assert len(first) >= 32
    mode = os.stat(tmp_path / "vault" / ident.SECRET_FILE).st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert ident.load_or_create_secret(private) == first


def test_secret_from_environment_wins_and_must_be_long(tmp_path, monkeypatch):
    private = Location(str(tmp_path / "vault"))
    monkeypatch.setenv(ident.SECRET_ENV, "x" * 20)
    assert ident.load_or_create_secret(private) == b"x" * 20
    assert not (tmp_path / "vault" / ident.SECRET_FILE).exists()
    monkeypatch.setenv(ident.SECRET_ENV, "short")
    with pytest.raises(ConfigError):
        ident.load_or_create_secret(private)


def test_ids_and_shifts_of_a_key_never_change_with_the_map_s_form():
    """Pinned from the dict-based map that minted the crosswalks already out there: a key
    gets the same subject, shift, study and dicom_id from the Arrow-column map."""
    identity = build(corpus(3))
    pk = ident.patient_key("P1", "")
    assert identity.patients[pk] == (18846335, 58163)
    assert identity.studies[ident.study_key(pk, "AP1-0", "")] == (18846335, 58252664)
    assert identity.images["1.2.3.1.0.1.P"] == ("3e61da6f-712f7e38-c4e3c7f3-d09c54ef-20d061b9", 18846335, 58252664)


def test_key_table_finds_every_key_through_hash_collisions_and_pickles(monkeypatch):
    import pickle

    monkeypatch.setattr(ident, "_key_hash", lambda key: len(key) % 3)  # most keys collide
    table = ident.KeyTable((pa.string(), pa.int64()))
    table.append_columns(
        pa.array([f"k{i}" for i in range(50)]), [pa.array([f"v{i}" for i in range(50)]), pa.array(range(50))]
    )
    table["extra"] = ("x", -1)  # pending until the next lookup compacts it
    assert table["k7"] == ("v7", 7) and table["extra"] == ("x", -1) and "k50" not in table
    with pytest.raises(KeyError):
        table["k50"]
    with pytest.raises(KeyError):
        table["k3"] = ("again", 3)  # a minted value never changes
    expected = {f"k{i}": (f"v{i}", i) for i in range(50)} | {"extra": ("x", -1)}
    assert dict(table.items()) == expected and list(table) == list(expected) and len(table) == 51
    assert table == expected
    again = pickle.loads(pickle.dumps(table))
    assert again["k49"] == ("v49", 49) and again == table


def test_the_map_holds_about_150_bytes_an_image():
    """As dicts of tuples it was ~400 bytes an image (key, tuple, dicom_id, dict slot)."""
    identity = build(corpus(200, studies=5, images=10))  # 10,000 images, 1,000 studies
    tables = (identity.patients, identity.first_dates, identity.studies, identity.images)
    assert all(isinstance(table, ident.KeyTable) for table in tables)
    assert sum(table.nbytes for table in tables) / len(identity.images) < 150


def test_file_keys_are_the_accession_within_the_issuer_s_patient() -> None:
    values = {"PatientID": "MRN1", "IssuerOfPatientID": "SITE", "AccessionNumber": "A9", "SOPInstanceUID": "1.2.3"}
    keys = ident.file_keys(lambda keyword: values.get(keyword, ""))
    assert keys == (ident.patient_key("MRN1", "SITE"), ident.study_key(keys.patient, "A9", ""), "1.2.3")
    without_accession = ident.file_keys(lambda keyword: {**values, "AccessionNumber": ""}.get(keyword, ""))
    assert without_accession.study == ident.study_key(keys.patient, "", "")
    assert without_accession.study != keys.study


def test_minting_reads_the_inventory_a_batch_of_rows_at_a_time(monkeypatch):
    """``extend`` holds at most ``MINT_BATCH`` inventory rows at once (main held every row's
    keys together) and mints the same ids, a later batch included, in batches of 7 rows as in one."""
    first, second = corpus(30), pa.concat_tables([corpus(10), corpus(8, prefix="Q")])
    quarantined = inventory([{"patient_id": "Z", "sop_instance_uid": "9.9", "error": "not_dicom"}])
    second = pa.concat_tables([second, quarantined]).combine_chunks()
    whole = build(second, build(first))
    assert ident.rows_held == second.num_rows
    monkeypatch.setattr(ident, "MINT_BATCH", 7)
    batched = build(second, build(first))
    assert ident.rows_held == 7
    for name in ("patients", "first_dates", "studies", "images"):
        assert list(getattr(batched, name).items()) == list(getattr(whole, name).items()), name


def test_minting_holds_a_bounded_set_of_new_ids_and_merges_each_step_once(monkeypatch):
    """New ids wait as Python ints in a set of at most ``TAKEN_SET_MAX`` before they join a
    sorted array (main's set held every image's, ~75 bytes an image); and a step's batches
    are merged once, the first row of a key in key order winning across batches (an image
    repeated in a later batch under another study keeps the first's ids). With sets of 4
    and batches of 3 rows, every id is the one minted whole."""
    table = corpus(12, prefix="P")
    again = inventory([{"patient_id": "Q1", "accession_number": "AQ", "sop_instance_uid": "1.2.3.0.0.0.P"}])
    table = pa.concat_tables([table, again.set_column(0, "key_index", pa.array([table.num_rows], pa.int64()))])
    whole = build(table)
    assert ident._Taken.most_held == len(whole.images) == 48
    monkeypatch.setattr(ident, "TAKEN_SET_MAX", 4)
    monkeypatch.setattr(ident, "MINT_BATCH", 3)
    small = build(table)
    assert ident._Taken.most_held == 4  # then folded into the array
    for name in ("patients", "first_dates", "studies", "images"):
        assert list(getattr(small, name).items()) == list(getattr(whole, name).items()), name
    first_study = small.studies[ident.study_key(ident.patient_key("P0", ""), "AP0-0", "1.2.3.0.0")]
    assert small.images["1.2.3.0.0.0.P"][1:] == tuple(first_study)


def test_key_rows_come_from_the_hash_index_and_survive_shared_hashes(monkeypatch):
    """``KeyTable.rows_of`` finds each key's row from the table's own hash index (no hash
    table of every key per batch, as ``pc.index_in`` built); keys that share a 64-bit hash
    are told apart by their text; a key the table lacks fails, never a null id."""
    table = ident._studies_table()
    keys = [f"acc|P{i}|A{i}" for i in range(50)]
    table.append_columns(pa.array(keys), [pa.array(range(50), pa.int64()), pa.array(range(100, 150), pa.int64())])
    wanted = pa.chunked_array([pa.array(keys[::-3]), pa.array(keys[1:4])])
    expected = [keys.index(k) for k in wanted.to_pylist()]
    assert table.rows_of(wanted).tolist() == expected
    subject, study = ident._lookup_columns(table, wanted, (0, 1))
    assert subject.to_pylist() == expected and study.to_pylist() == [100 + i for i in expected]
    shared = ident._studies_table()  # every key one hash: each found by its text
    monkeypatch.setattr(ident, "_key_hash", lambda key: 7)
    shared.append_columns(pa.array(keys), [pa.array(range(50), pa.int64()), pa.array(range(50), pa.int64())])
    assert shared.rows_of(wanted).tolist() == expected
    with pytest.raises(KeyError):
        shared.rows_of(pa.array(["acc|nobody|A0"]))


def test_a_missing_key_is_never_quoted_in_the_error():
    """Keys are real identifiers (patient ids, accession numbers): a missing one's
    ``KeyError`` says so without the key, which would otherwise reach a traceback."""
    table = ident._studies_table()
    table.append_columns(pa.array(["acc|P1|A1"]), [pa.array([1], pa.int64()), pa.array([2], pa.int64())])
    for lookup in (lambda: table["acc|PHI-MRN-123|A9"], lambda: table.rows_of(pa.array(["acc|PHI-MRN-123|A9"]))):
        with pytest.raises(KeyError) as raised:
            lookup()
        assert "PHI-MRN-123" not in str(raised.value) and str(raised.value) == repr(ident.NOT_A_KEY)


def test_one_chunk_is_taken_as_it_is_and_the_first_row_of_a_key_still_wins():
    """A chunked array of one chunk joins the map without a copy (``combine_chunks`` copied
    the images' keys and ids once more); ``_first_sorted`` sorts a column at a time, stably:
    of rows with the same key, the first in key order is kept."""
    column = pa.chunked_array([pa.array(["b", "a", "b", "c"])])
    assert ident._one_chunk(column).buffers()[2].address == column.chunk(0).buffers()[2].address
    sops = ["b", "a", None, "b", "c", "a"]
    rows = inventory(
        [{"patient_id": "P", "accession_number": f"A{i}", "sop_instance_uid": sop} for i, sop in enumerate(sops)]
    )
    parts = [rows.slice(0, 3), rows.slice(3)]
    first = ident._first_sorted(lambda: parts, lambda keys: keys.select(["sop", "study"]), "sop")
    assert first.column("sop").to_pylist() == ["a", "b", "c"]
    assert [study.rsplit("\x1f", 1)[-1] for study in first.column("study").to_pylist()] == ["A1", "A0", "A4"]
