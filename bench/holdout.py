"""Held-out images nobody tuned on: cleaned, then read before and after by RapidOCR.

The sets are folders of DICOM files outside git. ``talo`` (149 films of
``muhammedtalo/COVID-19``, wrapped into DICOM), ``cxnet`` (119 COVID-19 films of
``armiro/COVID-CXNet``, from papers and hospitals: arrows, captions, markers, wrapped) and
``orthanc`` (the DICOM files of ``orthanc-tests``, 12 slices of a series at most) are drawn with a fixed seed by
``bench/fetch_real.py --holdout`` into ``/work/cache/holdout/``; ``--dir`` adds any other
folder (``/work/cache/real-dicom/mhh``: Hannover bedside films with lines, wires, bones).

Each single-frame greyscale image the pixel step reads is cleaned with the default
options, as ``bench/pixels_real.py`` does, and read whole by RapidOCR (the ``rapidocr``
package's own detector and recogniser pipeline, an independent reader: the pixel step
takes only two model files from it) before, and after when it changed, in the original's
display window. A word is 3+ letters or digits read at ``MIN_SCORE`` or more that is not
on the allow-list (``PixelOptions().is_allowed``). Per set: images, images with words,
images changed, text-free images changed (no word before: anatomy lost, or text RapidOCR
cannot read: look), words before and words left after, and the cost of the pixel step on
one core (``cpu_s``: this process's CPU and Tesseract's) with the images over 0.5 s, and
the median also in runs of the machine's reference (``pixels_real.reference_ms``, timed
before and after each set). Nothing read is printed unless
``--show`` asks (file names and the words left: PHI on real data).

    python bench/holdout.py [--sets talo cxnet orthanc] [--dir DIR ...] [--json OUT] [--show]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pixels_real import COST_TARGET_S, decoded, display_gray, one_core_seconds, reference_ms, warm_up

from cxr_dask.deid import pixels
from cxr_dask.deid.pixels.checks import frames, is_colour
from cxr_dask.deid.rules import PixelOptions

DEFAULT_ROOT = Path("/work/cache/holdout")
DEFAULT_SETS = ("talo", "cxnet", "orthanc")
#: RapidOCR's line score a word needs to count.
MIN_SCORE = 0.7
#: Letters or digits a word needs to count (a lone marker letter identifies nobody).
MIN_LENGTH = 3


def reader() -> Any:
    """RapidOCR's full pipeline (its detector, its recogniser), quiet, on one thread."""
    from rapidocr import RapidOCR

    return RapidOCR(
        params={
            "Global.log_level": "error",
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )


def words(engine: Any, gray: np.ndarray, options: PixelOptions) -> list[str]:
    """The non-marker words RapidOCR reads in an 8-bit image (upper case)."""
    out = engine(np.ascontiguousarray(gray.astype(np.uint8)))
    found = []
    for text, score in zip(out.txts or (), out.scores or (), strict=True):
        if score < MIN_SCORE:
            continue
        for token in re.findall(r"[A-Z0-9]+", str(text).upper()):
            if len(token) >= MIN_LENGTH and not options.is_allowed(token):
                found.append(token)
    return found


def measure(engine: Any, key: str, path: Path, options: PixelOptions) -> dict[str, Any] | None:
    """One image's row, or None when the pixel step does not read it as one greyscale frame."""
    loaded = decoded(path)
    if isinstance(loaded, str):
        return None
    ds, arr = loaded
    if is_colour(ds) or frames(ds) > 1:
        return None
    start = one_core_seconds()
    result = pixels.clean(pydicom.dcmread(path), options)
    cpu = one_core_seconds() - start
    before = display_gray(ds, arr)
    found = words(engine, before, options)
    left = found if result.array is None else words(engine, display_gray(ds, result.array, like=arr), options)
    changed = 0.0 if result.array is None else float(np.count_nonzero(result.array != arr)) / arr.size
    return {
        "image": key,
        "size": f"{arr.shape[1]}x{arr.shape[0]}",
        "words": len(found),
        "left": len(left),
        "changed": result.array is not None,
        "changed_pct": round(100 * changed, 3),
        "text_regions": result.report.count("text"),
        "flagged": result.report.count("flagged"),
        "cpu_s": round(cpu, 3),
        "regions": dict(Counter(f"{r.kind}: {r.why}" for r in result.report.regions)),  # fixed phrases
        "_left": left,  # dropped before anything is written, printed only with --show
    }


def totals(rows: list[dict[str, Any]], reference: float) -> dict[str, float]:
    """A set's counts, and its cost also in runs of the machine's ``reference`` (ms;
    ``pixels_real.reference_ms``): the figure to compare between machines."""
    with_words = sorted(r["cpu_s"] for r in rows if r["words"])
    median = with_words[len(with_words) // 2] if with_words else 0.0
    return {
        "images": len(rows),
        "with_words": sum(r["words"] > 0 for r in rows),
        "changed": sum(r["changed"] for r in rows),
        "text_free_changed": sum(r["changed"] and not r["words"] for r in rows),
        "words": sum(r["words"] for r in rows),
        "words_left": sum(r["left"] for r in rows),
        "images_with_words_left": sum(r["left"] > 0 for r in rows),
        "flagged": sum(r["flagged"] for r in rows),
        "cpu_s_median_with_words": median,
        "reference_ms": reference,
        "median_with_words_in_references": round(1000 * median / reference, 2),
        "with_words_over_half_second": sum(cpu > COST_TARGET_S for cpu in with_words),
        "over_half_second": sum(r["cpu_s"] > COST_TARGET_S for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where --sets are (fetch_real.py --holdout)")
    parser.add_argument("--sets", nargs="*", default=list(DEFAULT_SETS), help="folders under --root")
    parser.add_argument("--dir", type=Path, action="append", default=[], help="another set (repeatable)")
    parser.add_argument("--only", action="append", default=[], help="file names starting with this (repeatable)")
    parser.add_argument("--json", type=Path, help="write the per-image rows and totals here")
    parser.add_argument("--show", action="store_true", help="name images with words left or text-free changed")
    args = parser.parse_args()
    folders = {name: args.root / name for name in args.sets} | {d.name: d for d in args.dir}
    engine = reader()
    options = PixelOptions()
    warm_up(options)
    result: dict[str, Any] = {"sets": {}}
    for name, folder in folders.items():
        if not folder.is_dir():
            print(f"{name}: no folder {folder} (bench/fetch_real.py --holdout rebuilds the sets)", file=sys.stderr)
            continue
        rows = []
        reference_before = reference_ms()
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = str(path.relative_to(folder))
            if args.only and not key.startswith(tuple(args.only)):
                continue
            row = measure(engine, key, path, options)
            if row is None:
                continue
            rows.append(row)
            if args.show and (row["left"] or (row["changed"] and not row["words"])):
                print(f"{name}/{key}: changed {row['changed_pct']}%, left {' '.join(row['_left'])}", flush=True)
        for row in rows:
            del row["_left"]
        reference = round(statistics.mean([reference_before, reference_ms()]), 1)  # the machine may drift
        result["sets"][name] = {"rows": rows, "total": totals(rows, reference)}
        print(name, json.dumps(result["sets"][name]["total"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
