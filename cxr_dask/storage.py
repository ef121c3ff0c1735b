"""URL-agnostic I/O: listing, header reads, whole-object reads and atomic writes.

Every location (input archive, output dataset, private vault) is an fsspec URL, so the
same code serves local folders, ``file://``, ``memory://`` and ``s3://`` buckets.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import posixpath
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile

from cxr_dask.errors import ConfigError

#: Block size for header-only reads: a CXR header is a few KB, its pixels 5-30 MB.
HEADER_BLOCK_SIZE = 64 * 1024


@dataclass(frozen=True)
class Location:
    """A root URL resolved to an fsspec filesystem and a filesystem-native root path."""

    url: str
    # Options may hold credentials: kept out of repr, so out of logs and Dask's error reports.
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: PHI lives here (PRIVATE): on a local disk every file and folder this code creates
    #: is the owner's alone (0600/0700), whatever the umask.
    owner_only: bool = field(default=False, compare=False)

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
        return Location(f"{base}/{key}", self.storage_options, self.owner_only)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)


#: Resolved local locations: parsing a URL costs more than a small file's write. Only the
#: stateless local filesystem is kept here; remote ones are fsspec's to cache (per process
#: and thread, with their connections).
_LOCAL_RESOLVED: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[fsspec.AbstractFileSystem, str]] = {}


def _resolve(url: str, storage_options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        key = (url, tuple(sorted(storage_options.items())))
        found = _LOCAL_RESOLVED.get(key)
    except TypeError:  # unhashable options (nested dicts): resolved afresh each time
        return _resolve_uncached(url, storage_options)
    if found is None:
        found = _resolve_uncached(url, storage_options)
        if isinstance(found[0], LocalFileSystem) and len(_LOCAL_RESOLVED) < 256:
            _LOCAL_RESOLVED[key] = found
    return found


def _resolve_uncached(url: str, storage_options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    is_s3 = fsspec.core.split_protocol(url)[0] in S3_PROTOCOLS
    options = with_retry_policy(storage_options) if is_s3 else storage_options
    s3fs_retries = options.get(S3FS_RETRIES)
    if s3fs_retries is not None:
        options = {k: v for k, v in options.items() if k != S3FS_RETRIES}
    fs, root = fsspec.core.url_to_fs(url, **options)
    if s3fs_retries is not None:
        fs.retries = max(1, int(s3fs_retries))  # an attribute, not a constructor argument, in s3fs
    return fs, root.rstrip("/") or "/"


S3_PROTOCOLS = ("s3", "s3a")

#: botocore's retry policy for every S3 request of the client and the workers: "standard"
#: mode retries throttling (503 SlowDown), 500/502/503/504, connection errors and read
#: timeouts with exponential backoff and jitter; "adaptive" adds client-side rate
#: limiting. Users override it with ``config_kwargs.retries`` in the storage options.
DEFAULT_RETRIES = {"mode": "standard", "max_attempts": 10}

#: A storage option of ours: how many times s3fs tries each call (default 5) around
#: botocore's attempts, for bodies cut short, payload and parser errors, and SlowDown.
S3FS_RETRIES = "s3fs_retries"


def with_retry_policy(storage_options: dict[str, Any]) -> dict[str, Any]:
    """The options with botocore's retry policy filled in where the user set none.

    s3fs adds its own retries (``retries``, 5 by default) around each call for what
    botocore does not retry: bodies cut short, payload and parser errors.
    """
    config_kwargs = dict(storage_options.get("config_kwargs") or {})
    if "retries" in config_kwargs:
        return storage_options
    config_kwargs["retries"] = dict(DEFAULT_RETRIES)
    return {**storage_options, "config_kwargs": config_kwargs}


def is_storage_error(error: BaseException) -> bool:
    """True for a failure of the store or the network (worth retrying later), not of content.

    Storage: the OS's own errors (an errno, a timeout, a refused or reset connection, a
    missing file or denied access: fsspec raises these for S3 too), and any error of
    botocore, aiohttp or fsspec, also as the cause of another. Not storage: a decoder's
    errno-less ``OSError`` (Pillow's "image file is truncated") or a parser's ValueError.
    """
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 8:
        if isinstance(current, _STORAGE_OS_ERRORS) or (isinstance(current, OSError) and current.errno is not None):
            return True
        if isinstance(current, ConfigError):
            return False
        if any(cls.__module__.split(".")[0] in _STORAGE_MODULES for cls in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


class StorageError(OSError):
    """A storage failure re-raised with the failing exception's type only, never its
    message (which may quote a key, and keys may carry PHI)."""

    def __init__(self, kind: str) -> None:
        super().__init__(errno.EIO, f"storage failed after retries: {kind}")


_STORAGE_OS_ERRORS = (
    TimeoutError,
    asyncio.TimeoutError,
    ConnectionError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


#: Packages whose exceptions are storage failures (botocore's ClientError and
#: BotoCoreError, aiohttp's ClientError, fsspec's FSTimeoutError, s3fs's own).
_STORAGE_MODULES = frozenset({"botocore", "aiobotocore", "aiohttp", "fsspec", "s3fs", "urllib3", "requests"})


def list_files(location: Location) -> list[tuple[str, int]]:
    """Sorted ``(key, size)`` for every file below the root; keys are relative, '/'-separated.

    Sorting makes partitions, key indexes and id assignment order independent of the
    order the backend lists in. Local folders are walked following symbolic links to
    folders, as a user expects of a folder they point at; each folder's real path is
    visited once, so a link loop (or a second link to the same folder) lists nothing
    twice. A link to a file is listed as a file; a dangling link with size 0 (audited as
    ``empty_file`` rather than lost silently).
    """
    return sorted(iter_files(location))


def iter_files(location: Location) -> Iterator[tuple[str, int]]:
    """``list_files``'s ``(key, size)`` pairs in the backend's order, one at a time (the
    run sorts them as Arrow columns: ``pipeline.list_table``)."""
    require_folder(location)
    fs, root = location.fs, location.root
    if location.is_local:
        yield from _walk_local(root)
        return
    found = fs.find(root, detail=True)
    for path, info in found.items():
        # Zero-byte "folder/" markers (made by consoles and some sync tools) are not files.
        if info.get("type") == "directory" or path.endswith("/"):
            continue
        key = posixpath.relpath(_strip_protocol(fs, path), root)
        yield key, int(info.get("size") or 0)


def _walk_local(root: str) -> Iterator[tuple[str, int]]:
    """A local folder's ``(key, size)`` pairs, links to folders followed, each folder once.

    A folder of root's own tree (no link on its way) is reached one way only, so it is
    walked without a note: a plain archive's listing holds no per-folder state. A link to
    a folder is followed only when its target lies outside root's tree and was not walked
    yet (a loop, or a folder reached another way, is skipped); inside such a linked tree
    every folder's real path is noted, as there a folder can be reached twice.
    """
    top = os.path.realpath(root)
    links: list[str] = []  # the links of root's tree that were followed
    walked: set[str] = set()  # the real paths of folders walked through them
    for folder, subfolders, names in os.walk(root, followlinks=True):
        linked = any(folder == link or folder.startswith(link + os.sep) for link in links)
        kept = []
        for name in sorted(subfolders):
            path = os.path.join(folder, name)
            if not linked and not os.path.islink(path):
                kept.append(name)
                continue
            real = os.path.realpath(path)
            if real == top or real.startswith(top + os.sep) or real in walked:
                continue  # a loop, or a folder root's own tree or an earlier link reaches
            walked.add(real)
            if not linked:
                links.append(path)
            kept.append(name)
        subfolders[:] = kept
        for name in names:
            path = os.path.join(folder, name)
            try:
                size = os.stat(path).st_size
            except OSError:  # a dangling link
                size = 0
            yield posixpath.relpath(path, root).replace(os.sep, "/"), size


def require_folder(location: Location) -> None:
    """Fail with one clear line, before any work starts, when the input is not a folder."""
    with _explained(location, "input"):
        if location.protocol == "s3":
            _probe_bucket(location, "input")
        fs, root = location.fs, location.root
        if not fs.exists(root):
            raise ConfigError(f"input location does not exist: {location.url}")
        if fs.isfile(root):
            raise ConfigError(f"input location is a file, not a folder: {location.url}")


def require_reachable(location: Location, role: str) -> None:
    """Fail with one clear line, before any work starts, when an output bucket is unusable.

    A missing bucket, a wrong endpoint or refused credentials would otherwise surface
    only after pass 1, from a worker, as a traceback. Local folders are created on write.
    """
    if location.is_local:
        return
    with _explained(location, role):
        if location.protocol == "s3":
            _probe_bucket(location, role)
        else:
            location.fs.exists(location.root)


def check_locations(source: Location, output: Location, private: Location) -> None:
    """Every check that must pass before any work: the input is a folder, the others usable."""
    require_folder(source)
    require_reachable(output, "output")
    require_reachable(private, "private")


#: The checks before any work try twice, not for a minute: a wrong endpoint or bucket is
#: the user's to fix, and the run's own reads and writes keep the full retry policy.
PROBE_RETRIES = {"mode": "standard", "max_attempts": 2}


def _probe_bucket(location: Location, role: str) -> None:
    """One cheap LIST on the bucket: s3fs's ``exists`` swallows denied and unreachable alike."""
    options = dict(location.storage_options)
    options["config_kwargs"] = {**(options.get("config_kwargs") or {}), "retries": dict(PROBE_RETRIES)}
    options[S3FS_RETRIES] = 1
    fs = Location(location.url, options).fs
    bucket, _, prefix = location.root.partition("/")
    try:
        fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except FileNotFoundError:
        raise ConfigError(f"the {role} bucket does not exist: s3://{bucket}") from None


@contextmanager
def _explained(location: Location, role: str) -> Iterator[None]:
    """Turn storage failures into one line that names the location, never a credential."""
    try:
        yield
    except ConfigError:
        raise
    except PermissionError:
        hint = (
            ""
            if location.is_local
            else ": check the credentials (AWS_* variables, profile, role, or --storage-options)"
        )
        raise ConfigError(f"access denied to the {role} location {location.url}{hint}") from None
    except Exception as error:
        kind = type(error).__name__
        if kind in {"NoCredentialsError", "PartialCredentialsError"}:
            raise ConfigError(
                f"no credentials for the {role} location {location.url} "
                "(set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a role, or --storage-options)"
            ) from None
        raise ConfigError(
            f"cannot reach the storage of the {role} location {location.url}{_endpoint_hint(location)}: {kind}"
        ) from None


def _endpoint_hint(location: Location) -> str:
    """The endpoint in use, without any user:password part, for the error message."""
    endpoint = location.storage_options.get("endpoint_url") or location.storage_options.get("client_kwargs", {}).get(
        "endpoint_url"
    )
    if not endpoint:
        try:
            endpoint = location.fs.s3.meta.endpoint_url
        except Exception:
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return ""
    parts = urlsplit(str(endpoint))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f" (endpoint {urlunsplit((parts.scheme, netloc, parts.path, '', ''))})"


def _strip_protocol(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return fs._strip_protocol(path)


def open_for_header(location: Location, key: str, size: int | None = None) -> IO[bytes]:
    """Open ``key`` so that a header read fetches one 64 KiB block, not the object.

    ``blockcache`` fetches aligned blocks of ``HEADER_BLOCK_SIZE``; the default
    ``readahead`` cache would fetch the bytes asked for *plus* a block, and a header
    larger than a block costs just one more block. A ``size`` known from the listing
    spares the HEAD request a remote open would otherwise make.
    """
    if location.is_local:
        return open(location.path(key), "rb")
    options: dict[str, Any] = {"block_size": HEADER_BLOCK_SIZE, "cache_type": "blockcache"}
    if size is not None:
        options["size"] = size
    handle = location.fs.open(location.path(key), "rb", **options)
    if size is not None and isinstance(handle, AbstractBufferedFile):
        # s3fs asks for the file's details (a HEAD) on the first read unless given them.
        handle.details = {"name": handle.path, "size": size, "type": "file"}
    return handle


def read_bytes(location: Location, key: str) -> bytes:
    """The whole object, in one request where the backend allows it."""
    if location.protocol == "s3":
        # s3fs otherwise asks for the size first (a HEAD per object) to split the read.
        return location.fs.cat_file(location.path(key), max_concurrency=1)
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


#: Local writes are staged here, below the location's root, and renamed into place: a
#: crash leaves at most a temporary file in this hidden folder, never a partial object at
#: its final key. ``remove_partials`` clears it when a run starts and ends.
PARTIALS_DIR = ".partial"


def write_atomic(location: Location, key: str, data: bytes | memoryview | Sequence[bytes | memoryview]) -> None:
    """Write ``data`` (bytes, or buffers to concatenate) so no reader sees a partial object.

    Local: a temporary file under ``PARTIALS_DIR``, then ``os.replace`` (same filesystem,
    so the rename is atomic); buffers are written one after the other, never joined.
    Object stores: a single PUT of the finished bytes, which is atomic by the store's
    semantics (s3fs uses a multipart upload from 100 MB, which is atomic too: the object
    appears only when the upload completes).
    """
    parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
    path = location.path(key)
    if not location.is_local:
        location.fs.pipe_file(path, parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts))
        return
    _write_local_atomic(location, path, lambda handle: handle.writelines(parts))


def write_atomic_stream(location: Location, key: str, write: Callable[[IO[bytes]], object]) -> None:
    """``write_atomic`` of what ``write`` writes to the file handle it is given.

    Local: straight into the temporary file that is then renamed, so the bytes are never
    whole in memory (the crosswalk's Parquet files grow with the archive: ~33 bytes an
    image). Object stores: into memory, then one PUT (atomic as ``write_atomic``'s)."""
    if location.is_local:
        _write_local_atomic(location, location.path(key), write)
        return
    sink = io.BytesIO()
    write(sink)
    location.fs.pipe_file(location.path(key), sink.getvalue())


def copy_atomic(location: Location, key: str, local_file: str) -> None:
    """``write_atomic`` of a local file's bytes, streamed: never whole in memory (the
    commit's tables, written to a temporary folder first). Object stores: s3fs's upload
    (a multipart upload from 100 MB, atomic too)."""
    path = location.path(key)
    if not location.is_local:
        location.fs.put_file(local_file, path)
        return
    with open(local_file, "rb") as source:
        _write_local_atomic(location, path, lambda handle: shutil.copyfileobj(source, handle, 1 << 20))


def _write_local_atomic(location: Location, path: str, write: Callable[[IO[bytes]], object]) -> None:
    staging = location.path(PARTIALS_DIR)
    tmp = posixpath.join(staging, f"{uuid.uuid4().hex}.tmp")
    # Folders are made when missing, not checked first: most writes go to existing ones,
    # and a file system call per folder and file is a measurable share of a small file.
    try:
        handle = _create_file(location, tmp)
    except FileNotFoundError:
        make_folders(location, staging)
        handle = _create_file(location, tmp)
    moved = False
    try:
        with handle:
            write(handle)
        try:
            os.replace(tmp, path)
        except FileNotFoundError:
            make_folders(location, posixpath.dirname(path))
            os.replace(tmp, path)
        moved = True
    finally:
        if not moved:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)


