"""One run at a time per PRIVATE location: a lease that a second run refuses to share.

Two runs minting ids into the same crosswalk at once would each miss the other's
assignments, so the second is refused with a clear message instead of merged silently.
The lock is a small JSON file, ``PRIVATE/run.lock``, created exclusively where the store
allows it (``O_EXCL`` locally, ``If-None-Match`` on S3) and read back to confirm. Its
holder refreshes a heartbeat; a lock whose holder is gone (a dead pid on this host, or no
heartbeat for ``lease_seconds`` on any host) is stale and taken over, so rerunning the
command of a killed run resumes it without manual clean-up.

``RunClaim`` is the one place a run takes the lock and the journal's unfinished-run
check: the CLI opens it before its workers start (a refused run costs no cluster) and
hands it to ``pipeline.run``; a script calling ``pipeline.run`` alone gets one there.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from cxr_dask import storage
from cxr_dask.errors import ConfigError
from cxr_dask.storage import Location

if TYPE_CHECKING:
    from cxr_dask.journal import RunJournal

log = logging.getLogger(__name__)

LOCK_KEY = "run.lock"
LEASE_SECONDS = 600.0
HEARTBEAT_SECONDS = 60.0


@dataclass(frozen=True)
class LockRecord:
    """Who holds the lock; host and pid only, never anything about the data."""

    owner: str
    host: str
    pid: int
    heartbeat: float

    def is_stale(self, now: float, lease_seconds: float) -> bool:
        if self.host == socket.gethostname() and not _pid_alive(self.pid):
            return True
        return now - self.heartbeat > lease_seconds

    def describe(self, now: float) -> str:
        return f"host {self.host}, pid {self.pid}, last heartbeat {max(0.0, now - self.heartbeat):.0f} s ago"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PrivateLock:
    """The lease on one PRIVATE location; use as a context manager, or through ``RunClaim`` for a run."""

    def __init__(
        self,
        private: Location,
        lease_seconds: float = LEASE_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.private = private
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.owner = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> LockRecord:
        return LockRecord(self.owner, socket.gethostname(), os.getpid(), time.time())

    def _encoded(self) -> bytes:
        return json.dumps(asdict(self._record())).encode()

    def read(self) -> LockRecord | None:
        """The current holder, or None when the lock is free (or unreadable, i.e. half-made)."""
        if not storage.exists(self.private, LOCK_KEY):
            return None
        try:
            return LockRecord(**json.loads(storage.read_bytes(self.private, LOCK_KEY)))
        except (ValueError, TypeError, FileNotFoundError):
            return None

    def acquire(self) -> None:
        """Take the lock or raise ConfigError naming the live holder."""
        if not storage.create_exclusive(self.private, LOCK_KEY, self._encoded()):
            holder = self.read()
            now = time.time()
            # Our own record: the conditional PUT succeeded but its answer was lost and
            # the retry found the object (a connection reset after the write).
            mine = holder is not None and holder.owner == self.owner
            if holder is not None and not mine and not holder.is_stale(now, self.lease_seconds):
                raise ConfigError(
                    f"{self.private.url} is in use by another run ({holder.describe(now)}); "
                    "wait for it to finish, or run on another private location"
                )
            storage.write_atomic(self.private, LOCK_KEY, self._encoded())
        holder = self.read()
        if holder is None or holder.owner != self.owner:
            raise ConfigError(f"{self.private.url} was locked by another run starting at the same moment")
        self._thread = threading.Thread(target=self._beat, name="cxr-dask-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                holder = self.read()
                if holder is None or holder.owner != self.owner:
                    return
                storage.write_atomic(self.private, LOCK_KEY, self._encoded())
            except Exception as error:
                # A missed beat is retried at the next one; the lease outlasts several.
                if not storage.is_storage_error(error):
                    raise
                log.warning("could not refresh the run lock (%s); trying again", type(error).__name__)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            holder = self.read()
            if holder is not None and holder.owner == self.owner:
                storage.remove(self.private, LOCK_KEY)
        except Exception as error:
            # Left behind, the lock is stale (this pid ends) and the next run takes it over.
            if not storage.is_storage_error(error):
                raise
            log.warning("could not remove the run lock (%s); the next run takes it over", type(error).__name__)

    def __enter__(self) -> PrivateLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RunClaim:
    """A run's hold on PRIVATE: the lock, then its journal started or resumed, each once.

    Entering takes the lock (``PrivateLock``: a live holder refuses, a stale one is taken
    over); ``check`` refuses an unfinished run of another input or output early, without
    writing anything; ``start`` resumes this input and output's unfinished run or starts
    a new one (the first call decides, later calls return the same journal). Leaving
    releases the lock. A claim is one run's: it cannot be entered twice.
    """

    def __init__(self, private: Location, input_url: str, output_url: str) -> None:
        self.private = private
        self.input = input_url
        self.output = output_url
        self.lock = PrivateLock(private)
        self._held = False
        self._started: tuple[RunJournal, bool] | None = None

    def of(self, private: Location, input_url: str, output_url: str) -> bool:
        """Whether this claim is for these locations (``pipeline.run`` refuses another's)."""
        return (self.private.url, self.input, self.output) == (private.url, input_url, output_url)

    def _require_held(self) -> None:
        if not self._held:
            raise RuntimeError("the run's claim is used outside its block (the lock is not held)")

    def check(self) -> None:
        """ConfigError if PRIVATE holds an unfinished run of another input or output."""
        from cxr_dask import journal  # pyarrow: imported once the workers started spawning

        self._require_held()
        journal.refuse_other_unfinished(self.private, self.input, self.output)

    def start(self) -> tuple[RunJournal, bool]:
        """The run's journal and whether it resumes an unfinished one; the same on every call."""
        from cxr_dask import journal

        self._require_held()
        if self._started is None:
            self._started = journal.start_or_resume(self.private, self.input, self.output)
        return self._started

    def __enter__(self) -> RunClaim:
        if self._held or self._started is not None:
            raise RuntimeError("a run's claim is entered once")
        self.lock.acquire()
        self._held = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._held = False
        self.lock.release()
