"""How the worker processes of a LocalCluster start: their environment, their preload, and
the process ``cxr-dask run`` forks them from.

Imports neither dask nor distributed at its top: the CLI prepares its own process before
importing numpy (``fork_server_ahead``) and forks the server from it once it has imported
distributed and pydicom (``fork_server_here``), so the server and every worker share those
imports instead of importing them again; elsewhere ``fork_server`` spawns it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

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
    import dask.config

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
    import dask.config

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
#: Imported last by the fork server: freezes what the imports before it made, so no
#: forked worker's garbage collector walks (and copies) them (``cxr_dask.frozen``).
FREEZE = "cxr_dask.frozen"


def fork_preload(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The fork server's environment and the modules it imports, for workers of ``env``."""
    if "JE_ARROW_MALLOC_CONF" in env or "JE_ARROW_MALLOC_CONF" in os.environ:
        return env, [*FORK_PRELOAD, FREEZE]
    return {**env, **ARROW_NO_THREAD}, [*FORK_PRELOAD_PASSES, FREEZE]


#: The Python versions whose ``multiprocessing.forkserver`` (its private state, ``main``'s
#: arguments, no authentication key) ``_fork_server`` does the work of; on others the
#: server is spawned.
FORKS_HERE_ON = (3, 11)
FORKS_HERE_UNTIL = (3, 13)

#: The environment of the fork server this process started (``_start``), while it runs.
_STARTED: list[dict[str, str]] = []
#: True while the running server is a fork of this process (``fork_server_here``).
_FORKED_HERE: list[bool] = []


def _ahead_environ() -> dict[str, str] | None:
    """What ``worker_environ()`` gives where dask's config is distributed's own, without
    importing dask (~0.1 s of CPU): None where the user may have set one of its values (a
    ``DASK_*`` variable, an allocator setting of theirs). A dask config file setting it is
    found by ``fork_server``'s check, which starts the server again."""
    if any(name.startswith("DASK_") for name in os.environ):
        return None
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") not in (
        None,
        "",
        DISTRIBUTED_TRIM_DEFAULT,
        WORKER_MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"],
    ):
        return None
    return {**SINGLE_THREADED, **WORKER_MALLOC_ENV}


#: The thread settings this process set for its own imports (their earlier values), from
#: ``fork_server_ahead`` until ``fork_server_here`` forks the server from it.
_AHEAD: dict[str, str | None] = {}


def fork_server_ahead() -> None:
    """Prepare this process to be the one its fork server is forked from (the CLI, when its
    command line says a LocalCluster of several workers, before it imports numpy through
    distributed): numpy's OpenBLAS then loads under ``SINGLE_THREADED`` and starts no
    thread, so ``fork_server_here`` can fork once this process has imported distributed
    and pydicom, which the server and every worker then share instead of importing them
    again (~0.6 s of CPU). Nothing is done where no guess of the workers' environment is
    safe (``_ahead_environ``), nor once numpy is imported: the server is then spawned."""
    if _ahead_environ() is None or "numpy" in sys.modules or _STARTED or _AHEAD:
        return
    _AHEAD.update({key: os.environ.get(key) for key in SINGLE_THREADED})
    os.environ.update(SINGLE_THREADED)


