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


def test_a_streamed_write_is_atomic_and_owner_only(location, tmp_path, monkeypatch):
    """``write_atomic_stream``: what the callback writes, in one atomic write (local: into
    the staged file, never whole in memory; the crosswalk's Parquet files go so)."""
    storage.write_atomic_stream(location, "c/x.parquet", lambda handle: [handle.write(b"ab"), handle.write(b"cd")])
    assert storage.read_bytes(location, "c/x.parquet") == b"abcd"
    if not location.is_local:
        return
    private = Location(str(tmp_path / "private"), owner_only=True)
    storage.write_atomic_stream(private, "c/y.parquet", lambda handle: handle.write(b"phi"))
    assert (tmp_path / "private/c/y.parquet").stat().st_mode & 0o777 == 0o600

    def broken(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        storage.write_atomic_stream(private, "c/z.parquet", broken)
    assert not (tmp_path / "private/c/z.parquet").exists()
    assert list((tmp_path / "private" / storage.PARTIALS_DIR).iterdir()) == []


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


# --- PHI at rest: PRIVATE is the owner's alone on a local disk ---------------------------


def _modes(root) -> dict[str, int]:
    """Permission bits of the root and of every folder and file below it."""
    found = {".": root.stat().st_mode & 0o777}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = path.stat().st_mode & 0o777
    return found


@pytest.fixture
def permissive_umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_owner_only_writes_ignore_a_permissive_umask(tmp_path, permissive_umask):
    from cxr_dask.lock import PrivateLock

    vault = Location(str(tmp_path / "above" / "vault"), owner_only=True)
    storage.write_atomic(vault, "runs/r1/parts/0-1.audit.parquet", b"rows")
    storage.write_atomic(vault, "secret.key", [b"ab", memoryview(b"cd")])
    assert storage.create_exclusive(vault, "locks/lock.json", b"{}")
    with PrivateLock(vault.child("lease")):
        lock_mode = (tmp_path / "above/vault/lease/run.lock").stat().st_mode & 0o777
    assert lock_mode == 0o600
    modes = _modes(tmp_path / "above" / "vault")
    folders = {name for name in modes if (tmp_path / "above/vault" / name).is_dir()}
    assert {".", "runs", "runs/r1", "runs/r1/parts", storage.PARTIALS_DIR, "locks", "lease"} <= folders
    assert {name: mode for name, mode in modes.items() if name in folders} == dict.fromkeys(folders, 0o700)
    assert {name: mode for name, mode in modes.items() if name not in folders} == {
        "runs/r1/parts/0-1.audit.parquet": 0o600,
        "secret.key": 0o600,
        "locks/lock.json": 0o600,
    }
    # Above PRIVATE, and in a location that is not owner-only, the umask decides.
    assert (tmp_path / "above").stat().st_mode & 0o777 == 0o755
    public = Location(str(tmp_path / "public"))
    storage.write_atomic(public, "files/a.dcm", b"x")
    assert (tmp_path / "public/files/a.dcm").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "public/files").stat().st_mode & 0o777 == 0o755


@pytest.mark.cluster
def test_a_run_leaves_every_private_file_owner_only(client, small_workspace, permissive_umask, monkeypatch):
    """A whole run with umask 022 on the client and the workers: crosswalk, inventory,
    audit, journal parts (written by workers), secret, run folders: 0600 and 0700."""
    workspace = small_workspace
    from cxr_dask import pipeline
    from cxr_dask.config import RunConfig

    monkeypatch.delenv("CXR_DASK_SECRET", raising=False)  # the secret file is made too
    worker_umasks = client.run(os.umask, 0o022)
    try:
        config = RunConfig(str(workspace["input"]), str(workspace["output"]), str(workspace["private"]), progress=False)
        summary = pipeline.run(client, config)
    finally:
        for address, previous in worker_umasks.items():
            client.run(os.umask, previous, workers=[address])
    assert summary.written > 0
    private = workspace["private"]
    modes = _modes(private)
    kinds = {name: (private / name).is_dir() for name in modes}
    names = sorted(modes)
    assert "secret.key" in names and any(n.startswith("crosswalk/") and n.endswith(".parquet") for n in names)
    assert any(n.endswith("/inventory.parquet") for n in names) and any(n.endswith("/audit.parquet") for n in names)
    assert sum(n.endswith(".audit.parquet") and "/parts/" in n for n in names) >= 2  # parts from the workers
    wrong = {name: oct(mode) for name, mode in modes.items() if mode != (0o700 if kinds[name] else 0o600)}
    assert wrong == {}
    # The research dataset is not PHI: the umask decides there.
    some_output = next(path for path in workspace["output"].rglob("*.dcm"))
    assert some_output.stat().st_mode & 0o777 == 0o644
