"""Bucket to bucket through moto's S3 server: files/s, requests per file, client memory.

The same small files (re-identified copies of a synthetic corpus, as ``scaling`` makes
them) are run twice on one LocalCluster of 2 workers: local folder to local folder, and
``s3://`` bucket to bucket through moto's server (tests/moto_s3.py, which logs every
request). Reported: files/s of each; the requests each file cost by kind (LIST, ranged
GET, GET, PUT, HEAD, other) against the target of at most 1 ranged GET + 1 GET + 1 PUT +
0.01 LIST per file plus the journal's parts (pass 1's inventory parts and pass 2's
metadata and audit parts: one PUT by a worker and one GET at the commit each), and no
HEAD per file; the client's peak RSS
(the ``cxr-dask run`` process alone: the cluster and moto live in this process); the
tasks of each pass. Run alone: ``python bench/scale_s3.py --files 2000``; in ``make
bench`` the size is ``$CXR_BENCH_S3_FILES`` (20,000 by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from distributed import LocalCluster

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the moto server with its request log

from moto_s3 import Request, start_counting_server, storage_options  # noqa: E402
from scaling import replicate  # noqa: E402

from cxr_dask.config import RunConfig  # noqa: E402
from cxr_dask.testing.synth import synthesize  # noqa: E402

DEFAULT_FILES = 20_000
WORKERS = 2
SECRET = "bench-s3-secret-0123456789abcdef"
KINDS = ("LIST", "ranged GET", "GET", "PUT", "HEAD", "other")


def kind_of(request: Request) -> str:
    if request.method == "GET" and "list-type" in request.query:
        return "LIST"
    if request.method == "GET":
        return "ranged GET" if request.range else "GET"
    return request.method if request.method in KINDS else "other"


def _cli_run(
    source: str, output: str, private: str, scheduler: str, options: dict | None, extra: list[str] | None = None
) -> dict[str, Any]:
    """``cxr-dask run`` in its own process; its wall time and peak RSS (it has no children)."""
    command = [sys.executable, "-m", "cxr_dask.cli", "run", source, output, "--private", private]
    command += ["--scheduler", scheduler, "--no-progress", *(extra or [])]
    if options:
        command += ["--storage-options", json.dumps(options)]
    script = (
        "import resource, subprocess, sys, time\n"
        "started = time.perf_counter()\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "print(code, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    env = os.environ | {"CXR_DASK_SECRET": SECRET}
    done = subprocess.run(
        [sys.executable, "-c", script, *command], capture_output=True, text=True, env=env, check=False
    )
    code, seconds, peak_kb = done.stdout.strip().splitlines()[-1].split()
    if int(code) != 0:
        raise RuntimeError(f"cxr-dask run exited {code}: {done.stderr[-500:]}")
    return {"seconds": float(seconds), "client_peak_mb": int(peak_kb) / 1024}


def run(root: Path, repeats: int = 1, n_files: int | None = None, header_only: bool = False) -> dict[str, Any]:
    """``header_only``: pixel scanning off (requests per file do not depend on it; time does)."""
    del repeats  # one run each: minutes, not a micro-benchmark
    n_files = n_files or int(os.environ.get("CXR_BENCH_S3_FILES", DEFAULT_FILES))
    base = root / "s3-base"
    if not base.exists():
        synthesize(str(base), patients=20, seed=9, rows=64, columns=64)
    files = root / f"s3-files-{n_files}"
    replicate(base, files, n_files)
    total_bytes = sum(path.stat().st_size for path in files.rglob("*.dcm"))

    logging.getLogger("distributed").setLevel(logging.ERROR)
    server = start_counting_server()
    try:
        import s3fs

        options = storage_options(server.endpoint)
        fs = s3fs.S3FileSystem(**options)
        for bucket in ("archive", "research", "phi-vault"):
            fs.mkdir(bucket)
        fs.put(str(files) + "/", "archive/cxr/", recursive=True)
        extra: list[str] = []
        if header_only:
            settings = root / "s3-header-only.json"
            settings.write_text(json.dumps({"pixels": {"enabled": False}}))
            extra = ["--config", str(settings)]
        with LocalCluster(
            n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="4GiB"
        ) as cluster:
            scheduler = cluster.scheduler_address
            local = _cli_run(
                str(files), str(root / "s3-out-local"), str(root / "s3-private-local"), scheduler, None, extra
            )
            server.log.clear()
            remote = _cli_run(
                "s3://archive/cxr", "s3://research/dataset", "s3://phi-vault/run", scheduler, options, extra
            )
        requests = server.log.snapshot()
    finally:
        server.stop()
    by_kind = Counter(kind_of(request) for request in requests)
    parts = sum(1 for r in requests if r.method == "PUT" and "/runs/" in r.path and r.path.endswith(".audit.parquet"))
    # every part the journal holds: pass 1's inventory parts, pass 2's metadata, audit and review parts
    journal_puts = sum(1 for r in requests if r.method == "PUT" and "/runs/" in r.path and "/parts/" in r.path)
    journal_puts += sum(1 for r in requests if r.method == "PUT" and "/runs/" in r.path and "/inventory/" in r.path)
    partition = RunConfig("a", "b", "c").partition_size_for(n_files, WORKERS)
    return {
        "files": n_files,
        "header_only": header_only,
        "mb": total_bytes / 1e6,
        "local": local,
        "s3": remote,
        "requests": dict(by_kind),
        "journal_parts": parts,
        "journal_part_puts": journal_puts,
        "tasks_per_pass": math.ceil(n_files / partition),
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    n = result["files"]
    corpus = f"{n:,} files, moto S3"
    per_file = {kind: result["requests"].get(kind, 0) / n for kind in KINDS}
    # the journal: each part is one PUT on a worker and one GET at the commit (older results
    # counted pass-2 tasks only: 2 parts each)
    journal_per_file = result.get("journal_part_puts", 2 * result["journal_parts"]) / n
    out = [
        {
            "section": "s3",
            "corpus": corpus,
            "what": "local disk to local disk",
            "files_s": n / result["local"]["seconds"],
            "mb_s": result["mb"] / result["local"]["seconds"],
        },
        {
            "section": "s3",
            "corpus": corpus,
            "what": "bucket to bucket",
            "files_s": n / result["s3"]["seconds"],
            "mb_s": result["mb"] / result["s3"]["seconds"],
        },
    ]
    # Journal: one inventory part per pass-1 task, metadata and audit parts per pass-2 task,
    # plus a handful of objects per run.
    limits = {
        "LIST": 0.01,
        "ranged GET": 1,
        "GET": 1 + journal_per_file + 0.01,
        "PUT": 1 + journal_per_file + 0.01,
    }
    for kind in KINDS:
        limit = limits.get(kind, 0.01)
        out.append(
            {"section": "s3", "corpus": corpus, "what": f"{kind} per file", "value": per_file[kind], "limit": limit}
        )
    out.append(
        {
            "section": "s3",
            "corpus": corpus,
            "what": "client peak RSS MB (s3 / local)",
            "value": f"{result['s3']['client_peak_mb']:.0f} / {result['local']['client_peak_mb']:.0f}",
        }
    )
    out.append({"section": "s3", "corpus": corpus, "what": "tasks per pass", "value": result["tasks_per_pass"]})
    return out


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=DEFAULT_FILES, help="objects in the archive bucket")
    parser.add_argument("--workdir", help="keep the corpus here (default: a temporary folder)")
    parser.add_argument("--header-only", action="store_true", help="pixel scanning off (same requests, less CPU)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cxr-bench-s3-") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        result = run(root, n_files=args.files, header_only=args.header_only)
    print(json.dumps(result, indent=2))
    for row in rows(result):
        print(row)


if __name__ == "__main__":
    main()