def _create_file(location: Location, path: str) -> IO[bytes]:
    """A new local file open for writing; the owner's alone (0600) in an owner-only location."""
    if not location.owner_only:
        return open(path, "wb")
    descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.fchmod(descriptor, 0o600)  # the umask may have taken bits away; never added any
    return os.fdopen(descriptor, "wb")


def make_folders(location: Location, folder: str) -> None:
    """``os.makedirs``; in an owner-only location, every folder made from its root down is 0700.

    ``os.makedirs`` applies its mode to the last folder only, and the umask to all: each
    level is made and set here. Folders above the root are not PHI: the umask decides.
    """
    if not location.owner_only:
        os.makedirs(folder, exist_ok=True)
        return
    root = location.root
    relative = posixpath.relpath(folder, root)
    if relative.startswith(".."):
        raise ValueError("folder outside the location")
    os.makedirs(posixpath.dirname(root) or "/", exist_ok=True)
    current = root
    for part in [""] + ([] if relative == "." else relative.split("/")):
        current = posixpath.join(current, part) if part else root
        try:
            os.mkdir(current, 0o700)
        except FileExistsError:
            continue
        os.chmod(current, 0o700)


def remove_partials(location: Location) -> None:
    """Delete temporary files a killed writer left below a local location (no-op elsewhere)."""
    if location.is_local:
        shutil.rmtree(location.path(PARTIALS_DIR), ignore_errors=True)


