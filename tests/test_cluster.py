"""The LocalCluster ``cxr-dask run`` starts: its workers' allocator keeps big buffers."""

from __future__ import annotations

import gc
import logging
import os
import resource

import pytest
from distributed import LocalCluster

from cxr_dask import cluster
from cxr_dask.config import ClusterSettings, RunConfig, VerifySettings

pytestmark = pytest.mark.cluster


def _page_faults_of_reused_buffers() -> int:
    """Minor page faults while a worker allocates, fills and frees a 15 MB buffer, after the
    first such buffer: what every file of pass 2 pays when the heap does not keep it."""
    size = 15 * 2**20
    data = b"\1" * size
    del data
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        data = b"\1" * size
        del data
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _malloc_environ() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith("MALLOC_")}


def test_workers_reuse_large_buffers_instead_of_faulting_them_in(tmp_path, monkeypatch):
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    config = RunConfig(
        str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "private"), workers=1, dashboard_address=None
    )
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None),  # distributed's settings
        cluster.connect(config) as client,
    ):
        (faults,) = client.run(_page_faults_of_reused_buffers).values()
        (env,) = client.run(_malloc_environ).values()
    assert env == cluster.WORKER_MALLOC_ENV
    # 4 buffers of 3,840 pages each when every one is a fresh mmap; a few when reused
    assert faults < 1_000


def test_a_trim_threshold_the_user_chose_is_kept(monkeypatch):
    import dask

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)  # a nanny earlier in this process sets it
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": 0}}):
        assert cluster.worker_environ() == {"MALLOC_TRIM_THRESHOLD_": "0"}
    assert cluster.worker_environ()["MALLOC_MMAP_THRESHOLD_"] == str(32 * 2**20)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")  # exported in the shell: distributed prefers it
    assert "MALLOC_MMAP_THRESHOLD_" not in cluster.worker_environ()
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", cluster.DISTRIBUTED_TRIM_DEFAULT)  # left by an earlier nanny
    assert cluster.worker_environ()["MALLOC_TRIM_THRESHOLD_"] == str(64 * 2**20)


def test_a_second_cluster_of_the_process_gets_the_same_allocator_settings(monkeypatch):
    """The first cluster leaves ``WORKER_MALLOC_ENV`` in the process's environment: that is
    not the user's choice, or the next cluster's workers got distributed's trim threshold
    (every 15 MB buffer a fresh mmap again, ~15,000 page faults per 4 buffers)."""
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", cluster.WORKER_MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"])
    env = cluster.worker_environ()
    assert {key: env[key] for key in cluster.WORKER_MALLOC_ENV} == cluster.WORKER_MALLOC_ENV


def test_a_cluster_a_notebook_starts_gets_the_same_workers(monkeypatch):
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    with (
        cluster.local_cluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as local,
        local.get_client() as client,
    ):
        (env,) = client.run(_malloc_environ).values()
        saturation = local.scheduler.WORKER_SATURATION
    assert env == cluster.WORKER_MALLOC_ENV
    assert saturation == cluster.WORKER_SATURATION == 1.0  # a task a free thread, none queued behind


def test_a_worker_saturation_the_user_chose_is_kept():
    import dask

    assert cluster.scheduler_settings() == {"distributed.scheduler.worker-saturation": 1.0}
    with dask.config.set({"distributed.scheduler.worker-saturation": 2.0}):
        assert cluster.scheduler_settings() == {}


def test_cluster_settings_come_from_either_command_without_its_locations():
    """``run`` and ``verify`` each give the cluster only what it reads (no fake ``RunConfig``)."""
    assert VerifySettings(threads_per_worker=2).cluster == ClusterSettings(
        workers=2, threads_per_worker=2, dashboard_address=None
    )
    assert VerifySettings(workers=3, scheduler="tcp://h:1").cluster.scheduler == "tcp://h:1"
    run = RunConfig("in", "out", "private", workers=3, memory_limit="1GiB", scheduler="tcp://h:1")
    assert run.cluster == ClusterSettings(scheduler="tcp://h:1", workers=3, memory_limit="1GiB")


def test_connect_takes_verify_s_settings_on_a_given_scheduler(client):
    settings = VerifySettings(scheduler=client.scheduler.address).cluster
    with cluster.connect(settings) as verifying:
        assert verifying.scheduler.address == client.scheduler.address
        assert verifying.nthreads() == client.nthreads()


