"""Real archives (issue 13): old JPEG read, big endian written little endian, headerless
data sets de-identified, repeated SOPInstanceUIDs ranked so a damaged copy never wins.

Files come from pydicom's own test files where they have the case (12-bit JPEG Extended,
big endian) and are generated otherwise (dcmtk's ``dcmcjpeg`` for the retired processes).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet
import pydicom
import pytest
from dciodvfy import new_messages
from pydicom.data import get_testdata_file
from pydicom.filewriter import dcmwrite

from cxr_dask import identity, inventory, process
from cxr_dask.deid import decoders, pixels
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.errors import QuarantineError
from cxr_dask.storage import Location
from cxr_dask.testing.synth import DCMCJPEG_OPTION, retired_jpeg


def scan(path: Path, index: int = 0) -> dict:
    return inventory.scan_file(Location(str(path.parent)), path.name, index, path.stat().st_size)


def deidentify(path: Path) -> process.DeidentifiedFile:
    """Pass 1 and pass 2 of one file, with an identity map minted from its record."""
    table = inventory.mark_duplicates(inventory.to_table([scan(path)]))
    ident = identity.extend(identity.IdentityMap(uid_key=b"a" * 32), table)
    return process.deidentify_bytes(path.read_bytes(), ident, ProfileOptions())


def copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / Path(name).name
    shutil.copy(get_testdata_file(name), target)
    return target


# --------------------------------------------------------------------------- old JPEG


def test_12_bit_jpeg_the_plugins_refuse_is_decoded_by_dcmtk(tmp_path):
    path = copy("JPEG-lossy.dcm", tmp_path)  # 12-bit JPEG Extended; pylibjpeg: "misplaced marker"
    ds = pydicom.dcmread(path)
    with pytest.raises(Exception):  # noqa: B017 - the registry plugins all refuse it
        _ = ds.pixel_array
    arr = pixels.decode(ds)
    assert arr.shape == (ds.Rows, ds.Columns) and 0 < int(arr.max()) < 4096
    out = deidentify(path)
    written = pydicom.dcmread(io.BytesIO(out.data))
    # the bytes are passed through unless burned-in text was cleaned (then written native)
    kept = "1.2.840.10008.1.2.4.51" if out.pixels.action == "untouched" else pydicom.uid.ExplicitVRLittleEndian
    assert written.file_meta.TransferSyntaxUID == kept
    assert pixels.decode(written).shape == arr.shape  # the output reads as its input did


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.55"])
def test_retired_jpeg_processes_are_decoded(tmp_path, syntax):
    path = tmp_path / "retired.dcm"
    path.write_bytes(retired_jpeg(syntax, seed=3, rows=96, columns=80))
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == syntax
    arr = pixels.decode(ds)
    assert arr.shape == (96, 80) and int(arr.max()) > 0
    assert deidentify(path).metadata is not None


def test_dcmtk_fallback_fails_closed_on_a_broken_codestream(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"))
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8" + bytes(range(256)) * 4])  # SOI, then noise
    with pytest.raises(QuarantineError) as caught:
        decoders.decode_with_dcmtk(ds)
    assert caught.value.reason == "undecodable_pixels"


# --------------------------------------------------------------------------- big endian


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "SC_rgb_small_odd_big_endian.dcm"])
def test_big_endian_pixels_survive_the_change_of_byte_order(name):
    ds = pydicom.dcmread(get_testdata_file(name))
    before = ds.pixel_array.copy()
    decoders.to_little_endian(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    after = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    assert after.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert np.array_equal(after.pixel_array, before)


def test_big_endian_input_is_written_as_explicit_little_endian(tmp_path):
    path = copy("MR_small_bigendian.dcm", tmp_path)
    out = deidentify(path)
    written = tmp_path / "out.dcm"
    written.write_bytes(out.data)
    ds = pydicom.dcmread(written)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    if out.pixels.action == "untouched":
        assert np.array_equal(ds.pixel_array, pydicom.dcmread(path).pixel_array)
    assert new_messages(path, written) == set()


# --------------------------------------------------------------------------- no Part 10 header


def headerless(source: Path, target: Path, drop: tuple[str, ...] = ()) -> Path:
    """The data set of ``source`` alone, implicit VR little endian: no preamble, no meta."""
    ds = pydicom.dcmread(source)
    ds.file_meta, ds.preamble = pydicom.dataset.FileMetaDataset(), None
    for keyword in drop:
        delattr(ds, keyword)
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
    data = buffer.getvalue()
    assert not data.startswith(b"\x00" * 128) and b"DICM" not in data[:200]
    target.write_bytes(data)
    return target


def test_headerless_data_set_is_written_as_a_part_10_file(tmp_path):
    path = headerless(get_testdata_file("CT_small.dcm"), tmp_path / "raw_dataset")
    record = scan(path)
    assert record["error"] is None and record["sop_instance_uid"]
    out = deidentify(path)
    assert out.data[128:132] == b"DICM"
    ds = pydicom.dcmread(io.BytesIO(out.data))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    assert ds.PatientID != pydicom.dcmread(get_testdata_file("CT_small.dcm")).PatientID


def test_headerless_data_set_without_its_uids_is_not_dicom(tmp_path):
    path = headerless(get_testdata_file("CT_small.dcm"), tmp_path / "raw", drop=("SOPClassUID", "SOPInstanceUID"))
    assert scan(path)["error"] == "not_dicom"
    with pytest.raises(QuarantineError) as caught:
        process.deidentify_bytes(path.read_bytes(), identity.IdentityMap(uid_key=b"a" * 32), ProfileOptions())
    assert caught.value.reason == "not_dicom"


def test_headerless_data_set_without_patient_id_says_so(tmp_path):
    path = headerless(get_testdata_file("CT_small.dcm"), tmp_path / "raw", drop=("PatientID",))
    assert scan(path)["error"] == "no_patient_id"


# --------------------------------------------------------------------------- duplicates


def test_pixel_data_cut_short_is_seen_from_the_header_read(tmp_path):
    for name in ("CT_small.dcm", "JPEG-lossy.dcm"):  # native, then encapsulated
        whole = copy(name, tmp_path)
        cut = tmp_path / f"cut_{whole.name}"
        data = whole.read_bytes()
        cut.write_bytes(data[: len(data) - 200])
        assert scan(whole)["complete"] is True
        record = scan(cut)
        assert record["error"] is None and record["complete"] is False


def rows(*copies: tuple[int, str, int, bool, str | None]) -> pa.Table:
    """Inventory rows: (key index, SOPInstanceUID, size, complete, created)."""
    return inventory.to_table(
        [
            {"key_index": i, "key": f"k{i}", "sop_instance_uid": sop, "size": size, "complete": ok, "created": made}
            for i, sop, size, ok, made in copies
        ]
    )


def test_copies_rank_complete_first_then_latest_then_key_order():
    table = inventory.rank_copies(
        rows(
            (0, "1.1", 90, False, "20200101120000.000000"),  # cut short, sorted first
            (1, "1.1", 100, True, "20200101120000.000000"),
            (2, "1.1", 100, True, "20200102080000.000000"),  # created later
            (3, "1.1", 100, True, None),
            (4, "1.2", 100, True, None),
        )
    )
    ranks = dict(zip(table.column("key_index").to_pylist(), table.column("copy_rank").to_pylist(), strict=True))
    assert ranks == {0: 3, 1: 1, 2: 0, 3: 2, 4: None}
    assert table.column("copy_of").to_pylist() == [2, 2, 2, 2, None]
    assert table.column("error").to_pylist() == [
        inventory.DUPLICATE,
        inventory.DUPLICATE,
        None,
        inventory.DUPLICATE,
        None,
    ]


def test_identical_copies_are_told_from_differing_ones():
    table = inventory.rank_copies(
        rows(
            (0, "1.1", 100, True, None),
            (1, "1.1", 100, True, None),
            (2, "1.1", 100, True, None),
            (3, "1.1", 7, True, None),
        )
    )
    assert inventory.copies_to_hash(table) == [(0, "k0"), (1, "k1"), (2, "k2")]  # not the one of another size
    labelled = inventory.label_copies(table, {0: "aa", 1: "aa", 2: "bb"})
    assert labelled.column("error").to_pylist() == [
        None,
        inventory.DUPLICATE,
        inventory.DIFFERING_DUPLICATE,
        inventory.DIFFERING_DUPLICATE,
    ]


def test_the_next_copy_is_tried_until_one_is_written():
    table = inventory.rank_copies(
        rows((0, "1.1", 100, True, None), (1, "1.1", 100, True, None), (2, "1.1", 100, True, None))
    )
    assert inventory.next_copies(table, {}) == [(0, "k0")]
    assert inventory.next_copies(table, {0: "written"}) == []
    assert inventory.next_copies(table, {0: "quarantined"}) == [(1, "k1")]
    assert inventory.next_copies(table, {0: "quarantined", 1: "written"}) == []
    assert inventory.written_copies(table, {0: "quarantined", 1: "written"}) == {0: 1, 2: 1}
    assert inventory.next_copies(table, {0: "quarantined", 1: "quarantined", 2: "quarantined"}) == []


# --------------------------------------------------------------------------- a run, and a rerun


@pytest.mark.cluster
def test_a_broken_first_copy_gives_way_to_its_twin_and_a_rerun_keeps_the_choice(client, tmp_path):
    from pydicom.uid import JPEG2000Lossless

    from cxr_dask import pipeline
    from cxr_dask.config import RunConfig
    from cxr_dask.storage import list_files
    from cxr_dask.testing.synth import synthesize

    raw = tmp_path / "raw"
    corpus = synthesize(str(raw), patients=1, seed=7, rows=64, columns=64, transfer_syntaxes=[JPEG2000Lossless])
    good = (raw / corpus.images[0].relpath).read_bytes()
    soc = good.rindex(b"\xff\x4f\xff\x51")  # the codestream's SOC and SIZ markers
    (raw / "0_broken_copy.dcm").write_bytes(good[: soc + 40] + b"\x00" * 64 + good[soc + 104 :])
    (raw / "0_cut_copy.dcm").write_bytes(good[:-300])
    keys = [key for key, _ in list_files(Location(str(raw)))]
    config = RunConfig(str(raw), str(tmp_path / "out"), str(tmp_path / "private"), progress=False)

    def audit_of_last_run() -> dict[str, dict]:
        runs = sorted((tmp_path / "private" / "runs").iterdir())
        table = pa.parquet.read_table(runs[-1] / "audit.parquet")
        return {keys[row["key_index"]]: row for row in table.to_pylist()}

    first = pipeline.run(client, config)
    audit = audit_of_last_run()
    assert first.written == len(corpus.images)
    twin = audit[corpus.images[0].relpath]
    assert twin["status"] == "written"
    assert audit["0_broken_copy.dcm"]["reason"] == "undecodable_pixels"  # tried first (key order), failed
    assert audit["0_cut_copy.dcm"]["reason"] == "duplicate_differing_copy"  # cut short: never tried
    assert {keys[audit[k]["duplicate_of"]] for k in ("0_broken_copy.dcm", "0_cut_copy.dcm")} == {
        corpus.images[0].relpath
    }

    second = pipeline.run(client, config)  # a later batch of the same files
    again = audit_of_last_run()
    assert second.written == first.written
    assert again[corpus.images[0].relpath]["dicom_id"] == twin["dicom_id"]
    rows = pa.parquet.read_table(tmp_path / "out" / "metadata.parquet")
    assert rows.num_rows == len(corpus.images)


@pytest.mark.parametrize("syntax", sorted(DCMCJPEG_OPTION))
def test_old_jpeg_output_has_no_dciodvfy_error_its_input_lacks(tmp_path, syntax):
    source, written = tmp_path / "in.dcm", tmp_path / "out.dcm"
    source.write_bytes(retired_jpeg(syntax, seed=5, rows=128, columns=96))
    written.write_bytes(deidentify(source).data)
    assert new_messages(source, written) == set()


def test_headerless_output_has_no_dciodvfy_error_the_part_10_original_lacks(tmp_path):
    original = copy("CT_small.dcm", tmp_path)
    written = tmp_path / "out.dcm"
    written.write_bytes(deidentify(headerless(original, tmp_path / "raw")).data)
    assert new_messages(original, written) == set()
