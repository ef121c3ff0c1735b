"""Where the Dask work runs: a LocalCluster, or any existing scheduler by address."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import multiprocessing.util
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import SemLock
from types import TracebackType
from typing import Any

import dask
import distributed.utils
from distributed import Client, LocalCluster, Scheduler
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.utils import sync
from tornado import web

from cxr_dask.config import ClusterSettings, RunConfig
from cxr_dask.workerenv import DISTRIBUTED_TRIM_DEFAULT as DISTRIBUTED_TRIM_DEFAULT
from cxr_dask.workerenv import FORK_PRELOAD as FORK_PRELOAD
from cxr_dask.workerenv import SINGLE_THREADED as SINGLE_THREADED
from cxr_dask.workerenv import WORKER_MALLOC_ENV as WORKER_MALLOC_ENV
from cxr_dask.workerenv import WORKER_PRELOAD as WORKER_PRELOAD
from cxr_dask.workerenv import _spawn_with
from cxr_dask.workerenv import fork_server as fork_server
from cxr_dask.workerenv import worker_environ as worker_environ

log = logging.getLogger(__name__)


class _NoPandas:
    """An import finder that says pandas is not installed (see ``arrow_without_pandas``)."""

    refused: tuple[str, ...] = ("pandas",)

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name in self.refused:
            raise ModuleNotFoundError(f"{name} is not needed by cxr-dask's processes", name=name)


class _NoRequests(_NoPandas):
    """The same for requests and tqdm (see ``pydicom_without_requests``)."""

    refused = ("requests", "tqdm")


def pydicom_without_requests() -> None:
    """Import pydicom, its downloader settling once that requests is absent.

    ``pydicom.data.download`` (imported by pydicom's pixel modules, only ever used to fetch
    pydicom's own test files from the internet) imports requests if it can, some 60 modules
    and ~35 ms of CPU in every process of a run (the client and each worker, as they start);
    without it the downloader falls back to ``urllib``. It imports tqdm too, for a download's
    progress bar (~20-30 ms, importlib's metadata scan of every installed package for tqdm's
    version), before the fork that shares pydicom with the workers: it then draws none. Both
    stay importable afterwards (the client's progress bar imports tqdm).
    A process that already imported ``pydicom.data`` is left alone (the fork server
    imports pydicom itself first, its workers only then the passes).
    """
    if "pydicom.data" in sys.modules:
        return
    finder = _NoRequests()
    sys.meta_path.insert(0, finder)
    try:
        import pydicom.data  # noqa: F401
    finally:
        sys.meta_path.remove(finder)


#: Whether ``arrow_without_pandas`` has settled pyarrow's probes in this process (or the
#: process it was forked from).
_ARROW_SETTLED: list[bool] = []


def arrow_without_pandas() -> None:
    """Let pyarrow settle, once, that this process has no pandas.

    pyarrow's first conversion of Python values (any ``pa.array``) imports pandas to ask
    whether they are pandas objects: some 35 MB of RSS that a run never uses, and 0.3-0.5 s
    of CPU: in the client, and in every worker at its first pass-1 task (before the work
    of both workers can start). With the import refused once, pyarrow remembers "no
    pandas"; pandas itself stays importable afterwards (``to_pandas`` still works). A
    process that already imported pandas is left alone.
    """
    if "pandas" in sys.modules or _ARROW_SETTLED:
        return
    import numpy as np
    import pyarrow as pa

    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])
        # a NumPy array's first conversion asks whether it is masked: numpy imports
        # ``numpy.ma`` for that (~10-15 ms of CPU, in the client's listing of the input and
        # at each worker's first pass-2 task otherwise)
        pa.array(np.zeros(1, np.int64))
    finally:
        sys.meta_path.remove(finder)
    _ARROW_SETTLED.append(True)  # a worker forked from here finds it settled


#: distributed's default ``worker-saturation``: a worker holds ceil(1.1 x threads) tasks of
#: a pass, i.e. two for a one-thread worker, one running and one waiting behind it.
DISTRIBUTED_SATURATION_DEFAULT = 1.1
#: What the scheduler of ``local_cluster`` uses instead: a task goes to a worker when one of
#: its threads is free, so the worker done first takes the next task (the last wave's small
#: ones, ``RunConfig.task_sizes_for``) instead of idling while a whole task waits queued on
#: another worker. It costs a message's round trip (~ms) between two tasks of seconds.
WORKER_SATURATION = 1.0


def scheduler_settings() -> dict[str, Any]:
    """The dask config the run's scheduler starts with: ``WORKER_SATURATION`` unless the
    user chose a saturation of their own."""
    chosen = dask.config.get("distributed.scheduler.worker-saturation", default=DISTRIBUTED_SATURATION_DEFAULT)
    if chosen != DISTRIBUTED_SATURATION_DEFAULT:
        return {}
    return {"distributed.scheduler.worker-saturation": WORKER_SATURATION}


def local_cluster(**kwargs: Any) -> LocalCluster:
    """A LocalCluster of worker processes spawned with ``worker_environ()``, its scheduler
    started with ``scheduler_settings()``.

    Takes LocalCluster's own arguments; use it wherever a notebook or script starts its
    own cluster for a run, or each 15 MB file costs its workers ~35 ms of page faults.
    """
    env = worker_environ()
    _spawn_with(env)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env, **scheduler_settings()}):
        return LocalCluster(processes=True, **kwargs)


def _import_dashboard() -> None:
    import distributed.dashboard.scheduler  # noqa: F401  (bokeh: ~0.4 s of imports)


class _DashboardOnFirstVisit(web.RequestHandler):
    """Every path the scheduler's HTTP server does not serve itself, until the dashboard is
    connected: the first visit imports bokeh (off the scheduler's event loop), connects the
    dashboard to the same server and sends the browser back to the same address."""

    def initialize(self, scheduler: Scheduler, lazy: web.Application) -> None:
        self.scheduler = scheduler
        self.lazy = lazy

    async def get(self, *args: str) -> None:
        await asyncio.get_running_loop().run_in_executor(None, _import_dashboard)
        routing = self.scheduler.http_application
        if self.lazy in routing.applications:  # the first of concurrent visits connects
            routing.applications.remove(self.lazy)
            await _connect_dashboard(self.scheduler)
        self.redirect(self.request.uri)


def _dashboard_on_first_visit(scheduler: Scheduler) -> None:
    """Serve the dashboard from its first visit on (``_DashboardOnFirstVisit``)."""
    application = web.Application()
    options = {"scheduler": scheduler, "lazy": application}
    application.add_handlers(r".*", [(r"/.*", _DashboardOnFirstVisit, options)])
    scheduler.http_application.add_application(application)


class _Arrivals(SchedulerPlugin):
    """Counts the workers that reached the scheduler of a LocalCluster still starting
    (``Starting``), for ``Starting.client(workers=...)``."""

    name = "cxr-dask-arrivals"

    def __init__(self) -> None:
        self.address: str | None = None
        self.workers = 0
        self.changed = threading.Condition()

    async def start(self, scheduler: Scheduler) -> None:
        with self.changed:
            self.address = scheduler.address
            self.changed.notify_all()

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        with self.changed:
            self.workers += 1
            self.changed.notify_all()


def _local_cluster(
    config: ClusterSettings, preload: tuple[str, ...] = (), arrivals: _Arrivals | None = None
) -> LocalCluster:
    """The run's LocalCluster, its scheduler started and no worker yet (``_start_workers``
    adds them), its dashboard connected when it is first visited.

    distributed imports the dashboard (bokeh, ~0.4 s of CPU) as the scheduler starts,
    before it spawns a worker; here the scheduler starts without it (its HTTP server and
    the link already listen), and bokeh is imported when a browser first asks for a page
    (``_DashboardOnFirstVisit``): the same dashboard, and a run nobody watches (a script, a
    batch job) never pays for it, where with two workers those 0.4 s competed with both
    workers' start-up for the two cores.
    """
    # The scheduler runs in this process and would log every worker's coming and going;
    # follow the root logger's level (INFO only with --verbose).
    logging.getLogger("distributed").setLevel(max(logging.getLogger().getEffectiveLevel(), logging.INFO))
    lazy = config.dashboard_address is not None and importlib.util.find_spec("bokeh") is not None
    local = local_cluster(
        n_workers=0,  # each worker is added by _start_workers: one failing to start does not close the others
        threads_per_worker=config.threads_per_worker,
        memory_limit=config.memory_limit,
        dashboard_address=config.dashboard_address,
        scheduler_kwargs={**({"dashboard": False} if lazy else {}), "plugins": [arrivals] if arrivals else []},
        silence_logs=logging.ERROR,
        # after any preload of the user's dask config, which a list given here replaces
        preload=[*dask.config.get("distributed.worker.preload", default=[]), *preload],
    )
    if lazy:
        try:
            sync(local.loop, _install_dashboard_on_first_visit, local.scheduler)  # type: ignore[arg-type]  # started: has a loop
        except BaseException:
            local.close()
            raise
    return local


async def _start_workers(local: LocalCluster, workers: int) -> None:
    """Spawn the workers of a LocalCluster started without any, and return once each is up,
    or raise when one failed to start (the others, and the scheduler, stay up: the
    LocalCluster's constructor would close them all)."""
    while len(local.worker_spec) < workers:  # what scale() does, its outcome awaited here
        local.worker_spec.update(local.new_worker_spec())
    await local._correct_state()


async def _install_dashboard_on_first_visit(scheduler: Scheduler) -> None:
    _dashboard_on_first_visit(scheduler)  # on the scheduler's event loop, which serves the requests


async def _connect_dashboard(scheduler: Scheduler) -> None:
    """What the scheduler does itself when started with its dashboard (on its event loop)."""
    import distributed.dashboard.scheduler as dashboard

    dashboard.connect(scheduler.http_application, scheduler.http_server, scheduler)


@contextmanager
def connect(settings: ClusterSettings | RunConfig) -> Iterator[Client]:
    """A client for a command: ``settings.scheduler`` if given, else a LocalCluster of processes.

    Worker processes (not threads) because pydicom and the pixel work hold the GIL; they
    are spawned with ``worker_environ()``. A ``RunConfig`` stands for its ``.cluster``.
    """
    with Starting(settings) as starting:
        yield starting.client()


class Starting:
    """A cluster being started in a background thread, and the client once it is up.

    ``cxr-dask run`` starts its LocalCluster first and imports its passes, takes the
    PRIVATE lock and checks the journal meanwhile: the worker processes' start-up (a
    second or more of imports, on the other core) overlaps the client's instead of
    following it. Leaving the block closes whatever was started, waiting for a cluster
    still starting (a run refused by the lock stops its workers again). While the client
    is held, every worker keeps pydicom quiet (``privacy.QuietPydicom``); a cluster given
    by ``--scheduler`` gets its workers' settings back at the end. With ``fork`` the
    LocalCluster's workers are forked from one process that imported their modules once
    (``workerenv.fork_server``, where it is known safe), restarted ones too, until the
    block is left.
    """

    def __init__(
        self, settings: ClusterSettings | RunConfig, preload: tuple[str, ...] = (), fork: bool = False
    ) -> None:
        config = settings.cluster if isinstance(settings, RunConfig) else settings
        self.config = config  # what the cluster reads, never a command's locations
        self._cluster: LocalCluster | None = None
        self._client: Client | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._leave = False
        self._arrivals = _Arrivals()
        self._done = False  # the thread has started the whole LocalCluster, or failed to
        self._forked: Any = None  # the config that forks the workers (``fork_server``), while it holds
        if not config.scheduler and fork and fork_server(worker_environ()):
            # distributed's own preload list for a forkserver would first import numpy, pandas and lz4 here
            distributed.utils._forkserver_preload_set = True  # a private name, only ever set
            self._forked = dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
        if not config.scheduler:
            self._thread = threading.Thread(target=self._start, args=(preload,), name="cxr-dask-cluster", daemon=True)
            self._thread.start()

    def _start(self, preload: tuple[str, ...]) -> None:
        try:
            self._cluster = local = _local_cluster(self.config, preload, self._arrivals)
            sync(local.loop, _start_workers, local, self.config.workers)  # type: ignore[arg-type]  # started: has a loop
        except BaseException as error:  # raised again in the caller's thread by client()
            self._error = error
            up = self._arrivals.workers
            if up:  # pass 1 may have begun on those: a run that took its client early goes on with them
                log.warning(
                    "%d of %d workers failed to start (%s); going on with %d",
                    self.config.workers - up,
                    self.config.workers,
                    type(error).__name__,  # the type only: a message can quote a path
                    up,
                )
        finally:
            with self._arrivals.changed:
                self._done = True
                self._arrivals.changed.notify_all()

    def client(self, workers: int | None = None) -> Client:
        """The client, once the scheduler and every worker are up, or ``workers`` of them.

        ``cxr-dask run`` asks for one: on two cores the workers' start-up competes with the
        client's, and whichever worker is up first starts pass 1 while the others finish
        importing (each takes tasks as it arrives; ``pipeline.run`` cuts the work for all
        the workers the LocalCluster will have). The rest of the LocalCluster keeps
        starting in the background; leaving the block waits for it.
        """
        if self._client is None:
            if self._thread is None:
                self._connect(self.config.scheduler)
            elif (
                workers is not None
                and workers < self.config.workers
                and self._waited(lambda: bool(self._arrivals.address))
            ):
                # connected while the workers start: the handshake and the plugin's
                # registration (~0.1 s) are not added to the wait for the first one
                self._connect(self._arrivals.address)
                if not self._waited(lambda: self._arrivals.workers >= workers):
                    self._thread.join()  # done with fewer: no worker started
                    raise self._error or RuntimeError("no worker started")
            else:
                self._thread.join()
                if self._error is not None:
                    raise self._error
                self._connect(self._cluster)
        assert self._client is not None
        return self._client

    def _connect(self, where: Any) -> None:
        """The client, and pydicom quiet in every worker, those arriving later included (a
        worker gets the scheduler's plugins as it registers, before any task)."""
        self._client = Client(where)
        from cxr_dask.privacy import QUIET_PLUGIN, QuietPydicom  # pydicom: after the workers spawn

        self._client.register_plugin(QuietPydicom(), name=QUIET_PLUGIN)

    def _waited(self, reached: Callable[[], bool]) -> bool:
        """Wait until ``reached()`` (True: the scheduler is up, or enough workers reached
        it), or the LocalCluster is started or failed without it (False: its thread is done)."""
        with self._arrivals.changed:
            self._arrivals.changed.wait_for(lambda: reached() or self._done)
            return reached()

    def leave_to_exit(self) -> None:
        """Leave a LocalCluster running at the end of the block: the process ends with
        ``os._exit`` right after it (the CLI), and its worker processes end with it (each
        watches its parent, distributed's ``AsyncProcess``), all their tasks finished and
        files closed. Closing them one by one costs the command ~0.3 s of wall time and
        each worker its interpreter's teardown. A block left with an error still closes."""
        self._leave = True

    def __enter__(self) -> Starting:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._thread is not None:
            self._thread.join()
        try:
            self._close(kind)
        finally:
            if self._forked is not None:  # a restarted worker forks until the cluster is closed
                self._forked.__exit__(None, None, None)

    def _close(self, kind: type[BaseException] | None) -> None:
        if self._leave and kind is None and self._cluster is not None:
            _unlink_semaphores()
            return
        if self._client is not None:
            if self._cluster is None and self._client.status == "running":
                from cxr_dask.privacy import QUIET_PLUGIN

                self._client.unregister_worker_plugin(QUIET_PLUGIN)
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def _unlink_semaphores() -> None:
    """Unlink this process's named semaphores now, as its normal exit would first.

    Each nanny holds two ``multiprocessing`` queues (three named semaphores each) until it
    closes; a process ended with ``os._exit`` (``Starting.leave_to_exit``) leaves their
    names to the resource tracker, which warns of "leaked semaphore objects" at the end of
    every run. The workers opened them long before (as they started); the names go.
    """
    registry: dict[Any, Any] = getattr(multiprocessing.util, "_finalizer_registry", {})
    cleanup = getattr(SemLock, "_cleanup", None)  # what each SemLock registers: unlink, untrack
    for finalizer in list(registry.values()):
        if cleanup is not None and getattr(finalizer, "_callback", None) is cleanup:
            with contextlib.suppress(OSError):  # gone already
                finalizer()  # unlinks, tells the tracker, and leaves the registry


def total_threads(client: Client) -> int:
    """Threads across the cluster's workers (at least 1 while workers are starting)."""
    return max(1, sum(client.nthreads().values()))
