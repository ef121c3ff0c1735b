"""The client's peak memory against the archive's size: does it stay flat per file?

``cxr-dask run`` header-only (pixel scanning off: it costs the workers, not the client)
over small files (re-identified copies of a synthetic 64x64 corpus, as ``scaling`` makes
them) on local disk, at each size of ``$CXR_BENCH_CLIENT_FILES``
(20,000 and 100,000 by default), against one LocalCluster of 2 workers (``--scheduler``:
the scheduler and the workers live in this process and its children, so the peak RSS is
the client's alone). Reported per size: the client's peak RSS and that over the number of
files; between the smallest and the largest size, the slope (what one more file costs,
the identity map included) and from it the projection to 1 and 10 million files. The
targets: at 100,000 files at most half of the 10 KB a file measured before pass 1 and the
commit streamed through the journal's parts; and apart from the identity map, the same
at every size. "Apart from the identity map" is the peak RSS less the map's own bytes
(the Arrow columns and hash index of the crosswalk the run saved, as a worker loads it,
``KeyTable.nbytes``): what the client holds besides the one thing that must be whole
(ids are minted from the saved inventory a batch of rows at a time and both passes keep
a bounded window of tasks in flight, and the commit merges the metadata rows by an
external sort, ``sortmerge``: so what the client holds per file is the listing's keys
and the map). Each size runs ``--repeats`` times (3 by default; the sizes in turn, so
the machine's drift falls on both), and what is reported is each size's median run and
the spread (lowest and highest): the peak of one run moves by ~10 MB from run to run
(where a step's buffers land against the allocator's), half the 10% the target allows.
Run alone: ``python bench/client_memory.py --files 20000,100000 --repeats 3``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from distributed import LocalCluster

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from scale_s3 import SECRET, _cli_run  # noqa: E402
from scaling import replicate  # noqa: E402

from cxr_dask.identity import KeyTable, load_crosswalk  # noqa: E402
from cxr_dask.storage import Location  # noqa: E402
from cxr_dask.testing.synth import synthesize  # noqa: E402

DEFAULT_SIZES = (20_000, 100_000)
#: Client peak RSS per file at 100,000 files before this work (issue 15): 1.0 GB.
BEFORE_KB_PER_FILE = 10.0
PROJECTED = (1_000_000, 10_000_000)
#: Apart from the identity map, the peak at the largest size over that at the smallest may
#: exceed 1 by at most this share (the machine's noise): flat, not growing with the archive.
FLAT_PERCENT = 10
#: Runs of each size (``$CXR_BENCH_CLIENT_REPEATS``; ``make bench``'s ``--repeats`` caps it):
#: a 100,000-file run takes minutes, and three give a median and a spread.
DEFAULT_REPEATS = 3


def identity_map_mb(private: Path) -> float:
    """The bytes of the identity map a run saved in ``private``, as loaded (``KeyTable``s)."""
    identity = load_crosswalk(Location(str(private)), SECRET.encode())
    tables = (identity.patients, identity.first_dates, identity.studies, identity.images)
    return sum(table.nbytes for table in tables if isinstance(table, KeyTable)) / 1e6


def steps_run(source: Path, work: Path, scheduler: str, extra: list[str], trace: str | None = None) -> dict[str, Any]:
    """The run under ``bench/timeline.py --rss`` in its own process: the client's peak
    RSS per step (sampled every 5 ms) and ``ru_maxrss`` at each step's end."""
    report = work / "steps.json"
    # through a small process, as ``_cli_run``: a process started straight from this one
    # would start its ``ru_maxrss`` at this one's (Linux carries it across fork and exec)
    command = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"]
    command += [sys.executable, str(HERE / "timeline.py"), "--rss", str(report), str(source)]
    command += [str(work / "dataset"), str(work / "private"), "--scheduler", scheduler, *extra]
    if trace:
        command += ["--tracemalloc", trace]
    env = os.environ | {"CXR_DASK_SECRET": SECRET, "PYTHONPATH": str(HERE.parent)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"cxr-dask run exited {done.returncode}: {done.stderr[-500:]}")
    result: dict[str, Any] = json.loads(report.read_text())
    result.pop("samples", None)  # RSS every ~0.1 s: in the run's own report, not the bench's
    return result


def _sizes() -> list[int]:
    text = os.environ.get("CXR_BENCH_CLIENT_FILES")
    return sorted(int(n) for n in text.split(",")) if text else list(DEFAULT_SIZES)


