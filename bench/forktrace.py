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
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import Any

KEPT = {"socket.connect", "socket.bind", "os.fork", "subprocess.Popen", "shutil.rmtree"}


def _hook(log: int, every_import: bool) -> Any:
    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "import":
            if not every_import and ("." in args[0] or args[0].startswith("_")):
                return
            what = f"import {args[0]}"
        elif event in KEPT:
            what = f"{event} {str(args)[:100]}"
        else:
            return
        thread = threading.current_thread().name.replace(" ", "_")[:16]
        os.write(log, f"{time.time():.4f} {os.getpid()} {time.process_time():.3f} {thread} {what}\n".encode())

    return hook


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
    argv = [a for a in argv if a != "--all"]
    target, source, output, private, *rest = argv
    for folder in (output, private):
        shutil.rmtree(folder, ignore_errors=True)
    log = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    sys.addaudithook(_hook(log, every_import))
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from cxr_dask import cli

    sys.argv = ["cxr-dask", "run", source, output, "--private", private, "--no-progress", *rest]
    code = cli._main(None)
    sys.stdout.flush()
    print(chain(target), flush=True)
    os._exit(code)  # as the command: its workers end with it


if __name__ == "__main__":
    main(sys.argv[1:])
