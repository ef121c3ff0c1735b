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
    ("cxr_dask.journal", "RunJournal.read_parts"),
    ("cxr_dask.pipeline", "_complete_audit"),
    ("cxr_dask.pipeline", "_commit"),
    ("cxr_dask.review", "build"),
    ("cxr_dask.journal", "RunJournal.finish"),
    ("cxr_dask.cluster", "Starting.client"),
    ("cxr_dask.journal", "refuse_other_unfinished"),
    ("cxr_dask.storage", "check_locations"),
    ("cxr_dask.cluster", "_local_cluster"),
    ("cxr_dask.cluster", "_import_dashboard"),
    ("cxr_dask.cluster", "arrow_without_pandas"),
)

#: (step, wall start, wall end, this process's CPU seconds meanwhile, all threads)
EVENTS: list[tuple[str, float, float, float]] = []


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


def _timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.time(), _cpu()
        try:
            return function(*args, **kwargs)
        finally:
            EVENTS.append((name, started, time.time(), _cpu() - cpu))

    return wrapper


_WRAPPED: set[tuple[str, str]] = set()


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


def main(argv: list[str]) -> None:
    zero = _process_start()
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

        def streamed(client: Any, config: Any, *rest: Any) -> Any:
            ready.update(client.run(_process_cpu))
            for address, events in client.get_events().items():
                added = [t for t, msg in events if isinstance(msg, dict) and msg.get("action") == "add-worker"]
                if address in ready:
                    ready[address]["added"] = min(added, default=float("nan"))
            ready["client"] = {"start": zero, "cpu": _cpu(), "threads": _threads_cpu()}
            with _task_stream(tasks):
                summary = _timed("pipeline.run", run)(client, config, *rest)
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
