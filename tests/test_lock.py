"""The PRIVATE lock: one run at a time, stale locks of dead runs taken over."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from cxr_dask import lock
from cxr_dask.errors import ConfigError
from cxr_dask.storage import Location


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_record(private: Location, **values) -> None:
    record = {"owner": "someone-else", "host": socket.gethostname(), "pid": 1, "heartbeat": time.time()}
    record.update(values)
    path = f"{private.root}/{lock.LOCK_KEY}"
    with open(path, "w") as handle:
        json.dump(record, handle)


def test_second_holder_is_refused_until_the_first_releases(tmp_path):
    private = Location(str(tmp_path))
    first = lock.PrivateLock(private)
    first.acquire()
    with pytest.raises(ConfigError, match="in use by another run"):
        lock.PrivateLock(private).acquire()
    first.release()
    assert not (tmp_path / lock.LOCK_KEY).exists()
    with lock.PrivateLock(private):
        assert (tmp_path / lock.LOCK_KEY).exists()


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    private = Location(str(tmp_path))
    write_record(private, pid=dead_pid())
    with lock.PrivateLock(private) as taken:
        assert taken.read().owner == taken.owner


def test_live_holder_on_another_host_is_refused_until_its_lease_expires(tmp_path):
    private = Location(str(tmp_path))
    write_record(private, host="other-node", pid=4242, heartbeat=time.time() - 30)
    with pytest.raises(ConfigError, match="host other-node"):
        lock.PrivateLock(private, lease_seconds=600).acquire()
    with lock.PrivateLock(private, lease_seconds=10) as taken:
        assert taken.read().host == socket.gethostname()


def test_heartbeat_keeps_the_lease_fresh(tmp_path):
    private = Location(str(tmp_path))
    with lock.PrivateLock(private, heartbeat_seconds=0.05) as held:
        first = held.read().heartbeat
        deadline = time.time() + 5
        while held.read().heartbeat == first and time.time() < deadline:
            time.sleep(0.02)
        assert held.read().heartbeat > first


def test_a_run_claim_holds_the_lock_once_and_starts_its_run_once(tmp_path):
    """No nested holds: a second claim in the same process is refused like another run's."""
    private = Location(str(tmp_path))
    with lock.RunClaim(private, "s3://archive/a", "s3://research/a") as claim:
        assert claim.lock.read().owner == claim.lock.owner
        with pytest.raises(ConfigError, match="in use by another run"), lock.RunClaim(private, "x", "y"):
            pass
        claim.check()  # nothing unfinished yet
        first = claim.start()
        assert claim.start() is first and first[1] is False
    assert not (tmp_path / lock.LOCK_KEY).exists()
    with pytest.raises(RuntimeError, match="outside its block"):
        claim.start()
    with lock.RunClaim(private, "s3://archive/a", "s3://research/a") as again:
        journal, resumed = again.start()
    assert resumed and journal.run_id == first[0].run_id
    other = lock.RunClaim(private, "s3://archive/b", "s3://research/a")
    with other, pytest.raises(ConfigError, match="unfinished run"):
        other.check()