def create_exclusive(location: Location, key: str, data: bytes) -> bool:
    """Create ``key`` only if it does not exist; False when it already does.

    Local: ``O_CREAT | O_EXCL``. Object stores: a conditional PUT (``If-None-Match: *``)
    where the filesystem offers ``mode="create"``; callers read the object back to confirm.
    """
    path = location.path(key)
    if location.is_local:
        make_folders(location, posixpath.dirname(path))
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return False
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        return True
    if location.fs.exists(path):
        return False
    try:
        location.fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except TypeError:
        location.fs.pipe_file(path, data)
    return True


def remove(location: Location, key: str) -> None:
    """Delete ``key`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        location.fs.rm_file(location.path(key))


def list_keys(location: Location, prefix: str) -> list[str]:
    """Sorted keys (relative to the root) of the files below ``prefix``; empty if none."""
    fs, folder = location.fs, location.path(prefix)
    fs.invalidate_cache(folder)  # workers add keys here: a listing cached earlier is stale
    if not fs.exists(folder):
        return []
    root = location.root
    return sorted(posixpath.relpath(_strip_protocol(fs, path), root) for path in fs.find(folder))


def read_many(location: Location, keys: list[str]) -> dict[str, bytes]:
    """Several whole objects at once (concurrently on object stores)."""
    if not keys:
        return {}
    paths = [location.path(key) for key in keys]
    found = location.fs.cat(paths, on_error="raise")
    by_path = {_strip_protocol(location.fs, path): data for path, data in found.items()}
    return {key: by_path[_strip_protocol(location.fs, path)] for key, path in zip(keys, paths, strict=True)}


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