def _measure(root: Path, base: Path, n: int, scheduler: str, steps: bool, trace: str | None) -> dict[str, Any]:
    """One run over ``n`` files: its peak RSS, the map's bytes and the peak apart from the map."""
    files = root / f"client-files-{n}"
    replicate(base, files, n)
    work = root / f"client-run-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    settings = work / "header-only.json"  # the client's memory does not depend on pixel work
    settings.write_text(json.dumps({"pixels": {"enabled": False}}))
    extra = ["--config", str(settings)]
    if steps:  # the run under the sampler: its own ru_maxrss is the peak (the sampler costs <1 MB)
        sampled = steps_run(files, work, scheduler, extra, trace)
        measured = {"seconds": sampled["seconds"], "client_peak_mb": sampled["ru_maxrss_mb"], "steps": sampled}
    else:
        measured = _cli_run(str(files), str(work / "dataset"), str(work / "private"), scheduler, None, extra)
    map_mb = identity_map_mb(work / "private")
    shutil.rmtree(work, ignore_errors=True)
    return {"files": n, **measured, "identity_map_mb": map_mb, "apart_from_map_mb": measured["client_peak_mb"] - map_mb}


def _step_peaks(measured: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Each step's peak RSS and Arrow bytes in one ``--steps`` run (a step run twice: its higher)."""
    peaks: dict[str, tuple[float, float]] = {}
    for step in measured.get("steps", {}).get("steps", []):
        rss, arrow = peaks.get(step["step"], (0.0, 0.0))
        peaks[step["step"]] = (max(rss, step["peak_rss_mb"]), max(arrow, step["peak_arrow_mb"]))
    return peaks


def summarize(n: int, measured: list[dict[str, Any]]) -> dict[str, Any]:
    """A size's runs as one: the medians, each run's value and the spread (max - min)."""
    out: dict[str, Any] = {"files": n, "repeats": len(measured), "identity_map_mb": measured[0]["identity_map_mb"]}
    for name in ("client_peak_mb", "apart_from_map_mb", "seconds"):
        values = [m[name] for m in measured]
        out[name] = statistics.median(values)
        out[f"{name}_runs"] = [round(v, 1) for v in values]
        out[f"{name}_spread"] = max(values) - min(values)
    peaks = [_step_peaks(m) for m in measured]
    if any(peaks):
        names = list(dict.fromkeys(name for p in peaks for name in p))
        out["steps"] = {
            name: {
                "peak_rss_mb": statistics.median(p[name][0] for p in peaks if name in p),
                "peak_rss_mb_runs": [p[name][0] for p in peaks if name in p],
                "peak_arrow_mb": statistics.median(p[name][1] for p in peaks if name in p),
            }
            for name in names
        }
    return out


def run(
    root: Path,
    repeats: int = DEFAULT_REPEATS,
    sizes: list[int] | None = None,
    steps: bool = False,
    trace: str | None = None,
) -> dict[str, Any]:
    """Each size ``repeats`` times (at most ``$CXR_BENCH_CLIENT_REPEATS``, 3 by default: a
    100,000-file run takes minutes), the sizes in turn; ``steps``: each run under the
    per-step sampler (``steps_run``), its ``ru_maxrss`` the peak (``trace``: with
    tracemalloc, naming the allocations held after that step: slower, and Python's
    bookkeeping adds to the peak)."""
    repeats = max(1, min(repeats, int(os.environ.get("CXR_BENCH_CLIENT_REPEATS", DEFAULT_REPEATS))))
    sizes = sizes or _sizes()
    base = root / "s3-base"  # the corpus scale_s3 copies, so a make bench makes it once
    if not base.exists():
        synthesize(str(base), patients=20, seed=9, rows=64, columns=64)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    measured: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="4GiB"
    ) as cluster:
        for _ in range(repeats):
            for n in sizes:
                one = _measure(root, base, n, cluster.scheduler_address, steps, trace)
                measured[n].append(one)
                # each run as it ends (a long series stopped early still says what it measured)
                names = ("files", "client_peak_mb", "identity_map_mb", "apart_from_map_mb", "seconds")
                line = {name: round(one[name], 2) for name in names} | {"steps": _step_peaks(one)}
                print(f"[client_memory] {json.dumps(line)}", file=sys.stderr, flush=True)
    runs = [summarize(n, measured[n]) for n in sizes]
    small, large = runs[0], runs[-1]
    slope = (
        (large["client_peak_mb"] - small["client_peak_mb"]) / (large["files"] - small["files"])
        if large["files"] > small["files"]
        else None
    )
    result: dict[str, Any] = {
        "repeats": repeats,
        "runs": runs,
        "slope_kb_per_file": slope * 1000 if slope is not None else None,
    }
    if large["files"] > small["files"]:
        growth = large["apart_from_map_mb"] - small["apart_from_map_mb"]
        result["apart_from_map_growth_percent"] = 100 * growth / small["apart_from_map_mb"]
        # each repeat's pair (the i-th run of each size): how far the medians' growth moves
        pairs = zip(small["apart_from_map_mb_runs"], large["apart_from_map_mb_runs"], strict=True)
        result["apart_from_map_growth_percent_runs"] = [round(100 * (b - a) / a, 1) for a, b in pairs]
        result["apart_from_map_slope_kb_per_file"] = 1000 * growth / (large["files"] - small["files"])
        map_slope = (large["identity_map_mb"] - small["identity_map_mb"]) / (large["files"] - small["files"])
        result["identity_map_kb_per_file"] = 1000 * map_slope
    if slope is not None:
        intercept = large["client_peak_mb"] - slope * large["files"]
        result["intercept_mb"] = intercept
        result["projected_mb"] = {str(n): intercept + slope * n for n in PROJECTED}
    return result


