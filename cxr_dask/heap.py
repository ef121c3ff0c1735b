"""Give the client's freed memory back to the system: Arrow's, as it is freed, and the
heap's between steps.

**Arrow** (``load_arrow``). pyarrow's ``set_memory_pool`` chooses the pool of what
pyarrow's Python functions allocate, not the C++ library's own default pool, which
Parquet's reader and writer use for their pages, encoders and compression buffers; that
is mimalloc in pyarrow's wheels, which keeps the pages it freed. At 100,000 files the
crosswalk's write left ~24 MB of them and minting ~20 MB, so each step of the client
built its peak on the last one's leftovers, more at 100,000 files than at 20,000
(``docs/scaling.md``). Both defaults are read once, as pyarrow loads: the client loads
it with jemalloc as the C++ default and jemalloc's decay at 0 from the start (pyarrow's
``jemalloc_set_decay_ms`` sets it for arenas made later, not for the main thread's).

**The heap** (``release``). The client's steps (minting, saving the map, pass 2's set-up, the commit) free what they
made before the next starts, but glibc's malloc keeps freed pages inside its heap when a
live block sits above them (Parquet's writer and reader, numpy's arrays and Python's
lists come from it; Arrow's buffers from jemalloc, which returns them at once). Kept, each
step's leftovers raised the floor the next step's peak was built on, and by more at
100,000 files than at 20,000 (``docs/scaling.md``). ``malloc_trim`` hands them back;
elsewhere than glibc this is a no-op.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable

#: The client's Arrow allocator, read by pyarrow's C++ library and its jemalloc as they
#: load: jemalloc as the default pool (not mimalloc), freed pages returned at once, and no
#: background thread (with no decay it has nothing to purge). A value the user set wins.
CLIENT_ARROW_ENV = {
    "ARROW_DEFAULT_MEMORY_POOL": "jemalloc",
    "JE_ARROW_MALLOC_CONF": "background_thread:false,dirty_decay_ms:0,muzzy_decay_ms:0",
}


def load_arrow() -> bool:
    """Import pyarrow under ``CLIENT_ARROW_ENV`` (the client's process, before anything
    else imports it); the environment is given back at once, so no process started later
    (a worker) inherits it. False when pyarrow was loaded already (its pools are chosen)
    or the platform's wheels have no jemalloc (not Linux)."""
    if "pyarrow" in sys.modules or not sys.platform.startswith("linux"):
        return False
    chosen = {name: value for name, value in CLIENT_ARROW_ENV.items() if name not in os.environ}
    os.environ.update(chosen)
    try:
        import pyarrow as pa

        pa.allocate_buffer(1)  # jemalloc reads its options as it first allocates
    finally:
        for name in chosen:
            os.environ.pop(name, None)
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` from the C library this process already runs on (its own
    symbols, ``CDLL(None)``): ``ctypes.util.find_library`` would run ``ldconfig -p`` in a
    subprocess (a fork of the client, 5-13 ms between pass 1 and pass 2) to find the file."""
    try:
        libc = ctypes.CDLL(None)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    return trim


#: Times ``release`` handed freed pages back (a count for tests).
releases = 0


def release() -> None:
    """Freed heap pages back to the system (glibc's ``malloc_trim(0)``: a few ms)."""
    global releases
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
        releases += 1
