"""Where a whole ``cxr-dask run`` spends its wall time: the client's steps and the workers' tasks.

Runs the command in this process (``cli.main`` with its argv, so start-up, LocalCluster
and exit are the command's own) with each step of ``pipeline.run`` wrapped to log when it
starts and ends, and Dask's task stream (``Client.get_task_stream``) over the run; then
prints one timeline, seconds from the process start:

- the client's steps (imports, checks, cluster up, pass 1, minting, broadcast, pass 2,
  commit, review);
- each worker's tasks: first start and last end per pass, busy seconds, and the idle gap
  between its last task and the other worker's (the straggler at the end of a pass).

``python bench/timeline.py TIMELINE.json IN OUT PRIVATE --workers 2`` (OUT and PRIVATE are
removed first; more flags go to ``cxr-dask run``).

``--rss``: the client's memory instead, per step: the peak RSS and Arrow pool bytes sampled
every 5 ms while it ran, and ``ru_maxrss`` at its end (``bench/client_memory.py --steps``).
With ``--tracemalloc STEP`` also Python's traced peak per step and the allocations held at
the end of STEP (slower: the peaks are then not the plain run's).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Steps of ``pipeline.run`` (module, attribute) timed on the client.
STEPS = (
    ("cxr_dask.pipeline", "check_workers_reach_storage"),
    ("cxr_dask.pipeline", "_scan"),
    ("cxr_dask.pipeline", "_hash_copies"),
    ("cxr_dask.pipeline", "_save_vocabulary"),
    ("cxr_dask.journal", "RunJournal.save_inventory_file"),
    ("cxr_dask.journal", "RunJournal.merge_inventory_parts"),
    ("cxr_dask.pipeline", "_inventory_file"),
    ("cxr_dask.inventory", "copy_rows"),
    ("cxr_dask.inventory", "rank_copies"),
    ("cxr_dask.identity", "load_or_create_secret"),
    ("cxr_dask.identity", "extend"),
    ("cxr_dask.identity", "save_crosswalk"),
    ("cxr_dask.broadcast", "IdentityPlugin.setup"),
    ("cxr_dask.pipeline", "_Pass2.run"),
    ("cxr_dask.commit", "commit"),
    ("cxr_dask.review", "build"),
    ("cxr_dask.journal", "RunJournal.finish"),
    ("cxr_dask.cluster", "Starting.client"),
    ("cxr_dask.journal", "refuse_other_unfinished"),
    ("cxr_dask.storage", "check_locations"),
    ("cxr_dask.cluster", "_local_cluster"),
    ("cxr_dask.cluster", "_import_dashboard"),
    ("cxr_dask.cluster", "arrow_without_pandas"),
    # the client's memory (``--rss``): the listing, minting's reads, the commit's parts
    ("cxr_dask.pipeline", "list_table"),
    ("cxr_dask.identity", "load_crosswalk"),
    ("cxr_dask.inventory", "read_columns"),
    ("cxr_dask.commit", "commit"),
    ("cxr_dask.commit", "_audit_file"),
    ("cxr_dask.commit", "_write_tables"),
)

#: (step, wall start, wall end, this process's CPU seconds meanwhile, all threads)
EVENTS: list[tuple[str, float, float, float]] = []
#: ``--rss``: (step, wall end, ``ru_maxrss`` MB at its end, Python's traced peak MB meanwhile or None)
MEMORY: list[tuple[str, float, float, float | None]] = []


class RssSampler:
    """The process's RSS and Arrow pool bytes every ``interval`` seconds, in a thread:
    a step's peak is the most sampled between its start and end (``ru_maxrss`` is only
    the run's high-water mark so far)."""

    def __init__(self, interval: float = 0.005) -> None:
        import threading
        from array import array

        self.interval = interval
        # wall time, RSS bytes, Arrow bytes: flat arrays (24 bytes a sample, ~1 MB for a
        # 3-minute run), not tuples, so the sampler's own growth stays below the noise
        self.times, self.rss, self.arrow = array("d"), array("q"), array("q")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._page = os.sysconf("SC_PAGE_SIZE")

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        # pyarrow as the command loads it, never before: it chooses its allocators as it
        # loads (``cxr_dask.heap.load_arrow``), so a sampler that imported it first would
        # measure another client than the command's
        with open("/proc/self/statm", "rb") as statm:
            while not self._stop.is_set():
                statm.seek(0)
                self.rss.append(int(statm.read().split()[1]) * self._page)
                self.times.append(time.time())
                allocated = getattr(sys.modules.get("pyarrow"), "total_allocated_bytes", None)
                self.arrow.append(allocated() if allocated is not None else 0)
                self._stop.wait(self.interval)

    def peak(self, start: float, end: float) -> tuple[float, float]:
        """Most RSS and Arrow MB sampled in ``[start, end]``."""
        inside = [i for i, t in enumerate(self.times) if start <= t <= end]
        if not inside:
            return float("nan"), float("nan")
        return max(self.rss[i] for i in inside) / 2**20, max(self.arrow[i] for i in inside) / 2**20


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


