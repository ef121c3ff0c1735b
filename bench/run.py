"""Header de-identification throughput beside its floors, measured side by side in one run.

For a small-image corpus (header work dominates) and a set of full-size 3000x2500 CXRs,
on one core, writing real files each time:

- ``cp``: a plain copy of the same bytes (the I/O floor);
- ``pydicom``: a bare ``dcmread`` + ``save_as`` loop (the Python floor);
- ``cxr-dask``: ``process.process_file``, the pass-2 work of one file (read, Annex E
  header de-identification, write in the MIMIC-CXR layout), without Dask.

Each figure is the median of several repetitions; ratios are cxr-dask's throughput over
each floor's. Results go to ``bench/results/header.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom

from cxr_dask import identity, inventory, process
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.storage import Location, list_files
from cxr_dask.synth import synthesize

RESULTS = Path(__file__).parent / "results"


def median_seconds(work: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(corpus_dir: Path, scratch: Path, repeats: int) -> dict[str, float]:
    source = Location(str(corpus_dir))
    files = list_files(source)
    records = inventory.scan_partition(((i, k, s) for i, (k, s) in enumerate(files)), source)
    table = inventory.mark_duplicates(inventory.to_table(records))
    ident = identity.extend(identity.IdentityMap(uid_key=b"bench-secret-0123456789"), table)
    options = ProfileOptions()
    n_bytes = sum(size for _, size in files)

    def copy() -> None:
        target = scratch / "cp"
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(["cp", "-r", str(corpus_dir), str(target)], check=True)

    def bare() -> None:
        target = scratch / "bare"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        for index, (key, _) in enumerate(files):
            ds = pydicom.dcmread(corpus_dir / key)
            ds.save_as(target / f"{index}.dcm")

    def ours() -> None:
        target = scratch / "ours"
        shutil.rmtree(target, ignore_errors=True)
        destination = Location(str(target))
        for index, (key, _) in enumerate(files):
            audit, _ = process.process_file(source, destination, index, key, ident, options)
            assert audit["status"] == "written", audit["reason"]

    seconds = {
        name: median_seconds(work, repeats) for name, work in [("cp", copy), ("pydicom", bare), ("cxr-dask", ours)]
    }
    return {
        "files": len(files),
        "megabytes": n_bytes / 1e6,
        **{f"{name}_files_per_s": len(files) / s for name, s in seconds.items()},
        **{f"{name}_mb_per_s": n_bytes / 1e6 / s for name, s in seconds.items()},
        "ratio_vs_pydicom": seconds["pydicom"] / seconds["cxr-dask"],
        "ratio_vs_cp": seconds["cp"] / seconds["cxr-dask"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=60, help="patients in the small-image corpus")
    parser.add_argument("--large", type=int, default=3, help="patients in the 3000x2500 corpus")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    explicit = [pydicom.uid.ExplicitVRLittleEndian]
    results = {"machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}"}
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
        root = Path(tmp)
        synthesize(str(root / "small"), patients=args.small, seed=1, transfer_syntaxes=explicit)
        synthesize(
            str(root / "large"), patients=args.large, seed=2, rows=3000, columns=2500, transfer_syntaxes=explicit
        )
        for name in ("small", "large"):
            scratch = root / f"scratch-{name}"
            scratch.mkdir()
            results[name] = measure(root / name, scratch, args.repeats)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "header.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"header de-identification, one core, median of {args.repeats}; {results['machine']}")
    columns = ("files", "MB", "cp f/s", "pydicom f/s", "cxr-dask f/s", "vs pydicom", "vs cp")
    print(f"{'corpus':8} " + " ".join(f"{c:>12}" for c in columns))
    for name in ("small", "large"):
        r = results[name]
        print(
            f"{name:8} {r['files']:>12} {r['megabytes']:>12.1f} {r['cp_files_per_s']:>12.1f} "
            f"{r['pydicom_files_per_s']:>12.1f} {r['cxr-dask_files_per_s']:>12.1f} "
            f"{r['ratio_vs_pydicom']:>11.2f}x {r['ratio_vs_cp']:>11.2f}x"
        )


if __name__ == "__main__":
    main()