def test_the_run_s_cluster_serves_its_dashboard(tmp_path):
    """The dashboard is connected after the workers start (``cluster._local_cluster``): the
    link printed at the start serves distributed's bokeh pages all the same."""
    import urllib.request

    config = RunConfig(
        str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "private"), workers=1, dashboard_address=":0"
    )
    with cluster.connect(config) as client:
        with urllib.request.urlopen(client.dashboard_link) as response:
            page = response.read()
        assert response.status == 200
    assert b"bokeh" in page.lower()


_LEFT_TO_EXIT = """
import os, sys
from cxr_dask import cluster
from cxr_dask.config import ClusterSettings, RunConfig, VerifySettings

if __name__ == "__main__":
    config = RunConfig(sys.argv[1], sys.argv[2], sys.argv[3], workers=2, dashboard_address=None)
    with cluster.Starting(config, preload=cluster.WORKER_PRELOAD, fork=True) as starting:  # as the CLI's
        client = starting.client()
        pids = client.run(os.getpid)
        parents = client.run(os.getppid)  # the process they were forked from
        starting.leave_to_exit()
    print(*pids.values(), *set(parents.values()), flush=True)
    os._exit(0)
"""


def test_workers_left_to_the_process_exit_end_with_it(tmp_path):
    """The CLI leaves its LocalCluster to ``os._exit`` (``Starting.leave_to_exit``): no
    worker process outlives the command, nor the process they were forked from."""
    import subprocess
    import sys
    import time

    import psutil

    script = tmp_path / "left.py"
    script.write_text(_LEFT_TO_EXIT)
    places = [str(tmp_path / name) for name in ("in", "out", "private")]
    done = subprocess.run([sys.executable, str(script), *places], capture_output=True, text=True, check=True)
    pids = [int(pid) for pid in done.stdout.split()]
    assert len(pids) == 3  # two workers, one process they were forked from
    for _ in range(100):  # each worker sees its parent's end and exits at once
        alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
        if not alive:
            break
        time.sleep(0.1)
    assert alive == []
    assert "leaked semaphore" not in done.stderr  # the nannies' queues are unlinked before the exit


_SECOND_FAILS = """
import os
import time

try:  # the first worker to start takes the flag; the next fails once the run has its client
    mine = os.open({flag!r}, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(mine, str(os.getpid()).encode())
    os.close(mine)
except FileExistsError:
    with open({flag!r}) as taken:
        first = taken.read() == str(os.getpid())  # distributed imports a preload file twice
    for _ in range(0 if first else 2400):
        if os.path.exists({flag!r} + ".go"):
            break
        time.sleep(0.05)
    if not first:
        raise RuntimeError("this worker does not start") from None
"""


class _Lines(logging.Handler):
    """The messages a logger emits (distributed sets pytest's capturing handlers to ERROR)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_worker_failing_to_start_after_the_first_leaves_the_run_going_and_says_so(tmp_path):
    """``Starting.client(workers=1)``: a LocalCluster's constructor closes every worker and
    the scheduler when one fails; a run that began on its first worker goes on with the
    others, and says so in one line (the error's type only)."""
    preload = tmp_path / "second_fails.py"
    preload.write_text(_SECOND_FAILS.format(flag=str(tmp_path / "flag")))
    config = RunConfig(
        str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "private"), workers=2, dashboard_address=None
    )
    said = _Lines()
    cluster.log.addHandler(said)
    try:
        with cluster.Starting(config, preload=(str(preload),)) as starting:
            client = starting.client(workers=1)
            (tmp_path / "flag.go").touch()
            assert starting._thread is not None
            starting._thread.join()  # the second worker has failed by now
            assert client.submit(sum, [1, 2]).result() == 3
            assert len(client.nthreads()) == 1
    finally:
        cluster.log.removeHandler(said)
    assert said.lines == ["1 of 2 workers failed to start (RuntimeError); going on with 1"]


def _modules_after_an_arrow_conversion() -> dict[str, bool]:
    """What a pass-1 task's first ``pa.array`` finds imported (pyarrow's pandas probe)."""
    import sys

    import pyarrow as pa

    pa.array(["a key"])
    return {name: name in sys.modules for name in ("cxr_dask.pipeline", "pandas")}


