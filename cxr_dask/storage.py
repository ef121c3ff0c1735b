"""URL-agnostic I/O: listing, header reads, whole-object reads and atomic writes.

Every location (input archive, output dataset, private vault) is an fsspec URL, so the
same code serves local folders, ``file://``, ``memory://`` and ``s3://`` buckets.
"""

from __future__ import annotations

import io
import os
import posixpath
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from cxr_dask.errors import ConfigError

#: Block size for header-only reads: a CXR header is a few KB, its pixels 5-30 MB.
HEADER_BLOCK_SIZE = 64 * 1024


@dataclass(frozen=True)
class Location:
    """A root URL resolved to an fsspec filesystem and a filesystem-native root path."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return _resolve(self.url, self.storage_options)[0]

    @property
    def root(self) -> str:
        return _resolve(self.url, self.storage_options)[1]

    @property
    def protocol(self) -> str:
        protocol = self.fs.protocol
        return protocol if isinstance(protocol, str) else protocol[0]

    def path(self, key: str) -> str:
        """The filesystem-native path of ``key`` (a '/'-separated path below the root)."""
        return posixpath.join(self.root, key) if key else self.root

    def child(self, key: str) -> Location:
        """A Location for a sub-folder, keeping the storage options."""
        base = self.url.rstrip("/")
        return Location(f"{base}/{key}", self.storage_options)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)


def _resolve(url: str, storage_options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(url, **storage_options)
    return fs, root.rstrip("/") or "/"


def list_files(location: Location) -> list[tuple[str, int]]:
    """Sorted ``(key, size)`` for every file below the root; keys are relative, '/'-separated.

    Sorting makes partitions, key indexes and id assignment order independent of the
    order the backend lists in.
    """
    require_folder(location)
    fs, root = location.fs, location.root
    found = fs.find(root, detail=True)
    files = []
    for path, info in found.items():
        if info.get("type") == "directory":
            continue
        key = posixpath.relpath(_strip_protocol(fs, path), root)
        files.append((key, int(info.get("size") or 0)))
    files.sort()
    return files


def require_folder(location: Location) -> None:
    """Fail with one clear line, before any work starts, when the input is not a folder."""
    fs, root = location.fs, location.root
    if not fs.exists(root):
        raise ConfigError(f"input location does not exist: {location.url}")
    if fs.isfile(root):
        raise ConfigError(f"input location is a file, not a folder: {location.url}")


def _strip_protocol(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return fs._strip_protocol(path)


def open_for_header(location: Location, key: str) -> IO[bytes]:
    """Open ``key`` with a small read-ahead block so a header read fetches few bytes."""
    if location.is_local:
        return open(location.path(key), "rb")
    return location.fs.open(location.path(key), "rb", block_size=HEADER_BLOCK_SIZE)


def read_bytes(location: Location, key: str) -> bytes:
    """The whole object, in one request where the backend allows it."""
    return location.fs.cat_file(location.path(key))


def open_whole(location: Location, key: str) -> IO[bytes]:
    """``key`` opened for one full read: the file itself when local, so pydicom reads each
    value (15 MB of pixels) straight into its own buffer, allocated once rather than once
    for the whole object and again for the value; elsewhere, the object's bytes in
    memory, fetched in one request."""
    if location.is_local:
        return open(location.path(key), "rb")
    return io.BytesIO(read_bytes(location, key))


def size_of(handle: IO[bytes]) -> int:
    """Bytes in an open file or buffer; leaves it positioned at the start."""
    size = handle.seek(0, io.SEEK_END)
    handle.seek(0)
    return size


def write_atomic(location: Location, key: str, data: bytes | Sequence[bytes | memoryview]) -> None:
    """Write ``data`` (bytes, or buffers to concatenate) so no reader sees a partial object.

    Local: a temporary name in the same folder, then ``os.replace``; buffers are written
    one after the other, never joined. Object stores: a single PUT of the finished bytes,
    which is atomic by the store's semantics.
    """
    parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
    path = location.path(key)
    fs = location.fs
    if location.is_local:
        folder = posixpath.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = posixpath.join(folder, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.writelines(parts)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    fs.pipe_file(path, parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts))


def exists(location: Location, key: str) -> bool:
    return location.fs.exists(location.path(key))


def overlaps(inner: Location, outer: Location) -> bool:
    """True when ``inner`` is ``outer`` or lies below it on the same filesystem."""
    if inner.protocol != outer.protocol:
        return False
    a = _normalised(inner)
    b = _normalised(outer)
    return a == b or a.startswith(b.rstrip("/") + "/")


def _normalised(location: Location) -> str:
    root = location.root
    if location.is_local:
        root = os.path.realpath(root)
    return root.rstrip("/") or "/"
