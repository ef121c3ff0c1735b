"""Free text (deid/freetext.py): what survives, and what counting the words costs pass 1.

- The share of StudyDescription and PerformedProcedureStepDescription values holding no
  planted PHI that come out unchanged, after ``pipeline.run`` on a LocalCluster (2
  workers) over ``cxr-dask synth``'s corpus of 200 patients (target: at least 95%).
- Pass 1 on one core, with and without word counting (with: the header's bytes walked
  once for the record and the words by ``deid/wordscan.py``, tokens counted per patient,
  the vocabulary built on the client; without: pydicom reads the record's tags),
  interleaved repetitions, median: the extra share of pass 1's time (target: at most 5%;
  below zero when the walk is cheaper than pydicom's read).

Run alone it prints its numbers: ``python bench/freetext.py [--patients 200]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from cxr_dask import inventory, pipeline
from cxr_dask.adversarial.freetext import kept_share
from cxr_dask.config import RunConfig
from cxr_dask.deid import freetext
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.storage import Location, list_files
from cxr_dask.testing.synth import synthesize

PATIENTS = 200


def _pass_one_seconds(source: Location, items: list[tuple[int, str, int]], repeats: int) -> dict[str, float]:
    """Median seconds of pass 1 over ``items``, plain and with word counting, interleaved."""
    times: dict[str, list[float]] = {"plain": [], "words": []}
    options = ProfileOptions()
    for _ in range(repeats):
        started = time.perf_counter()
        inventory.scan_partition(items, source)
        times["plain"].append(time.perf_counter() - started)
        started = time.perf_counter()
        (part,) = inventory.scan_partition_with_words(items, source, options, freetext.DEFAULT_MIN_PATIENTS)
        merged = freetext.WordCounts()
        merged.merge(part.words)
        freetext.build_vocabulary(merged)
        times["words"].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def run(root: Path, repeats: int = 5, patients: int = PATIENTS) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    folder = root / "freetext"
    corpus = synthesize(str(folder / "raw"), patients=patients, seed=7, rows=128, columns=128)
    source = Location(str(folder / "raw"))
    items = [(i, key, size) for i, (key, size) in enumerate(list_files(source))]
    seconds = _pass_one_seconds(source, items, max(3, repeats))

    config = RunConfig(
        input=str(folder / "raw"),
        output=str(folder / "dataset"),
        private=str(folder / "private"),
        progress=False,
        dashboard_address=None,
    )
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        summary = pipeline.run(client, config)
    share = kept_share(corpus, folder / "dataset", folder / "private")
    return {
        "patients": patients,
        "files": len(items),
        "written": summary.written,
        "pass1_seconds_plain": seconds["plain"],
        "pass1_seconds_words": seconds["words"],
        "pass1_overhead_percent": 100 * (seconds["words"] / seconds["plain"] - 1),
        "kept": {keyword: list(counts) for keyword, counts in share.items()},
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    corpus = f"synth {result['patients']} patients, {result['files']} files"
    out = []
    for keyword, (kept, total) in result["kept"].items():
        out.append(
            {
                "section": "freetext",
                "corpus": corpus,
                "what": f"{keyword} kept ({kept}/{total})",
                "ratio": kept / total if total else 0.0,
                "target": 0.95,
            }
        )
    out.append(
        {
            "section": "freetext",
            "corpus": corpus,
            "what": "pass 1: word counting, extra %",
            "value": result["pass1_overhead_percent"],
            "limit": 5,
        }
    )
    return out


if __name__ == "__main__":
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=PATIENTS)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cxr-bench-freetext-") as tmp:
        print(json.dumps(run(Path(tmp), args.repeats, args.patients), indent=2))