def test_the_run_s_workers_start_with_both_passes_and_without_pandas(tmp_path):
    """``cluster.WORKER_PRELOAD``: the passes are imported as a worker starts, and pyarrow's
    probe of Python values does not import pandas at the first task (0.3-0.5 s a worker)."""
    config = RunConfig(
        str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "private"), workers=1, dashboard_address=None
    )
    with cluster.Starting(config, preload=cluster.WORKER_PRELOAD) as starting:
        (found,) = starting.client().run(_modules_after_an_arrow_conversion).values()
    assert found == {"cxr_dask.pipeline": True, "pandas": False}


def _reading_validation_mode() -> int:
    import pydicom.config

    return pydicom.config.settings.reading_validation_mode


def test_a_run_starts_on_its_first_worker_and_the_others_join_quiet(tmp_path):
    """``Starting.client(workers=1)`` (``cxr-dask run``): pass 1 need not wait for every
    worker; the LocalCluster still gets all of them, each keeping pydicom quiet
    (``privacy.QuietPydicom``) though it reached the scheduler after the client."""
    import pydicom.config

    config = RunConfig(
        str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "private"), workers=2, dashboard_address=None
    )
    with cluster.Starting(config, preload=cluster.WORKER_PRELOAD, fork=True) as starting:  # as the CLI's
        client = starting.client(workers=1)
        assert len(client.nthreads()) >= 1
        client.wait_for_workers(2, timeout=120)
        modes = client.run(_reading_validation_mode)
        forked = client.run(_forked_from)
        frozen = client.run(gc.get_freeze_count)
        settled = client.run(_first_uses_settled)
    assert list(modes.values()) == [pydicom.config.IGNORE] * 2
    # what each worker did at its first task was done once, in the process they share
    assert list(settled.values()) == [(True, True, 1, 1, 1)] * 2
    # both forked from one process, which had imported distributed and pydicom and ran no thread
    (server,) = set(forked.values())
    assert server == (True, True, 1)
    # and had frozen what it imported: no worker's garbage collector walks (and copies) it
    assert all(count > 10_000 for count in frozen.values())


def _first_uses_settled() -> tuple[bool, bool, int, int, int]:
    """Before any task: pyarrow's probes settled (``cluster.arrow_without_pandas``: numpy's
    masked arrays imported) and the shipped tables read (``preload.first_uses``)."""
    import sys

    from cxr_dask.deid import freetext, profile

    return (
        bool(cluster._ARROW_SETTLED),
        "numpy.ma" in sys.modules,
        profile.load_table.cache_info().currsize,
        profile._build_profile.cache_info().currsize,
        freetext.shipped_words.cache_info().currsize,
    )


