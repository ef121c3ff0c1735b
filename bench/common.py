"""Shared pieces of the benchmarks: corpora, fair timing, machine description, results.

Public tools only: ``time.perf_counter`` with several repetitions and the median,
contenders interleaved (A, B, C, A, B, C, ...) so a noisy neighbour slows them alike,
and ``resource.getrusage`` for peak memory.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom

RESULTS = Path(__file__).parent / "results"
Contender = tuple[Callable[[], None], Callable[[], None]]
EXPLICIT = [pydicom.uid.ExplicitVRLittleEndian]

#: The two corpora every one-core contender runs on (cxr_dask.testing.synth, explicit VR LE).
#: small: 256x256 (header work dominates); large: 3000x2500 at 16 bits, ~15 MB a file.
CORPORA = {
    "small": {"patients": 60, "seed": 1, "rows": 256, "columns": 256},
    "large": {"patients": 4, "seed": 2, "rows": 3000, "columns": 2500},
}


def machine() -> dict[str, Any]:
    """What the numbers were taken on; load average says how busy it was."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "pydicom": pydicom.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def interleaved_medians(contenders: dict[str, Contender], repeats: int) -> dict[str, float]:
    """Median seconds of each contender's work, run in turn ``repeats`` times (A, B, A, B, ...).

    A contender is ``(setup, work)``: only ``work`` is timed (setup clears the previous
    repetition's output, which costs differently for a flat folder and a deep tree), and
    the page cache is synced between contenders. Writes are timed to the page cache, as
    ``cp`` and every tool here leave them.
    """
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, (setup, work) in contenders.items():
            setup()
            os.sync()  # earlier contenders' dirty pages must not be flushed on this one's time
            started = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path