class _AfterImport:
    """Calls ``then(module)`` once ``name`` is imported, where the command imports it (the
    CLI imports the pipeline after the cluster starts: importing it here would move it)."""

    def __init__(self, name: str, then: Callable[[Any], None]) -> None:
        self.name, self.then = name, then

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != self.name:
            return None
        import importlib.machinery

        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader, then = spec.loader, self.then

        class Loader(type(loader)):  # type: ignore[misc]
            def exec_module(self, module: Any) -> None:
                started = time.time()
                loader.exec_module(module)
                EVENTS.append((f"import {name}", started, time.time(), 0.0))
                then(module)

        spec.loader = Loader(loader.name, loader.path)
        return spec


def _process_start() -> float:
    """This process's start, wall clock (``/proc/self/stat`` counts clock ticks since boot)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _process_cpu() -> dict[str, float]:
    """A worker's process start (wall clock) and CPU seconds so far (run on each worker)."""
    times = os.times()
    return {"start": _process_start(), "cpu": times.user + times.system, "threads": _threads_cpu()}


def _threads_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads by name (the client, the scheduler's loop...)."""
    import threading

    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    out: dict[str, float] = defaultdict(float)
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            name = names.get(int(task.name)) or (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[name] += (int(fields[11]) + int(fields[12])) / tick
    times = os.times()
    out["(ended threads)"] = times.user + times.system - sum(out.values())
    return {name: round(seconds, 2) for name, seconds in sorted(out.items(), key=lambda kv: -kv[1])}


def _maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    import tracemalloc

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.time(), _cpu()
        traced = tracemalloc.is_tracing()
        if traced:
            tracemalloc.reset_peak()  # a step inside another ends the outer's peak early: read inner first
        try:
            return function(*args, **kwargs)
        finally:
            ended = time.time()
            EVENTS.append((name, started, ended, _cpu() - cpu))
            python = tracemalloc.get_traced_memory()[1] / 2**20 if traced else None
            MEMORY.append((name, ended, _maxrss_mb(), python))
            if SNAPSHOT_AT and name == SNAPSHOT_AT[0] and traced:
                SNAPSHOTS.append(tracemalloc.take_snapshot())

    return wrapper


_WRAPPED: set[tuple[str, str]] = set()
#: ``--tracemalloc STEP``: the step at whose end the Python allocations are listed.
SNAPSHOT_AT: list[str] = []
SNAPSHOTS: list[Any] = []


def _wrap_steps() -> None:
    """Wrap every step whose module is imported by now (once), also where the pipeline
    holds the name by ``from ... import``."""
    pipeline = sys.modules.get("cxr_dask.pipeline")
    for module_name, attribute in STEPS:
        module = sys.modules.get(module_name)
        if module is None or (module_name, attribute) in _WRAPPED:
            continue
        _WRAPPED.add((module_name, attribute))
        owner: Any = module
        *path, last = attribute.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        original = getattr(owner, last, None)
        if original is None:  # a step this version of cxr-dask does not have
            continue
        setattr(owner, last, _timed(attribute, original))
        if not path and pipeline is not None and getattr(pipeline, last, None) is original:
            setattr(pipeline, last, getattr(owner, last))


@contextlib.contextmanager
def _task_stream(tasks: list[dict[str, Any]]) -> Iterator[None]:
    from distributed import get_task_stream

    with get_task_stream() as stream:
        yield
    tasks.extend(stream.data)


def _pass_of(key: Any) -> str:
    name = key[0] if isinstance(key, tuple) else str(key)
    if "scan_partition" in name:
        return "pass 1"
    if "deidentify_partition" in name:
        return "pass 2"
    return name.split("-")[0]


def report(tasks: list[dict[str, Any]], zero: float) -> dict[str, Any]:
    """Per pass and worker: tasks, first start, last end, busy seconds (compute)."""
    out: dict[str, Any] = {"client": [], "passes": {}}
    for name, start, end, cpu in sorted(EVENTS, key=lambda e: e[1]):
        step = {"step": name, "start": round(start - zero, 3), "end": round(end - zero, 3), "cpu": round(cpu, 3)}
        out["client"].append(step)
    per: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for task in tasks:
        for phase in task["startstops"]:
            if phase["action"] == "compute":
                key = task["key"]
                key = f"{key[0][:32]} {key[1]}" if isinstance(key, tuple) else str(key)[:40]
                start, stop = phase["start"] - zero, phase["stop"] - zero
                per[_pass_of(task["key"])][task["worker"]].append((start, stop, key))
    for pass_name, workers in per.items():
        out["passes"][pass_name] = {
            worker: {
                "tasks": len(spans),
                "first": round(min(s for s, _, _ in spans), 3),
                "last": round(max(e for _, e, _ in spans), 3),
                "busy": round(sum(e - s for s, e, _ in spans), 3),
                "spans": [(round(s, 2), round(e, 2), key) for s, e, key in sorted(spans)],
            }
            for worker, spans in sorted(workers.items())
        }
    return out


def memory_report(sampler: RssSampler, zero: float) -> dict[str, Any]:
    """Per step (in start order): its sampled peak RSS and Arrow bytes, ``ru_maxrss`` at
    its end and Python's traced peak meanwhile (``--tracemalloc``); and the run's peak."""
    ends = {(name, end): (maxrss, python) for name, end, maxrss, python in MEMORY}
    steps = []
    for name, start, end, _ in sorted(EVENTS, key=lambda e: e[1]):
        if name.startswith("import") or name == "command returned":
            continue
        rss, arrow = sampler.peak(start, end)
        maxrss, python = ends.get((name, end), (None, None))
        steps.append(
            {
                "step": name,
                "start": round(start - zero, 2),
                "seconds": round(end - start, 2),
                "peak_rss_mb": round(rss, 1),
                "peak_arrow_mb": round(arrow, 1),
                "maxrss_mb_at_end": maxrss,
                "python_peak_mb": None if python is None else round(python, 1),
            }
        )
    top = max(range(len(sampler.rss)), key=sampler.rss.__getitem__)
    every = slice(None, None, 20)  # one sample in 20 (every ~0.1 s) for plotting
    samples = zip(sampler.times[every], sampler.rss[every], sampler.arrow[every], strict=True)
    return {
        "steps": steps,
        "peak_rss_mb": round(sampler.rss[top] / 2**20, 1),
        "peak_at": round(sampler.times[top] - zero, 2),
        "ru_maxrss_mb": _maxrss_mb(),
        "samples": [(round(t - zero, 2), round(r / 2**20, 1), round(a / 2**20, 1)) for t, r, a in samples],
    }


def _snapshot_top(limit: int = 25) -> list[str]:
    """The Python allocations held at the end of the ``--tracemalloc`` step, by line."""
    if not SNAPSHOTS:
        return []
    stats = SNAPSHOTS[-1].statistics("lineno")
    return [str(stat) for stat in stats[:limit]]


def main(argv: list[str]) -> None:
    zero = _process_start()
    rss = "--rss" in argv
    if rss:
        argv = [a for a in argv if a != "--rss"]
    if "--tracemalloc" in argv:
        import tracemalloc

        at = argv.index("--tracemalloc")
        SNAPSHOT_AT.append(argv[at + 1])
        argv = argv[:at] + argv[at + 2 :]
        tracemalloc.start(8)
    sampler = RssSampler().start() if rss else None
    target, source, output, private, *rest = argv
    for folder in (output, private):
        shutil.rmtree(folder, ignore_errors=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    tasks: list[dict[str, Any]] = []
    workers: dict[str, dict[str, Any]] = {}
    ready: dict[str, dict[str, Any]] = {}

    def instrument(pipeline: Any) -> None:
        _wrap_steps()
        run = pipeline.run

        def streamed(client: Any, config: Any, *more: Any) -> Any:
            if rss:  # the run alone: no task stream or worker calls held on the client
                return _timed("pipeline.run", run)(client, config, *more)
            ready.update(client.run(_process_cpu))
            for address, events in client.get_events().items():
                added = [t for t, msg in events if isinstance(msg, dict) and msg.get("action") == "add-worker"]
                if address in ready:
                    ready[address]["added"] = min(added, default=float("nan"))
            ready["client"] = {"start": zero, "cpu": _cpu(), "threads": _threads_cpu()}
            with _task_stream(tasks):
                summary = _timed("pipeline.run", run)(client, config, *more)
            workers.update(client.run(_process_cpu))
            return summary

        pipeline.run = streamed

    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "cxr_dask"), quiet=1)  # as wholerun.py
    sys.meta_path.insert(0, _AfterImport("cxr_dask.pipeline", instrument))
    imported = time.time()
    from cxr_dask import cli

    EVENTS.append(("import cli", imported, time.time(), 0.0))
    from cxr_dask import cluster, storage  # noqa: F401  (the command's first imports: wrapped here)

    _wrap_steps()
    # as the program itself (no argv): the run's LocalCluster is left to end with the process
    sys.argv = ["cxr-dask", "run", source, output, "--private", private, "--no-progress", *rest]
    code = cli._main(None)
    EVENTS.append(("command returned", time.time(), time.time(), _cpu()))
    if sampler is not None:
        sampler.stop()
        run = next((e for e in EVENTS if e[0] == "pipeline.run"), None)
        seconds = run[2] - run[1] if run else float("nan")
        memory = memory_report(sampler, zero) | {"exit": code, "seconds": seconds}
        memory["python_at_step_end"] = _snapshot_top()
        Path(target).write_text(json.dumps(memory, indent=1))
        sys.stdout.flush()
        os._exit(code)
    result = report(tasks, zero)
    result["workers"] = {
        address: {
            "process start": round(w["start"] - zero, 3),
            "registered": round(ready.get(address, {}).get("added", float("nan")) - zero, 3),
            "cpu": round(w["cpu"], 3),
            "threads": w["threads"],
        }
        for address, w in workers.items()
    }
    result["client threads cpu"] = _threads_cpu()
    result["cpu at the start of pipeline.run"] = {
        address: {"cpu": round(w["cpu"], 3), "threads": w["threads"]} for address, w in ready.items()
    }
    result["exit"] = code
    Path(target).write_text(json.dumps(result, indent=1))
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
