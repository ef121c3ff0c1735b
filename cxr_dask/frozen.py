"""The last module the fork server imports before it forks any worker: it freezes the objects
of every import before it (``gc.freeze``).

A forked worker starts with the server's objects (~hundreds of thousands: distributed,
pydicom, pyarrow, OpenCV's bindings, the passes) in its garbage collector's oldest
generation; its first full collection walks them all, writing to each object's header:
tens of ms of CPU before it registers, and a copy of most of the pages it shares with
the server. Frozen, they are left out of every collection in every worker (Python's own
advice for a process that forks without exec); what the worker allocates is collected
as before. Just before, it does once what each worker would do at its first task
(``preload.first_uses``: pyarrow's probes, the shipped tables), so the workers share that too.
A server forked from ``cxr-dask run`` imported all that as its parent does its own start-up
(``cxr_dask.startup``: the garbage collector off among others); put back here, before any
worker is forked: each worker collects what it allocates.
"""

from __future__ import annotations

import gc

from cxr_dask import preload, startup

preload.first_uses()  # what each worker would do at its first task: its objects frozen too
gc.freeze()
startup.end()  # where the server was forked from the command's start-up: every worker collects
