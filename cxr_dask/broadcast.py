"""Ship the identity map to every worker once, including workers that join or restart later.

A scattered future (``client.scatter(..., broadcast=True)``) reaches each worker once, but
it cannot be recomputed: when every worker holding it dies, pass 2 fails. A worker plugin
is installed on every current worker and on every worker that joins afterwards (a
restarted or preempted one), so the map survives worker loss and still travels once per
worker, never once per task. Tasks hold only an ``IdentityRef``, a name.

A run's map is saved in PRIVATE (the crosswalk) before pass 2, so ``broadcast_crosswalk``
sends the workers where it is instead (a few hundred bytes): each worker reads it from
PRIVATE once, at its first task. The client then never pickles the map (a copy of it,
and more in the messages that carry it: +56 MB at 100,000 files).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from distributed import Client
from distributed.diagnostics.plugin import WorkerPlugin

from cxr_dask import identity as identity_mod
from cxr_dask.deid.freetext import Vocabulary
from cxr_dask.identity import IdentityMap
from cxr_dask.storage import Location

#: Maps installed in this (worker) process, by broadcast name: the map, or what loads it
#: (or, for verify, its shared lookups).
_INSTALLED: dict[str, Any] = {}
_LOADING = threading.Lock()
_T = TypeVar("_T")


@dataclass(frozen=True)
class IdentityRef:
    """What a pass-2 task carries instead of the map: the name it was installed under."""

    name: str

    def resolve(self) -> Any:
        try:
            installed = _INSTALLED[self.name]
        except KeyError:
            raise RuntimeError(f"identity map {self.name} is not installed on this worker") from None
        if not isinstance(installed, CrosswalkLoader):
            return installed  # the map itself (or, for verify, any object broadcast so)
        with _LOADING:  # one load per worker process, whatever its threads
            installed = _INSTALLED.get(self.name, installed)
            if isinstance(installed, CrosswalkLoader):
                installed = installed()
                if self.name in _INSTALLED:  # not torn down meanwhile
                    _INSTALLED[self.name] = installed
            return installed


@dataclass(frozen=True)
class CrosswalkLoader:
    """Loads a run's identity map from the crosswalk it saved in PRIVATE (on a worker)."""

    private: Location
    secret: bytes
    vocabulary: Vocabulary | None

    def __call__(self) -> IdentityMap:
        identity = identity_mod.load_crosswalk(self.private, self.secret)
        identity.vocabulary = self.vocabulary
        return identity


class IdentityPlugin(WorkerPlugin):
    """Installs one identity map in each worker process for the length of a run."""

    def __init__(self, name: str, identity: object) -> None:
        self.name = name
        self.identity = identity

    def setup(self, worker) -> None:
        _INSTALLED[self.name] = self.identity

    def teardown(self, worker) -> None:
        _INSTALLED.pop(self.name, None)


def resolve(identity: _T | IdentityRef) -> _T:
    """The object a task's reference names (in one process, the object itself)."""
    return identity.resolve() if isinstance(identity, IdentityRef) else identity


@contextmanager
def broadcast_identity(client: Client, identity: object) -> Iterator[IdentityRef]:
    """Install ``identity`` (or what loads it on the worker) on every worker for the
    block, then remove it."""
    name = f"cxr-dask-identity-{uuid.uuid4().hex}"
    client.register_plugin(IdentityPlugin(name, identity), name=name)
    try:
        yield IdentityRef(name)
    finally:
        client.unregister_worker_plugin(name)


def broadcast_crosswalk(
    client: Client, private: Location, secret: bytes, vocabulary: Vocabulary | None
) -> contextlib.AbstractContextManager[IdentityRef]:
    """``broadcast_identity`` of the map saved in PRIVATE (``identity.save_crosswalk``):
    each worker reads it there once; the client sends its location, not the map."""
    return broadcast_identity(client, CrosswalkLoader(private, secret, vocabulary))
