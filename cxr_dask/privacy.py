"""Keep header values out of logs and warnings, for as long as cxr-dask works.

pydicom's value validation warns *and logs* the offending value ("Invalid value for VR
DA: '...'"), and some of its parse errors quote raw bytes. On a de-identification worker
that would copy PHI into worker logs, so every per-file task runs inside
``quiet_pydicom()``: values are still validated where it matters (the header walk decides
what survives), but never echoed.

The switch is scoped, not process-wide: a notebook that imports cxr-dask, or calls a
per-file function, gets pydicom's settings back as they were when the last block ends.
pydicom's settings are one global object, so the blocks of all threads share one
state: the first to enter silences, the last to leave restores. On a Dask cluster
``QuietPydicom`` holds the same block open on every worker for the length of a run.
"""

from __future__ import annotations

import logging
import threading
import warnings
from contextlib import ContextDecorator
from dataclasses import dataclass
from typing import Any

import pydicom.config
from distributed.diagnostics.plugin import WorkerPlugin

_LOGGER = logging.getLogger("pydicom")


@dataclass
class _Saved:
    """pydicom's settings as they were before the first block, and the warnings' state."""

    reading: int
    writing: int
    level: int
    propagate: bool
    warnings: warnings.catch_warnings


def _silence() -> _Saved:
    saved = _Saved(
        reading=pydicom.config.settings.reading_validation_mode,
        writing=pydicom.config.settings.writing_validation_mode,
        level=_LOGGER.level,
        propagate=_LOGGER.propagate,
        warnings=warnings.catch_warnings(),
    )
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    _LOGGER.setLevel(logging.CRITICAL)
    _LOGGER.propagate = False
    saved.warnings.__enter__()
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
    return saved


def _restore(saved: _Saved) -> None:
    saved.warnings.__exit__(None, None, None)
    _LOGGER.propagate = saved.propagate
    _LOGGER.setLevel(saved.level)
    pydicom.config.settings.writing_validation_mode = saved.writing
    pydicom.config.settings.reading_validation_mode = saved.reading


_lock = threading.Lock()
_depth = 0
_saved: _Saved | None = None


def _enter() -> None:
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = _silence()
        _depth += 1


def _leave() -> None:
    global _depth, _saved
    with _lock:
        _depth -= 1
        if _depth == 0 and _saved is not None:
            _restore(_saved)
            _saved = None


class quiet_pydicom(ContextDecorator):
    """Stop pydicom from echoing header values to logs and warnings inside the block.

    Re-entrant and shared by threads; usable as a decorator too (``@quiet_pydicom()``),
    and a decorated function pickles by value (no generator inside, unlike a
    ``contextlib.contextmanager``), as a script's function sent to a worker does.
    """

    def __enter__(self) -> None:
        _enter()

    def __exit__(self, *exc: object) -> None:
        _leave()


class QuietPydicom(WorkerPlugin):
    """Keeps ``quiet_pydicom`` on in a worker from setup to teardown (``quiet_workers``)."""

    def setup(self, worker: Any) -> None:
        _enter()

    def teardown(self, worker: Any) -> None:
        _leave()


#: The name ``QuietPydicom`` is registered under on a cluster (``cluster.Starting``).
QUIET_PLUGIN = "cxr-dask-quiet-pydicom"
