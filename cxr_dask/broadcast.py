"""Ship the identity map to every worker once, including workers that join or restart later.

A scattered future (``client.scatter(..., broadcast=True)``) reaches each worker once, but
it cannot be recomputed: when every worker holding it dies, pass 2 fails. A worker plugin
is installed on every current worker and on every worker that joins afterwards (a
restarted or preempted one), so the map survives worker loss and still travels once per
worker, never once per task. Tasks hold only an ``IdentityRef``, a name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from distributed import Client
from distributed.diagnostics.plugin import WorkerPlugin

from cxr_dask.identity import IdentityMap

#: Maps (or verify's shared lookups) installed in this (worker) process, by broadcast name.
_INSTALLED: dict[str, Any] = {}
_T = TypeVar("_T")


@dataclass(frozen=True)
class IdentityRef:
    """What a pass-2 task carries instead of the map: the name it was installed under."""

    name: str

    def resolve(self) -> Any:
        try:
            return _INSTALLED[self.name]
        except KeyError:
            raise RuntimeError(f"identity map {self.name} is not installed on this worker") from None


class IdentityPlugin(WorkerPlugin):
    """Installs one identity map in each worker process for the length of a run."""

    def __init__(self, name: str, identity: IdentityMap) -> None:
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
def broadcast_identity(client: Client, identity: IdentityMap) -> Iterator[IdentityRef]:
    """Install ``identity`` on every worker for the block, then remove it."""
    name = f"cxr-dask-identity-{uuid.uuid4().hex}"
    client.register_plugin(IdentityPlugin(name, identity), name=name)
    try:
        yield IdentityRef(name)
    finally:
        client.unregister_worker_plugin(name)
