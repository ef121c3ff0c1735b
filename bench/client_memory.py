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
and the map). Run alone: ``python bench/client_memory.py --files 20000,100000``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
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


def run(
    root: Path, repeats: int = 1, sizes: list[int] | None = None, steps: bool = False, trace: str | None = None
) -> dict[str, Any]:
    """``steps``: each size's run under the per-step sampler (``steps_run``), its
    ``ru_maxrss`` the peak (``trace``: with tracemalloc, naming the allocations held after
    that step: slower, and Python's bookkeeping adds to the peak)."""
    del repeats  # one run a size: minutes each, and a peak, not a time
    sizes = sizes or _sizes()
    base = root / "s3-base"  # the corpus scale_s3 copies, so a make bench makes it once
    if not base.exists():
        synthesize(str(base), patients=20, seed=9, rows=64, columns=64)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    runs = []
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="4GiB"
    ) as cluster:
        for n in sizes:
            files = root / f"client-files-{n}"
            replicate(base, files, n)
            work = root / f"client-run-{n}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            settings = work / "header-only.json"  # the client's memory does not depend on pixel work
            settings.write_text(json.dumps({"pixels": {"enabled": False}}))
            extra = ["--config", str(settings)]
            if steps:  # the run under the sampler: its own ru_maxrss is the peak (the sampler costs <1 MB)
                sampled = steps_run(files, work, cluster.scheduler_address, extra, trace)
                measured = {"seconds": sampled["seconds"], "client_peak_mb": sampled["ru_maxrss_mb"], "steps": sampled}
            else:
                address = cluster.scheduler_address
                measured = _cli_run(str(files), str(work / "dataset"), str(work / "private"), address, None, extra)
            map_mb = identity_map_mb(work / "private")
            apart = measured["client_peak_mb"] - map_mb
            runs.append({"files": n, **measured, "identity_map_mb": map_mb, "apart_from_map_mb": apart})
            shutil.rmtree(work, ignore_errors=True)
    small, large = runs[0], runs[-1]
    slope = (
        (large["client_peak_mb"] - small["client_peak_mb"]) / (large["files"] - small["files"])
        if large["files"] > small["files"]
        else None
    )
    result: dict[str, Any] = {"runs": runs, "slope_kb_per_file": slope * 1000 if slope is not None else None}
    if large["files"] > small["files"]:
        growth = large["apart_from_map_mb"] - small["apart_from_map_mb"]
        result["apart_from_map_growth_percent"] = 100 * growth / small["apart_from_map_mb"]
        result["apart_from_map_slope_kb_per_file"] = 1000 * growth / (large["files"] - small["files"])
        map_slope = (large["identity_map_mb"] - small["identity_map_mb"]) / (large["files"] - small["files"])
        result["identity_map_kb_per_file"] = 1000 * map_slope
    if slope is not None:
        intercept = large["client_peak_mb"] - slope * large["files"]
        result["intercept_mb"] = intercept
        result["projected_mb"] = {str(n): intercept + slope * n for n in PROJECTED}
    return result


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for measured in result["runs"]:
        n = measured["files"]
        per_file = 1000 * measured["client_peak_mb"] / n
        row = {
            "section": "client",
            "corpus": f"{n:,} small files, local",
            "what": f"client peak RSS {measured['client_peak_mb']:.0f} MB: KB/file",
            "value": per_file,
        }
        if n >= 100_000:
            row["limit"] = BEFORE_KB_PER_FILE / 2
        out.append(row)
        if "apart_from_map_mb" in measured:
            out.append(
                {
                    "section": "client",
                    "corpus": f"{n:,} small files, local",
                    "what": f"apart from the identity map ({measured['identity_map_mb']:.0f} MB): MB",
                    "value": measured["apart_from_map_mb"],
                }
            )
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
                    "what": "apart from the identity map: growth %",
                    "value": result["apart_from_map_growth_percent"],
                    "limit": FLAT_PERCENT,
                }
            )
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
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.files.split(",")) if args.files else None
    with tempfile.TemporaryDirectory(prefix="cxr-bench-client-") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        result = run(root, sizes=sizes, steps=args.steps, trace=args.tracemalloc)
    print(json.dumps(result, indent=2))
    for row in rows(result):
        print(row)


if __name__ == "__main__":
    main()
