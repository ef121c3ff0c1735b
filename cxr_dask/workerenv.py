"""How the worker processes of a LocalCluster start: their environment, their preload, and
the process ``cxr-dask run`` forks them from.

Imports no distributed (dask's config only), so the CLI starts that process first: it
imports distributed and pydicom while the command's own process does the same.
"""

from __future__ import annotations

import contextlib
import os
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import dask.config

#: What distributed's own configuration sets for every worker it spawns. Setting any of
#: glibc's malloc parameters turns off its dynamic mmap threshold, so with this alone
#: every buffer above 128 KiB (each 15 MB file, read and written) is a fresh ``mmap``
#: given back with ``munmap`` when freed: 3,700-6,400 page faults, zero-filled, per 15 MB
#: file, about 35 ms a file of system time (docs/scaling.md, "inside a worker").
DISTRIBUTED_TRIM_DEFAULT = "65536"

#: The allocator settings of the workers ``connect`` starts: buffers up to 32 MiB (glibc's
#: largest mmap threshold; a CXR image is 5-30 MB) come from the heap and are reused file
#: after file, and up to 64 MiB of free heap is kept rather than given back each time.
WORKER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(64 * 2**20)}


def worker_environ() -> dict[str, str]:
    """The environment a LocalCluster worker is spawned with (``nanny.pre-spawn-environ``).

    distributed's trim threshold is replaced by ``WORKER_MALLOC_ENV``; a value the user
    chose is kept: in the dask config (or ``DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON``),
    or exported in the shell, which distributed prefers to its config. Only the spawn
    environment works: glibc reads these when the process starts.
    """
    _distributed_defaults()
    configured: dict[str, Any] = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    env = {key: str(value) for key, value in configured.items()}
    chosen = os.environ.get("MALLOC_TRIM_THRESHOLD_") or env.get("MALLOC_TRIM_THRESHOLD_", DISTRIBUTED_TRIM_DEFAULT)
    # ours, left in this process's environment by an earlier cluster (``_spawn_with``), is not the user's
    if chosen in (DISTRIBUTED_TRIM_DEFAULT, WORKER_MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]):
        env["MALLOC_TRIM_THRESHOLD_"] = WORKER_MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]
        env.setdefault("MALLOC_MMAP_THRESHOLD_", WORKER_MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"])
    return env


def _spawn_with(env: dict[str, str]) -> None:
    """Put the allocator settings into this process's environment as well.

    A nanny takes a variable from ``os.environ`` over its config, and every nanny writes
    its settings there (an earlier cluster of this process leaves distributed's trim
    threshold behind); it would write these there itself when it spawns.
    """
    os.environ.update({key: value for key, value in env.items() if key.startswith("MALLOC_")})


#: Whether ``_distributed_defaults`` has read distributed's YAML in this process.
_DEFAULTS_READ: list[bool] = []


def _distributed_defaults() -> None:
    """distributed's own settings in dask's config, as its import adds them (the workers'
    ``pre-spawn-environ``, its start method), for a process that has not imported it yet;
    read once (its YAML was ~25 ms of parsing each time, on the way to starting the workers)."""
    if "distributed" in sys.modules or _DEFAULTS_READ:
        return
    spec = find_spec("distributed")  # finds the package without importing it
    if spec is None or spec.origin is None:
        return
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where built: the same values, ~6x faster
    defaults = yaml.load((Path(spec.origin).parent / "distributed.yaml").read_text(), Loader=loader)
    dask.config.update_defaults(defaults)
    _DEFAULTS_READ.append(True)


#: Imported by every worker as it starts (distributed's ``preload``, ``cxr_dask.preload``):
#: the modules of both passes, so a worker pays its ~0.5-1 s of imports while the client is
#: still importing and checking, not at the first task of pass 1; and pyarrow is told that
#: pandas is absent (``arrow_without_pandas``).
WORKER_PRELOAD = ("cxr_dask.preload",)

#: What the process the run's workers are forked from imports once, before it forks any
#: (multiprocessing's ``forkserver``, ``Starting(fork=True)``): distributed and pydicom,
#: ~0.5 s of CPU that each spawned worker spent itself, on the same two cores as the
#: client's start-up and the other worker's (docs/scaling.md, "Two workers on two cores").
FORK_PRELOAD = WORKER_PRELOAD
#: The thread settings under which those imports start no thread (numpy's OpenBLAS starts
#: its pool as it loads): only a process without threads can be forked safely. distributed
#: spawns its workers with these (its ``pre-spawn-environ``); a user who chose others gets
#: spawned workers.
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
#: pyarrow's bundled jemalloc starts a background thread as pyarrow loads; with it off, the
#: fork server imports pyarrow and both passes too (``FORK_PRELOAD_PASSES``), ~0.13 s of
#: CPU that each forked worker then no longer spends in ``preload.dask_setup``. The
#: workers' Arrow buffers come from pyarrow's default pool (mimalloc), not jemalloc, so
#: the thread had nothing to purge there. Only where the user set no jemalloc options of
#: their own; never in the client's process, whose Arrow pool is jemalloc.
ARROW_NO_THREAD = {"JE_ARROW_MALLOC_CONF": "background_thread:false"}
#: ``FORK_PRELOAD`` and the passes (which import pyarrow), under ``ARROW_NO_THREAD``.
FORK_PRELOAD_PASSES = (*FORK_PRELOAD, "cxr_dask.pipeline")


def fork_preload(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The fork server's environment and the modules it imports, for workers of ``env``."""
    if "JE_ARROW_MALLOC_CONF" in env or "JE_ARROW_MALLOC_CONF" in os.environ:
        return env, list(FORK_PRELOAD)
    return {**env, **ARROW_NO_THREAD}, list(FORK_PRELOAD_PASSES)


def fork_server(env: dict[str, str] | None = None) -> bool:
    """Start the process a LocalCluster's workers are then forked from, with ``env`` (a
    spawned worker's environment, ``worker_environ()`` if not given) and ``FORK_PRELOAD``
    imported once; False (the workers are spawned) where the user chose a start method of
    their own, or thread settings under which those imports would start threads.

    The server is this process's (multiprocessing keeps one a process); each worker it
    forks inherits its environment, allocator settings included (read once, as it
    started), and ends when this process does (distributed's ``parent_alive_pipe``).
    """
    _distributed_defaults()
    if dask.config.get("distributed.worker.multiprocessing-method", default="spawn") != "spawn":
        return False
    env = worker_environ() if env is None else env
    if any(env.get(name) != value for name, value in SINGLE_THREADED.items()):
        return False
    import multiprocessing.forkserver

    os.environ.update(env)  # the server's environment is every forked worker's (a nanny sets it before spawning)
    server_env, modules = fork_preload(env)
    multiprocessing.get_context("forkserver").set_forkserver_preload(modules)
    only_server = {key: value for key, value in server_env.items() if key not in env}
    os.environ.update(only_server)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for key in only_server:  # this process's own pyarrow keeps its jemalloc settings
            os.environ.pop(key, None)
    return True


def stop_fork_server() -> None:
    """End this process's fork server now, for a command refused while the server may still
    be importing (``cli._fork_server_first`` starts it before the settings are read): it
    sees its parent gone only once its imports are done (~1 s), holding the command's
    output streams open until then (a caller reading them to their end waits). Its
    workers, if it forked any, end with this process as ever."""
    import multiprocessing.forkserver
    import signal

    pid = getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)  # multiprocessing's own
    if pid:
        with contextlib.suppress(OSError):  # gone already
            os.kill(pid, signal.SIGTERM)