def _threads() -> int:
    """This process's threads, the operating system's count (OpenBLAS's pool included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no /proc: not known to be one
        return 0


def may_fork_here() -> bool:
    """Whether ``fork_server_here`` may still fork this process (prepared, one thread): what
    it would share is worth importing before it (pydicom); else after the workers start."""
    return bool(_AHEAD) and _threads() == 1


def fork_server_here() -> bool:
    """Start the fork server as a fork of this process, which ``fork_server_ahead`` prepared
    and which has imported distributed and pydicom since: the server imports only what is
    left of ``fork_preload``'s modules (the pixel modules, OpenCV, pyarrow and the passes).
    Only where it is as safe as a spawned server: this process runs one thread, has not
    imported pyarrow (its jemalloc's thread), and the workers' environment is the one
    guessed (dask's config as distributed's, ``fork_server`` checks it again); False
    otherwise, ``cluster.Starting`` then spawns the server. This process's thread settings
    are given back either way (distributed's nanny sets them again as it starts a worker)."""
    if not _AHEAD:
        return False
    try:
        import multiprocessing.forkserver

        mirrored = FORKS_HERE_ON <= sys.version_info[:2] <= FORKS_HERE_UNTIL
        if not mirrored or hasattr(multiprocessing.forkserver._forkserver, "_forkserver_authkey"):
            return False  # ``_fork_server`` mirrors these versions' ``multiprocessing.forkserver``
        import dask.config

        env = worker_environ()
        method = dask.config.get("distributed.worker.multiprocessing-method", default="spawn")
        if env != _ahead_environ() or method != "spawn" or _threads() != 1 or "pyarrow" in sys.modules or _STARTED:
            return False
        _fork_server(env)
        return True
    finally:
        _give_back()


def serves_from_here() -> bool:
    """Whether the workers of this process's LocalCluster come from a fork of this very
    process (``fork_server_here``, kept by ``fork_server``): they then run with its
    environment, credentials and user, on its host, and differ from it only by
    ``worker_environ()``'s thread and allocator settings, which ``fork_server_here``
    checked are all the workers are given. A storage check this process passed holds for
    them (``pipeline.run``'s ``check_workers``)."""
    return bool(_FORKED_HERE) and bool(_STARTED)


def _give_back() -> None:
    """This process's thread settings as they were before ``fork_server_ahead``."""
    for key, value in _AHEAD.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _AHEAD.clear()


#: glibc's ``mallopt`` parameters for the allocator settings a forked server cannot read
#: from its environment at start, as a spawned one does (the same effect: each also turns
#: off the dynamic mmap threshold).
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD


def _fork_server(env: dict[str, str]) -> None:
    """What ``multiprocessing.forkserver.ensure_running`` does, the server forked from this
    process instead of spawned: its listening socket, the pipe it watches its parent by,
    and multiprocessing's state, so the nannies' requests reach it as they would the other."""
    import multiprocessing.forkserver
    import socket
    from multiprocessing import connection, resource_tracker, util

    server_env, modules = fork_preload(env)
    multiprocessing.get_context("forkserver").set_forkserver_preload(modules)
    resource_tracker.ensure_running()  # shared with the workers, as ``ensure_running`` starts it first
    server: Any = multiprocessing.forkserver._forkserver  # its private state, which ``ensure_running`` sets
    with socket.socket(socket.AF_UNIX) as listener:
        address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined]  # what ensure_running uses
        listener.bind(address)
        if not util.is_abstract_socket_namespace(address):
            os.chmod(address, 0o600)
        listener.listen()
        alive_r, alive_w = os.pipe()
        sys.stdout.flush()  # nothing buffered here is written twice
        sys.stderr.flush()
        # the server's garbage collector leaves this process's objects alone (``cxr_dask.frozen``)
        gc.freeze()
        try:
            pid = os.fork()
            if pid == 0:
                _serve(listener.fileno(), alive_r, alive_w, server_env, modules)  # never returns
        finally:
            gc.unfreeze()  # here, collected as before
        os.close(alive_r)
    server._forkserver_address, server._forkserver_alive_fd, server._forkserver_pid = address, alive_w, pid
    _STARTED[:] = [dict(env)]
    _FORKED_HERE[:] = [True]


def _serve(listener: int, alive_r: int, alive_w: int, env: dict[str, str], modules: list[str]) -> None:
    """The forked server: a worker's environment and allocator settings, the root logger as a
    new interpreter has it (the command's format and level are its own), then
    multiprocessing's server loop until its parent is gone. Never returns."""
    import ctypes
    import logging

    code = 0
    try:
        os.close(alive_w)
        os.environ.update(env)
        libc = ctypes.CDLL(None)
        for name, parameter in _MALLOPT.items():
            if name in env:
                libc.mallopt(parameter, int(env[name]))
        for handler in list(logging.root.handlers):
            logging.root.removeHandler(handler)
        logging.root.setLevel(logging.WARNING)
        import multiprocessing.forkserver

        multiprocessing.forkserver.main(listener, alive_r, modules)
    except SystemExit:  # its parent ended
        pass
    except BaseException:
        code = 1
        sys.excepthook(*sys.exc_info())
        sys.stderr.flush()
    finally:
        os._exit(code)  # not this process's parent's exit handlers


def fork_server(env: dict[str, str] | None = None) -> bool:
    """Start the process a LocalCluster's workers are then forked from, with ``env`` (a
    spawned worker's environment, ``worker_environ()`` if not given) and ``FORK_PRELOAD``
    imported once; False (the workers are spawned) where the user chose a start method of
    their own, or thread settings under which those imports would start threads.

    The server is this process's (multiprocessing keeps one a process); each worker it
    forks inherits its environment, allocator settings included (read once, as it
    started), and ends when this process does (distributed's ``parent_alive_pipe``). A
    server already started (``fork_server_here``) is kept if its environment is ``env``,
    else stopped (and started again with ``env`` where forking is safe).
    """
    import dask.config

    _distributed_defaults()
    env = worker_environ() if env is None else env
    method = dask.config.get("distributed.worker.multiprocessing-method", default="spawn")
    if method != "spawn" or any(env.get(name) != value for name, value in SINGLE_THREADED.items()):
        stop_fork_server()  # one started earlier for other workers
        return False
    if _STARTED and _STARTED[0] != env:
        stop_fork_server()
    _start(env)
    return True


def _start(env: dict[str, str]) -> None:
    """Start (or keep) this process's fork server with ``env`` and its preload. The server's
    environment is every forked worker's, allocator and thread settings included; this
    process's own is given back as it was once the server is started."""
    import multiprocessing.forkserver

    server_env, modules = fork_preload(env)
    multiprocessing.get_context("forkserver").set_forkserver_preload(modules)
    before = {key: os.environ.get(key) for key in server_env}
    os.environ.update(server_env)
    try:
        multiprocessing.forkserver.ensure_running()  # a running server is kept as it is
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    _STARTED[:] = [dict(env)]


def stop_fork_server() -> None:
    """End the fork server this process started, and wait for its end: for a command
    refused (the lock, the journal) while the server may still be importing, which it
    would finish before seeing its parent gone, holding the command's output streams open
    until then; or one started for another environment. Its
    workers, if it forked any, end with this process as ever. A server this module did not
    start is left alone. A process prepared to fork one (``fork_server_ahead``) and refused
    before it did gets its thread settings back."""
    _give_back()
    if not _STARTED:
        return
    import multiprocessing.forkserver
    import multiprocessing.util
    import signal

    server: Any = multiprocessing.forkserver._forkserver  # multiprocessing's own state: reset as its ``_stop`` does
    with server._lock:
        pid, alive, address = server._forkserver_pid, server._forkserver_alive_fd, server._forkserver_address
        if pid:
            with contextlib.suppress(OSError):  # gone already
                os.kill(pid, signal.SIGTERM)  # now, not after its imports (it handles no SIGTERM)
            with contextlib.suppress(ChildProcessError):  # reaped already
                os.waitpid(pid, 0)
        if alive is not None:
            with contextlib.suppress(OSError):
                os.close(alive)
        if address and not multiprocessing.util.is_abstract_socket_namespace(address):  # a socket file
            with contextlib.suppress(OSError):
                os.unlink(address)
        server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None
    _STARTED.clear()
    _FORKED_HERE.clear()
