"""Whole runs on a LocalCluster: 1 worker against 2, the 20,000-file run, worker memory.

- scaling: ``pipeline.run`` over the same 2,000 small files on a 1-worker and a 2-worker
  cluster (1 thread each), interleaved; the ratio is the speed-up of the second;
- 20,000 small files (256x256) end to end on 2 workers (listing, pass 1, identity map,
  pass 2, Parquet) against a bare ``dcmread`` + ``save_as`` loop over the same files in 2
  processes: what the scheduler, partitioning and tables cost per file;
- peak memory: each worker's peak resident set (``getrusage`` in the worker) after a run
  over the 15 MB files, against 4x the largest file per thread plus 300 MB.

The big corpora are made by re-identifying copies of the small synthetic corpus (new
PatientID, accession and UIDs per copy), which is much faster than synthesizing them.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
from distributed import Client, LocalCluster

from cxr_dask import pipeline
from cxr_dask.config import RunConfig
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.deid.rules import PixelOptions

SCALING_FILES = 2_000
BIG_RUN_FILES = 20_000
MEMORY_SLACK_MB = 300


def replicate(base: Path, out: Path, n_files: int) -> int:
    """``n_files`` files: copies of ``base``'s files, each copy a new set of patients."""
    if out.exists() and sum(1 for _ in out.rglob("*.dcm")) == n_files:
        return n_files
    shutil.rmtree(out, ignore_errors=True)
    sources = sorted(base.rglob("*.dcm"))
    written = 0
    for copy in range(math.ceil(n_files / len(sources))):
        for path in sources:
            if written == n_files:
                return written
            ds = pydicom.dcmread(path)
            ds.PatientID = f"{ds.PatientID}-{copy}"
            ds.AccessionNumber = f"{ds.AccessionNumber}-{copy}"[-16:]
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                setattr(ds, keyword, f"{getattr(ds, keyword)}.{copy}")
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            target = out / f"c{copy:04d}" / path.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target)
            written += 1
    return written


def _cluster(workers: int) -> tuple[LocalCluster, Client]:
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        memory_limit="3GiB",
        silence_logs=logging.ERROR,
    )
    return cluster, Client(cluster)


def _cpu_seconds() -> float:
    return time.process_time()


def _run(client: Client, corpus: Path, work: Path) -> float:
    return _run_with_cpu(client, corpus, work)[0]


def _run_with_cpu(client: Client, corpus: Path, work: Path) -> tuple[float, float]:
    """Wall seconds of ``pipeline.run`` and the CPU seconds its workers spent.

    CPU time is what a loaded machine cannot inflate: with other processes on the
    cores, wall time says how much CPU the workers were given, not what they needed.
    """
    shutil.rmtree(work, ignore_errors=True)
    cpu_before = client.run(_cpu_seconds)
    # Header-only, so the run's per-file overhead (scheduler, partitions, journal, Parquet)
    # is what differs from the bare loop; the pixel path is measured by itself.
    config = RunConfig(
        input=str(corpus),
        output=str(work / "dataset"),
        private=str(work / "private"),
        progress=False,
        profile=ProfileOptions(pixels=PixelOptions(enabled=False)),
    )
    started = time.perf_counter()
    summary = pipeline.run(client, config)
    seconds = time.perf_counter() - started
    cpu_after = client.run(_cpu_seconds)
    if summary.quarantined:
        raise RuntimeError(f"benchmark run quarantined files: {summary.reasons}")
    shutil.rmtree(work, ignore_errors=True)
    return seconds, sum(cpu_after[w] - cpu_before[w] for w in cpu_after)


def _bare_half(paths: list[str], target: str) -> tuple[int, float]:
    os.makedirs(target, exist_ok=True)
    cpu = time.process_time()
    for index, path in enumerate(paths):
        pydicom.dcmread(path).save_as(os.path.join(target, f"{index}.dcm"))
    return len(paths), time.process_time() - cpu


