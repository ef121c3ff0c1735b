"""URL-agnostic listing and atomic writes, on local folders and fsspec's memory filesystem."""

from __future__ import annotations

import os

import pytest

from cxr_dask import storage
from cxr_dask.errors import ConfigError
from cxr_dask.storage import Location


@pytest.fixture(params=["local", "memory"])
def location(request, tmp_path):
    if request.param == "local":
        return Location(str(tmp_path / "root"))
    return Location(f"memory://cxr-dask-storage-{os.getpid()}/{tmp_path.name}")


def test_list_is_sorted_relative_and_sized(location):
    for key, data in [("b/2.dcm", b"22"), ("a/1.dcm", b"1"), ("a/sub dir/3.dcm", b"333")]:
        storage.write_atomic(location, key, data)
    assert storage.list_files(location) == [("a/1.dcm", 1), ("a/sub dir/3.dcm", 3), ("b/2.dcm", 2)]


def test_write_is_atomic_and_overwrites(location):
    storage.write_atomic(location, "x/y.dcm", b"first")
    storage.write_atomic(location, "x/y.dcm", b"second")
    assert storage.read_bytes(location, "x/y.dcm") == b"second"
    assert [key for key, _ in storage.list_files(location)] == ["x/y.dcm"]  # no temp left over


def test_local_write_leaves_no_partial_file_when_it_fails(tmp_path, monkeypatch):
    location = Location(str(tmp_path))

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        storage.write_atomic(location, "a/b.dcm", b"data")
    assert not (tmp_path / "a").exists() or list((tmp_path / "a").iterdir()) == []
    assert list((tmp_path / storage.PARTIALS_DIR).iterdir()) == []  # the staged file is gone too


def test_local_write_makes_missing_folders_and_staging(tmp_path):
    location = Location(str(tmp_path))
    storage.write_atomic(location, "p1/s2/i3.dcm", [b"ab", memoryview(b"cd")])
    storage.remove_partials(location)  # as a run start does: the next write recreates it
    storage.write_atomic(location, "p1/s2/i4.dcm", b"ef")
    storage.write_atomic(location, "p1/s5/i6.dcm", b"gh")
    assert (tmp_path / "p1/s2/i3.dcm").read_bytes() == b"abcd"
    assert (tmp_path / "p1/s2/i4.dcm").read_bytes() == b"ef"
    assert (tmp_path / "p1/s5/i6.dcm").read_bytes() == b"gh"
    assert list((tmp_path / storage.PARTIALS_DIR).iterdir()) == []


def test_header_reads_stop_early(tmp_path):
    location = Location(str(tmp_path))
    storage.write_atomic(location, "f.bin", b"x" * 1000)
    with storage.open_for_header(location, "f.bin") as handle:
        assert handle.read(4) == b"xxxx"


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        storage.list_files(Location(str(tmp_path / "nope")))
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="is a file"):
        storage.list_files(Location(str(tmp_path / "file")))


def test_overlaps(tmp_path):
    out = Location(str(tmp_path / "out"))
    assert storage.overlaps(Location(str(tmp_path / "out" / "private")), out)
    assert storage.overlaps(out, out)
    assert not storage.overlaps(Location(str(tmp_path / "output2")), out)
    assert not storage.overlaps(Location("memory://out/x"), out)