def _runs_note(values: list[float]) -> str:
    return " / ".join(f"{v:.0f}" for v in values)


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's lines: each size's median run (what ``--repeats`` ran: its runs in a note)."""
    out: list[dict[str, Any]] = []
    for measured in result["runs"]:
        n = measured["files"]
        corpus = f"{n:,} small files, local"
        per_file = 1000 * measured["client_peak_mb"] / n
        row = {
            "section": "client",
            "corpus": corpus,
            "what": f"peak RSS {measured['client_peak_mb']:.0f} MB: KB/file",
            "value": per_file,
        }
        if n >= 100_000:
            row["limit"] = BEFORE_KB_PER_FILE / 2
        out.append(row)
        map_mb = measured["identity_map_mb"]
        out.append(
            {
                "section": "client",
                "corpus": corpus,
                "what": f"apart from the map ({map_mb:.0f} MB): MB",
                "value": measured["apart_from_map_mb"],
            }
        )
        if measured.get("repeats", 1) > 1:
            runs = measured["apart_from_map_mb_runs"]
            note = f"{_runs_note(runs)} (median of {len(runs)}, spread {measured['apart_from_map_mb_spread']:.1f})"
            out.append({"section": "client", "corpus": corpus, "what": "apart from the map, runs (MB)", "note": note})
    if result.get("slope_kb_per_file") is not None:
        sizes = f"{result['runs'][0]['files']:,} to {result['runs'][-1]['files']:,}"
        out.append(
            {
                "section": "client",
                "corpus": sizes,
                "what": "slope: KB per more file",
                "value": result["slope_kb_per_file"],
            }
        )
        if "apart_from_map_growth_percent" in result:
            out.append(
                {
                    "section": "client",
                    "corpus": sizes,
                    "what": "apart from the map: growth %",
                    "value": result["apart_from_map_growth_percent"],
                    "limit": FLAT_PERCENT,
                }
            )
            by_run = result.get("apart_from_map_growth_percent_runs", [])
            if len(by_run) > 1:
                note = " / ".join(f"{g:+.1f}%" for g in by_run) + " (the i-th run of each size; the row: medians)"
                out.append({"section": "client", "corpus": sizes, "what": "growth %, run by run", "note": note})
        for n, mb in result["projected_mb"].items():
            out.append(
                {
                    "section": "client",
                    "corpus": f"{int(n):,} files (projected)",
                    "what": "client peak RSS MB",
                    "value": mb,
                }
            )
    return out


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", help="comma-separated archive sizes (default 20000,100000)")
    parser.add_argument("--workdir", help="keep the corpora here (default: a temporary folder)")
    parser.add_argument("--steps", action="store_true", help="the run under a sampler: also the peak RSS per step")
    parser.add_argument("--tracemalloc", metavar="STEP", help="with --steps: Python's allocations after STEP")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="runs of each size (median, spread)")
    args = parser.parse_args()
    os.environ["CXR_BENCH_CLIENT_REPEATS"] = str(args.repeats)  # the flag over the default cap
    sizes = sorted(int(n) for n in args.files.split(",")) if args.files else None
    with tempfile.TemporaryDirectory(prefix="cxr-bench-client-") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        result = run(root, repeats=args.repeats, sizes=sizes, steps=args.steps, trace=args.tracemalloc)
    print(json.dumps(result, indent=2))
    for row in rows(result):
        print(row)


if __name__ == "__main__":
    main()
