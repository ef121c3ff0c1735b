"""Give the client's freed heap memory back to the system between its steps.

The client's steps (minting, saving the map, pass 2's set-up, the commit) free what they
made before the next starts, but glibc's malloc keeps freed pages inside its heap when a
live block sits above them (Parquet's writer and reader, numpy's arrays and Python's
lists come from it; Arrow's buffers from jemalloc, which returns them at once). Kept, each
step's leftovers raised the floor the next step's peak was built on, and by more at
100,000 files than at 20,000 (``docs/scaling.md``). ``malloc_trim`` hands them back;
elsewhere than glibc this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
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
