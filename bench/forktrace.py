"""The CPU each process of a ``cxr-dask run`` spends on the way to the first task, traced.

Runs the command in this process with an audit hook (``sys.addaudithook``) that every
process forked from it inherits (the fork server, the workers): each import of a top-level
module, fork, socket bind and connect, and subprocess is logged with the process's own
``time.process_time`` (a forked child starts at 0). CPU and the order of events hold on a
shared machine where wall times do not (docs/scaling.md, "sixth round"); the summary line
is the chain to the first task: the client's CPU to the server's fork, the server's to its
first worker's, and each worker's from its fork to its first connect.

``python bench/forktrace.py LOG IN OUT PRIVATE --workers 2`` (OUT and PRIVATE are removed
first; more flags go to ``cxr-dask run``). ``--all`` logs every import, dotted ones too.
``--steps`` also logs the start (``+``) and end (``-``) of the client's and the workers'
steps (``STEPS``: the checks, the cluster's start, pass 1 and 2 and their tasks, minting,
the commit), wrapped as each module loads in whichever process loads it: the chain of
docs/scaling.md's "seventh round".
"""

from __future__ import annotations

import functools
import importlib.machinery
import os
import shutil
import sys
import threading
import time
from typing import Any

KEPT = {"socket.connect", "socket.bind", "os.fork", "subprocess.Popen", "shutil.rmtree"}
#: ``--steps``: functions (module, qualified name) logged as they start and end.
STEPS = {
    "cxr_dask.storage": ("check_locations", "remove_partials"),
    "cxr_dask.workerenv": ("fork_server_here", "fork_server"),
    "cxr_dask.lock": ("RunClaim.__enter__", "RunClaim.check", "RunClaim.start"),
    "cxr_dask.cluster": ("Starting.client", "_local_cluster", "_start_workers", "arrow_without_pandas"),
    "cxr_dask.heap": ("load_arrow", "release"),
    "cxr_dask.preload": ("dask_setup", "first_uses"),
    "cxr_dask.pipeline": (
        "run",
        "check_workers_reach_storage",
        "list_table",
        "_scan",
        "_inventory_file",
        "_Pass2.run",
        "scan_partition_to_journal",
        "deidentify_partition",
    ),
    "cxr_dask.identity": ("extend", "save_crosswalk", "load_crosswalk"),
    "cxr_dask.process": ("process_file",),
    "cxr_dask.commit": ("commit",),
    "cxr_dask.review": ("build",),
}
STEP = "cxr.step"


def _hook(log: int, every_import: bool) -> Any:
    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "import":
            if not every_import and ("." in args[0] or args[0].startswith("_")):
                return
            what = f"import {args[0]}"
        elif event == STEP:
            what = args[0]
        elif event in KEPT:
            what = f"{event} {str(args)[:100]}"
        else:
            return
        thread = threading.current_thread().name.replace(" ", "_")[:16]
        os.write(log, f"{time.time():.4f} {os.getpid()} {time.process_time():.3f} {thread} {what}\n".encode())

    return hook


def _logged(name: str, function: Any) -> Any:
    @functools.wraps(function)
    def logged(*args: Any, **kwargs: Any) -> Any:
        sys.audit(STEP, f"+{name}")
        try:
            return function(*args, **kwargs)
        finally:
            sys.audit(STEP, f"-{name}")

    return logged


class _StepFinder:
    """Wraps ``STEPS``' functions as their module loads (before any other module takes them
    by ``from ... import``), in the client and in every process forked from it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in STEPS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader

        class Loader(type(loader)):  # type: ignore[misc]
            def exec_module(self, module: Any) -> None:
                loader.exec_module(module)
                for step in STEPS[name]:
                    owner: Any = module
                    *path, last = step.split(".")
                    for part in path:
                        owner = getattr(owner, part)
                    setattr(owner, last, _logged(step, getattr(owner, last)))

        spec.loader = Loader(loader.name, loader.path)  # type: ignore[call-arg]
        return spec


def chain(path: str) -> dict[str, Any]:
    """CPU seconds along the chain to the first task, from a log this wrote."""
    rows = [line.rstrip("\n").split(" ", 4) for line in open(path)]  # noqa: SIM115  (read whole at once)
    pids = list(dict.fromkeys(row[1] for row in rows))
    if len(pids) < 3:
        return {"processes": len(pids)}
    client, server, *workers = pids

    def first(pid: str, prefix: str) -> float:
        return next((float(r[2]) for r in rows if r[1] == pid and r[4].startswith(prefix)), float("nan"))

    return {
        "client to the server's fork": first(client, "os.fork"),
        "server to its first worker's fork": first(server, "os.fork"),
        "each worker to its first connect": [first(worker, "socket.connect") for worker in workers],
    }


def main(argv: list[str]) -> None:
    every_import = "--all" in argv
    steps = "--steps" in argv
    argv = [a for a in argv if a not in ("--all", "--steps")]
    target, source, output, private, *rest = argv
    for folder in (output, private):
        shutil.rmtree(folder, ignore_errors=True)
    log = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    sys.addaudithook(_hook(log, every_import))
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if steps:
        sys.meta_path.insert(0, _StepFinder())
    from cxr_dask import cli

    sys.argv = ["cxr-dask", "run", source, output, "--private", private, "--no-progress", *rest]
    code = cli._main(None)
    sys.stdout.flush()
    print(chain(target), flush=True)
    os._exit(code)  # as the command: its workers end with it


if __name__ == "__main__":
    main(sys.argv[1:])
