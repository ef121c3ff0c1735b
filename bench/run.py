"""``make bench``: every benchmark module that exists, then one table of ratios.

Modules run in this order when their file exists beside this one; each has
``run(root: Path, repeats: int) -> dict`` (saved as ``results/<name>.json``) and
``rows(result) -> list[dict]`` (lines of the table: ``section``, ``corpus``, ``what`` and
``files_s``/``mb_s``/``ratio``/``target`` for throughputs, or ``value``/``limit``).
A module that fails prints its error in the table and the others still run.

- ``header``:  one core: cp, bare pydicom, cxr-dask header-only, the peers (bench/peers.py)
- ``pixels``:  the pixel path per image (decode, detect, OCR, encode), when it exists
- ``old_jpeg``: the dcmdjpeg fallback per 2000x2500 12-bit JPEG (Extended and retired processes)
- ``pixels_real``: the pixel path on real public files (false-positive area, text left)
- ``scaling``: 1 vs 2 workers, the 20,000-file run, worker peak memory (LocalCluster)
- ``wholerun``: ``cxr-dask run`` as a user runs it beside the bare loop; pass 2 in a worker
- ``scale``:   400,000 inventory rows: identity map, broadcast size, graph tasks
- ``freetext``: descriptors kept on a 200-patient corpus; word counting's share of pass 1
- ``scale_s3``: bucket to bucket through moto: files/s, requests per file, client peak RSS
- ``client_memory``: the client's peak RSS at 20,000 and 100,000 local files, per file and projected
- ``fuzz_header``: the header fuzz test from 8 seeds of 1,000 examples (the suite's draws are fixed)
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import common

MODULES = (
    "header",
    "pixels",
    "pixels_real",
    "old_jpeg",
    "scaling",
    "wholerun",
    "scale",
    "scale_s3",
    "client_memory",
    "freetext",
    "fuzz_header",
)
HERE = Path(__file__).parent


def _number(value: Any, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def _verdict(row: dict[str, Any]) -> tuple[str, str, str]:
    """(ratio or value, target, met) columns."""
    if "value" in row:
        value, limit = row["value"], row.get("limit")
        shown = _number(value)
        if limit is None:
            return shown, "", ""
        parts = value.split("/") if isinstance(value, str) else [value]  # "a / b": each within the limit
        ok = all(float(part) <= limit for part in parts)
        return shown, f"<= {limit:,.0f}", "yes" if ok else "NO"
    ratio, target = row.get("ratio"), row.get("target")
    shown = f"{ratio:.2f}x" if ratio is not None else ""
    if target is None or ratio is None:
        return shown, "", ""
    return shown, f">= {target:.2f}x", "yes" if ratio >= target else "NO"


def print_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> None:
    print()
    print(f"cxr-dask benchmarks on {machine['cpu']} ({machine['cores']} cores), python {machine['python']}, ", end="")
    print(f"pydicom {machine['pydicom']}; load average at start {machine['load_average']}")
    print("ratio: 1 core = cxr-dask's (header-only) throughput over that row's, or for the pixel-scan row its")
    print("       throughput over the bare loop's; cluster = speed-up of 2 workers,")
    print("       or the cxr-dask run's throughput over the 2-process bare loop; whole = the whole")
    print("       command's throughput over the bare loop's (both whole processes), 2 workers over 1,")
    print("       pass 2 in a worker's throughput over in process")
    header = (
        f"{'section':8} {'corpus':28} {'what':32} {'files/s':>9} {'MB/s':>8} "
        f"{'ratio/value':>12} {'target':>10} {'met':>4}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        if "note" in row:
            print(f"{row['section']:8} {row['corpus']:28} {row['what']:32} {row['note']}")
            continue
        shown, target, met = _verdict(row)
        print(
            f"{row['section']:8} {row['corpus'][:28]:28} {row['what'][:32]:32} {_number(row.get('files_s')):>9} "
            f"{_number(row.get('mb_s')):>8} {shown:>12} {target:>10} {met:>4}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(MODULES)}")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions per measurement (median)")
    parser.add_argument("--workdir", help="keep corpora here (default: a temporary folder)")
    args = parser.parse_args()
    wanted = args.only.split(",") if args.only else list(MODULES)
    machine = common.machine()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for name in wanted:
            if not (HERE / f"{name}.py").exists():
                print(f"[bench] {name}: no bench/{name}.py on this branch, skipped", file=sys.stderr)
                continue
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                module = importlib.import_module(name)
                result = module.run(root, args.repeats)
                result = {"machine": machine, "seconds": time.perf_counter() - started, **result}
                common.save(name, result)
                rows += module.rows(result)
            except Exception as error:
                traceback.print_exc()
                rows.append({"section": name, "corpus": "-", "what": "-", "note": f"failed: {error!r}"[:200]})
            print(f"[bench] {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print_table(rows, machine)


if __name__ == "__main__":
    main()
