"""The dcmdjpeg fallback's cost per image: 12-bit JPEG CR at 2000x2500 (issue 13's target).

Synthetic radiographs at 2000x2500, 12 bits stored, encoded by dcmtk's ``dcmcjpeg`` in JPEG
Extended (…4.51) and the retired spectral selection (…4.53) and progressive (…4.55)
processes. For each: ``pixels.decode`` as pass 2 calls it (the plugins first; the fallback
only when they refuse the file) and ``decoders.decode_with_dcmtk`` alone (the fallback's
whole cost: a minimal file written to a private temp folder, the process, the native file
read back). Medians of interleaved repetitions on one core; results go to
``bench/results/old_jpeg.json``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path
from typing import Any

import common
import pydicom

from cxr_dask.deid import decoders, pixels
from cxr_dask.testing.synth import DCMCJPEG_OPTION, retired_jpeg

ROWS, COLUMNS = 2500, 2000


def _median_ms(work: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def run(root: Path, repeats: int) -> dict[str, Any]:
    del root  # everything stays in memory
    result: dict[str, Any] = {"machine": common.machine(), "rows": ROWS, "columns": COLUMNS, "syntaxes": {}}
    for seed, syntax in enumerate(DCMCJPEG_OPTION):
        data = retired_jpeg(syntax, seed=seed, rows=ROWS, columns=COLUMNS)

        def decode(data: bytes = data) -> None:
            pixels.decode(pydicom.dcmread(io.BytesIO(data)))

        def fallback(data: bytes = data) -> None:
            decoders.decode_with_dcmtk(pydicom.dcmread(io.BytesIO(data)))

        try:
            _ = pydicom.dcmread(io.BytesIO(data)).pixel_array
            plugin = "registry plugin"
        except Exception:
            plugin = "dcmdjpeg fallback"
        result["syntaxes"][syntax] = {
            "bytes": len(data),
            "decoded_by": plugin,
            "decode_ms": _median_ms(decode, repeats),
            "dcmdjpeg_ms": _median_ms(fallback, repeats),
        }
    return result


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for syntax, row in result["syntaxes"].items():
        out.append(
            {
                "section": "old JPEG (ms per 2000x2500 12-bit image)",
                "corpus": syntax,
                "what": f"pixels.decode ({row['decoded_by']}) / dcmdjpeg alone",
                "value": f"{row['decode_ms']:.0f} / {row['dcmdjpeg_ms']:.0f}",
            }
        )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    outcome = run(Path("."), args.repeats)
    print(common.save("old_jpeg", outcome))
    for line in rows(outcome):
        print(line)