def test_arrow_s_first_conversions_import_nothing_once_settled():
    """``cluster.arrow_without_pandas``: after it, neither a list nor a NumPy array's first
    conversion imports a module (pandas, ``numpy.ma``): the client's listing and each
    worker's first tasks no longer pay for them."""
    import subprocess
    import sys

    script = (
        "import sys; from cxr_dask import cluster; cluster.arrow_without_pandas()\n"
        "import numpy as np, pyarrow as pa; before = set(sys.modules)\n"
        "pa.array(['a key']); pa.array(np.arange(3)); pa.table({'k': np.arange(2)})\n"
        "print(sorted(set(sys.modules) - before), 'pandas' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "False"]


def test_the_client_s_heap_release_starts_no_process():
    """``heap.release`` between the client's steps finds ``malloc_trim`` in the process's own
    C library: no ``ldconfig -p`` subprocess (``ctypes.util.find_library``) on the way
    from pass 1 to pass 2."""
    import subprocess
    import sys

    script = (
        "import sys; started = []\n"
        "sys.addaudithook(lambda event, args: started.append(args[0]) if event == 'subprocess.Popen' else None)\n"
        "from cxr_dask import heap; heap.release(); heap.release(); print(len(started), heap.releases)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "2"]


def _forked_from() -> tuple[bool, bool, int]:
    """Whether this worker's parent is a process other than the client's that imported
    the preload, and how many threads that process runs."""
    import os

    parent = os.getppid()
    command = open(f"/proc/{parent}/cmdline").read()  # noqa: SIM115  (one read of a /proc file)
    return "forkserver" in command, "cxr_dask.preload" in command, len(os.listdir(f"/proc/{parent}/task"))


def test_the_fork_server_s_imports_start_no_thread():
    """What the fork server imports (``workerenv.fork_preload``: both passes and pyarrow,
    its jemalloc's thread off) under distributed's thread settings leaves one thread:
    only a process without threads can be forked safely. An import added to
    ``cxr_dask.preload``'s top that starts one (OpenCV's, a pool's) fails here. Nor does
    it import scipy's image filters (~0.25 s, before the first worker can start): only
    colour images and boxes of text need them, imported there; nor tqdm (only the
    client's progress bar draws). numpy's random module is: each worker re-seeds it as it
    starts (dask's ``default_initializer``), which would import it in each."""
    import subprocess
    import sys

    from cxr_dask import workerenv

    count = (
        "import os, sys; [__import__(name) for name in sys.argv[1:]]; "
        "print(len(os.listdir('/proc/self/task')), 'scipy.ndimage' in sys.modules, 'pyarrow' in sys.modules, "
        "'tqdm' in sys.modules, 'numpy.random' in sys.modules)"
    )
    env, modules = workerenv.fork_preload({**os.environ, **cluster.SINGLE_THREADED})
    done = subprocess.run([sys.executable, "-c", count, *modules], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1 False True False True"
    # a jemalloc setting of the user's is kept: pyarrow is then left to each worker
    env, modules = workerenv.fork_preload({**env, "JE_ARROW_MALLOC_CONF": "narenas:1"})
    assert (env["JE_ARROW_MALLOC_CONF"], modules) == ("narenas:1", [*workerenv.FORK_PRELOAD, workerenv.FREEZE])


_EVERY_WORKER_WAITS = """
import os
import time

for _ in range(2400):  # until the test says go (or 2 minutes)
    if os.path.exists({go!r}):
        break
    time.sleep(0.05)
if os.path.exists({go!r} + ".fail"):
    raise RuntimeError("this worker does not start")
"""


def _run_s_cluster(tmp_path, go: str) -> tuple[RunConfig, tuple[str, ...]]:
    preload = tmp_path / "waits.py"
    preload.write_text(_EVERY_WORKER_WAITS.format(go=go))
    config = RunConfig(
        str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "private"), workers=2, dashboard_address=None
    )
    return config, (str(preload),)


def test_the_run_s_client_connects_while_its_workers_start(tmp_path):
    """``Starting.client(workers=1)`` connects (and registers the quiet plugin) once the
    scheduler is up, not after the first worker: both overlap the workers' start-up."""
    import threading

    go = str(tmp_path / "go")
    config, preload = _run_s_cluster(tmp_path, go)
    with cluster.Starting(config, preload=preload) as starting:
        got = threading.Thread(target=starting.client, kwargs={"workers": 1})
        got.start()
        for _ in range(2400):
            if starting._client is not None:
                break
            got.join(0.05)
        connected, arrived = starting._client is not None, starting._arrivals.workers
        (tmp_path / "go").touch()
        got.join()
        assert (connected, arrived) == (True, 0)
        assert starting.client().submit(sum, [1, 2]).result() == 3
        assert list(starting.client().run(_reading_validation_mode).values())  # the plugin reached the workers


def test_a_run_whose_workers_all_fail_to_start_says_so(tmp_path):
    """No worker up: ``Starting.client(workers=1)`` raises the LocalCluster's error rather
    than leaving the run waiting for a worker that never comes."""
    go = str(tmp_path / "go")
    config, preload = _run_s_cluster(tmp_path, go)
    (tmp_path / "go").touch()
    (tmp_path / "go.fail").touch()
    with pytest.raises(RuntimeError), cluster.Starting(config, preload=preload) as starting:
        starting.client(workers=1)


def test_workers_are_spawned_where_forking_is_not_known_safe(monkeypatch):
    """A start method the user chose, or thread settings under which numpy's import starts
    threads: no fork server (``cluster.fork_server``), the workers are spawned."""
    import dask

    env = cluster.worker_environ()
    with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
        assert not cluster.fork_server(env)
    assert not cluster.fork_server({**env, "OPENBLAS_NUM_THREADS": "4"})


def test_the_fork_server_s_guessed_environment_is_a_worker_s():
    """``workerenv.fork_server_ahead`` starts the server before dask is imported, with the
    environment ``worker_environ()`` gives under distributed's own config; a ``DASK_*``
    variable (the user's config) leaves it to ``fork_server``."""
    from cxr_dask import workerenv

    assert workerenv._ahead_environ() == cluster.worker_environ()
    os.environ["DASK_SOMETHING"] = "1"
    try:
        assert workerenv._ahead_environ() is None
    finally:
        del os.environ["DASK_SOMETHING"]


_FORKED_HERE = """
import gc, json, os, sys
from cxr_dask import workerenv
names = sorted(workerenv.SINGLE_THREADED)
from cxr_dask import startup
startup.begin()  # as the CLI: no garbage collection during the start-up
workerenv.fork_server_ahead()  # as the CLI: before numpy
from cxr_dask import cluster
from cxr_dask.config import RunConfig
cluster.pydicom_without_requests()
out = {"forked": workerenv.fork_server_here(), "threads_given_back": [os.environ.get(n) for n in names]}
import multiprocessing.forkserver as mpfs
server = mpfs._forkserver._forkserver_pid
out["server_is_a_child"] = open(f"/proc/{server}/stat").read().split(")")[1].split()[1] == str(os.getpid())

def worker():
    import logging, pydicom
    parent = os.getppid()
    return (
        parent,
        [os.environ.get(n) for n in sorted(workerenv.SINGLE_THREADED) + ["MALLOC_MMAP_THRESHOLD_"]],
        len(os.listdir(f"/proc/{parent}/task")),
        len(logging.root.handlers),
        gc.isenabled(),
    )

config = RunConfig("in", "out", "private", workers=2, dashboard_address=None)
with cluster.Starting(config, preload=cluster.WORKER_PRELOAD, fork=True) as starting:
    out["collecting_while_starting"] = gc.isenabled()
    startup.end(freeze=True)  # as the CLI, its imports done
    out["collecting"] = [gc.isenabled(), gc.get_freeze_count() > 10_000]
    seen = list(starting.client().run(worker).values())
    out["serves_from_here"] = workerenv.serves_from_here()
out["workers"] = [w == seen[0] for w in seen]
parent, env, threads, handlers, collecting = seen[0]
out.update(from_server=parent == server, env=env, server_threads=threads, root_handlers=handlers)
out["workers_collect"] = collecting  # their server imported with the collector off, inherited
workerenv.stop_fork_server()
out["stopped"] = mpfs._forkserver._forkserver_pid is None and not os.path.exists(f"/proc/{server}")
out["served_after_stop"] = workerenv.serves_from_here()
print(json.dumps(out))
"""


@pytest.mark.cluster
def test_the_cli_s_workers_are_forked_from_a_fork_of_its_own_process():
    """``workerenv.fork_server_here`` (``cxr-dask run`` with several workers): the server is
    forked from the command's process once it imported distributed and pydicom (numpy
    loaded under one-thread settings, given back after), runs one thread, and its workers
    have a worker's environment, a new interpreter's root logger and a garbage collector
    on (the command's start-up, the server's imports included, ran with it off); stopping
    the server waits for its end."""
    import json
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key not in _worker_names()}
    done = subprocess.run([sys.executable, "-c", _FORKED_HERE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "forked": True,
        "threads_given_back": [None, None, None],
        "server_is_a_child": True,
        "workers": [True, True],
        "from_server": True,
        "env": ["1", "1", "1", cluster.WORKER_MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]],
        "server_threads": 1,
        "root_handlers": 0,
        "stopped": True,
        "serves_from_here": True,  # the run's storage check is then not repeated on a worker
        "served_after_stop": False,
        "collecting_while_starting": False,
        "collecting": [True, True],
        "workers_collect": True,
    }


_NOT_FORKED_HERE = """
import os, sys
from cxr_dask import workerenv
workerenv.fork_server_ahead()
set_ahead = os.environ.get("OPENBLAS_NUM_THREADS")
workerenv.stop_fork_server()  # a run refused before the fork
print(set_ahead, os.environ.get("OPENBLAS_NUM_THREADS"))
workerenv.fork_server_ahead()
import pyarrow  # its jemalloc's thread: this process can no longer be forked safely
here = workerenv.fork_server_here()
print(here, os.environ.get("OPENBLAS_NUM_THREADS"), workerenv._STARTED, workerenv.serves_from_here())
"""


def test_a_process_that_may_run_threads_is_not_forked():
    """Where this process imported pyarrow (or runs a thread, or dask's config gives the
    workers another environment), ``fork_server_here`` forks nothing and gives the thread
    settings back (as a run refused before the fork does): ``cluster.Starting`` spawns the
    server."""
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key not in _worker_names()}
    done = subprocess.run([sys.executable, "-c", _NOT_FORKED_HERE], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "None", "False", "None", "[]", "False"]


def _worker_names() -> set[str]:
    """The variables a worker's environment sets (the test's process may hold them)."""
    return {*cluster.SINGLE_THREADED, *cluster.WORKER_MALLOC_ENV}
