"""Pass 1 on single files: header-only reads, one record each, reasons for unusable files."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from cxr_dask import inventory
from cxr_dask.storage import Location


def scan(path: Path) -> dict:
    return inventory.scan_file(Location(str(path.parent)), path.name, 0, path.stat().st_size)


def copy_testdata(name: str, tmp_path: Path) -> Path:
    target = tmp_path / Path(name).name
    shutil.copy(get_testdata_file(name), target)
    return target


def test_image_record(tmp_path):
    record = scan(copy_testdata("CT_small.dcm", tmp_path))
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert record["error"] is None
    assert record["patient_id"] == ds.PatientID
    assert record["sop_instance_uid"] == ds.SOPInstanceUID
    assert record["study_instance_uid"] == ds.StudyInstanceUID
    assert record["anchor_date"] == dt.date(2004, 1, 19)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("DICOMDIR", "dicomdir"), ("reportsi.dcm", "unsupported_sop_class"), ("rtplan.dcm", "unsupported_sop_class")],
)
def test_non_image_objects_are_refused(tmp_path, name, reason):
    assert scan(copy_testdata(name, tmp_path))["error"] == reason


def test_unusable_files_get_reason_classes(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "text.txt").write_bytes(b"just some text, not a DICOM file at all" * 10)
    assert scan(tmp_path / "empty.dcm")["error"] == "empty_file"
    assert scan(tmp_path / "text.txt")["error"] == "not_dicom"
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PatientID
    ds.save_as(tmp_path / "nopid.dcm")
    assert scan(tmp_path / "nopid.dcm")["error"] == "no_patient_id"


def test_truncated_file_is_named_as_such(tmp_path):
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()  # noqa: SIM115
    (tmp_path / "cut.dcm").write_bytes(data[:700])
    assert scan(tmp_path / "cut.dcm")["error"] == "truncated_or_no_pixel_data"


def test_malformed_study_date_falls_back_to_series_date(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyDate = "2004-13-45"
    ds.SeriesDate = "20030102"
    ds.save_as(tmp_path / "x.dcm")
    assert scan(tmp_path / "x.dcm")["anchor_date"] == dt.date(2003, 1, 2)


class CountingReader:
    """A file wrapper that counts the bytes pydicom asks for."""

    def __init__(self, handle):
        self._handle = handle
        self.bytes_read = 0

    def read(self, size=-1):
        data = self._handle.read(size)
        self.bytes_read += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


def test_header_scan_reads_only_the_header_of_a_15_mb_image(tmp_path, monkeypatch):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.file_meta = FileMetaDataset(ds.file_meta)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = 3000, 2500
    ds.PixelData = bytes(3000 * 2500 * 2)
    ds.save_as(tmp_path / "big.dcm", enforce_file_format=True)
    assert (tmp_path / "big.dcm").stat().st_size > 15_000_000
    readers = []

    def counting_open(location, key, size=None):
        reader = CountingReader(open(location.path(key), "rb"))  # noqa: SIM115
        readers.append(reader)
        return reader

    monkeypatch.setattr(inventory, "open_for_header", counting_open)
    record = scan(tmp_path / "big.dcm")
    assert record["error"] is None
    assert readers[0].bytes_read <= 64 * 1024


def test_identical_copies_after_the_first_are_quarantined_as_duplicates():
    rows = [
        {"key_index": i, "key": f"k{i}", "size": 1, "sop_instance_uid": sop, "error": error}
        for i, (sop, error) in enumerate([("1.1", None), ("1.2", None), ("1.1", None), ("1.3", "not_dicom")])
    ]
    table = inventory.mark_duplicates(inventory.to_table(rows), hashes={0: "same", 2: "same"})
    assert table.column("error").to_pylist() == [None, None, "duplicate_sop_instance_uid", "not_dicom"]
    assert table.column("copy_of").to_pylist() == [0, None, 0, None]
    different = inventory.mark_duplicates(inventory.to_table(rows), hashes={0: "one", 2: "other"})
    assert different.column("error").to_pylist() == [None, None, "duplicate_differing_copy", "not_dicom"]


def test_damaged_value_is_a_reason_class_not_a_crash(tmp_path):
    """A VR damaged to two bogus bytes raises only when the value is read (after the file
    is read): still a reason class, and no exception that could quote a header value."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = "QX80730215"
    path = tmp_path / "damaged.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=True)
    data = path.read_bytes()
    marker = b"\x10\x00\x20\x00LO\x0a\x00QX80730215"  # (0010,0020) PatientID, explicit VR
    assert data.count(marker) == 1
    path.write_bytes(data.replace(marker, b"\x10\x00\x20\x00L\x00\x0a\x00QX80730215"))
    record = scan(path)
    assert record["error"] == "unreadable_header"
    assert record["patient_id"] is None