def _bare_two_processes(pool: ProcessPoolExecutor, corpus: Path, work: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds of the bare loop over ``corpus``, split over 2 processes."""
    shutil.rmtree(work, ignore_errors=True)
    paths = sorted(str(p) for p in corpus.rglob("*.dcm"))
    started = time.perf_counter()
    halves = [pool.submit(_bare_half, paths[i::2], str(work / str(i))) for i in range(2)]
    outcomes = [f.result() for f in halves]
    seconds = time.perf_counter() - started
    assert sum(n for n, _ in outcomes) == len(paths)
    shutil.rmtree(work, ignore_errors=True)
    return seconds, sum(cpu for _, cpu in outcomes)


def _worker_peak_mb() -> float:
    """The worker's peak resident set: VmHWM, which (unlike ``ru_maxrss``) does not
    inherit the high-water mark of the process that forked it before ``exec``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _megabytes(folder: Path) -> tuple[int, float, float]:
    sizes = [p.stat().st_size for p in folder.rglob("*.dcm")]
    return len(sizes), sum(sizes) / 1e6, max(sizes) / 1e6


def run(root: Path, repeats: int) -> dict[str, Any]:
    from header import make_corpus

    small, large = make_corpus(root, "small"), make_corpus(root, "large")
    medium = root / "scaling"
    big = root / "twenty-thousand"
    started = time.perf_counter()
    replicate(small, medium, SCALING_FILES)
    replicate(small, big, BIG_RUN_FILES)
    result: dict[str, Any] = {"replicate_seconds": time.perf_counter() - started}

    one, one_client = _cluster(1)
    two, two_client = _cluster(2)
    try:
        for client in (one_client, two_client):  # imports and first-task costs, untimed
            _run(client, small, root / "warm-up")
        seconds: dict[str, list[float]] = {"1 worker": [], "2 workers": []}
        for _ in range(min(repeats, 3)):  # whole runs: 3 are enough for a median
            seconds["1 worker"].append(_run(one_client, medium, root / "run-1"))
            seconds["2 workers"].append(_run(two_client, medium, root / "run-2"))
        med = {k: sorted(v)[len(v) // 2] for k, v in seconds.items()}
        result["scaling"] = {"files": SCALING_FILES, "seconds": med, "speedup": med["1 worker"] / med["2 workers"]}
    finally:
        one_client.close()
        one.close()

    try:
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(abs, [1, 2]))  # start both processes before timing
            bare, bare_cpu = _bare_two_processes(pool, big, root / "bare-2")
        ours, ours_cpu = _run_with_cpu(two_client, big, root / "run-big")
        files, mb, _ = _megabytes(big)
        result["big_run"] = {
            "files": files,
            "megabytes": mb,
            "cxr_dask_seconds": ours,
            "bare_2_process_seconds": bare,
            "cxr_dask_files_per_s": files / ours,
            "bare_files_per_s": files / bare,
            "ratio": bare / ours,
            # CPU per file: workers' CPU (both passes) against the bare loop's; the
            # scheduler and client are not in it (the wall ratio has everything)
            "cxr_dask_worker_cpu_ms_per_file": 1000 * ours_cpu / files,
            "bare_cpu_ms_per_file": 1000 * bare_cpu / files,
            "cpu_ratio": bare_cpu / ours_cpu,
        }
    finally:
        two_client.close()
        two.close()

    # memory: a fresh 2-worker cluster, one run over the 15 MB files
    fresh, fresh_client = _cluster(2)
    try:
        idle = fresh_client.run(_worker_peak_mb)
        _run(fresh_client, large, root / "run-large")
        peaks = fresh_client.run(_worker_peak_mb)
    finally:
        fresh_client.close()
        fresh.close()
    _, _, largest = _megabytes(large)
    result["memory"] = {
        "worker_peak_mb": sorted(peaks.values()),
        "worker_idle_peak_mb": sorted(idle.values()),
        "largest_file_mb": largest,
        "threads_per_worker": 1,
        "limit_mb": 4 * largest + MEMORY_SLACK_MB,
    }
    return result


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    s, b, m = result["scaling"], result["big_run"], result["memory"]
    return [
        {
            "section": "cluster",
            "corpus": f"{s['files']} small files",
            "what": "1 worker",
            "files_s": s["files"] / s["seconds"]["1 worker"],
        },
        {
            "section": "cluster",
            "corpus": f"{s['files']} small files",
            "what": "2 workers (speed-up)",
            "files_s": s["files"] / s["seconds"]["2 workers"],
            "ratio": s["speedup"],
            "target": 1.7,
        },
        {
            "section": "cluster",
            "corpus": f"{b['files']} small files",
            "what": "bare loop, 2 processes",
            "files_s": b["bare_files_per_s"],
            "mb_s": b["megabytes"] / b["bare_2_process_seconds"],
        },
        {
            "section": "cluster",
            "corpus": f"{b['files']} small files",
            "what": "cxr-dask run, 2 workers",
            "files_s": b["cxr_dask_files_per_s"],
            "mb_s": b["megabytes"] / b["cxr_dask_seconds"],
            "ratio": b["ratio"],
            "target": 0.6,
        },
        {
            "section": "cluster",
            "corpus": f"{b['files']} small files",
            "what": "CPU ms/file: workers, bare",
            "value": f"{b['cxr_dask_worker_cpu_ms_per_file']:.2f} / {b['bare_cpu_ms_per_file']:.2f}",
        },
        {
            "section": "cluster",
            "corpus": f"{b['files']} small files",
            "what": "same, by CPU time (load-proof)",
            "ratio": b["cpu_ratio"],
            "target": 0.6,
        },
        {
            "section": "memory",
            "corpus": f"largest file {m['largest_file_mb']:.1f} MB",
            "what": f"worker peak RSS MB (idle {max(m['worker_idle_peak_mb']):.0f})",
            "value": max(m["worker_peak_mb"]),
            "limit": m["limit_mb"],
        },
    ]
