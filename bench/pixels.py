"""The burned-in text path per image at 3000x2500: decode, detect, OCR, encode, and the detector's score.

A handful of synthetic radiographs with text painted in (``synthesize(..., burned_in_text=True)``,
several transfer syntaxes) go through the stages of ``cxr_dask.deid.pixels`` one by one, on one
core, each timed with ``time.perf_counter`` over several repetitions (median):

- ``decode``: ``pixels.decode`` on a freshly read dataset;
- ``detect``: the cheap text-region detector on the downscaled copy;
- ``ocr``: Tesseract on the candidate lines (images where the detector found nothing, or only
  regions too small to hold more than two characters, skip it);
- ``encode``: ``pixels.store`` + writing the file, for images whose pixels changed;
- ``pass2_with_pixels`` / ``pass2_without_pixels``: ``process.deidentify_bytes`` with pixel
  cleaning on and off, the whole per-file cost either way.

The no-text fast path (issue 7's target: with pixel scanning on, a 15 MB CXR with no text
costs at most as much extra as the bare loop's read + write of it) is measured per transfer
syntax on a second corpus of 3000x2500 images without burned-in text: the bare
``pydicom.dcmread`` + ``save_as`` of the same bytes (in memory, the Python floor), pass 2
with pixel scanning off and on, the extra that scanning adds, and its ratio to the bare loop
(target <= 1.0, i.e. the whole run >= 0.5x the bare loop).

Also reported: the share of images the detector skipped (no OCR, pixel bytes untouched), and
the detector's box-level recall and precision against the planted text boxes (a planted box is
found when a detected region overlaps it; a detected region is correct when it overlaps
planted text; wires and rulers are planted decoys, not text). Results go to
``bench/results/pixels.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from cxr_dask import identity, inventory, process
from cxr_dask.deid import pixels
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.deid.rules import PixelOptions
from cxr_dask.storage import Location, list_files
from cxr_dask.testing.synth import synthesize
from cxr_dask.testing.synth_text import STRUCTURE

RESULTS = Path(__file__).parent / "results"
SYNTAXES = (ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, JPEGLSLossless)
NO_TEXT_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
)


def median_seconds(work: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def score(planted: list[tuple[int, int, int, int]], found: list[tuple[int, int, int, int]]) -> tuple[int, int]:
    """(planted boxes hit by a detection, detections that hit planted text)."""
    hit = sum(any(_overlaps(p, f) for f in found) for p in planted)
    correct = sum(any(_overlaps(f, p) for p in planted) for f in found)
    return hit, correct


def measure_image(data: bytes, syntax: str, ident: identity.IdentityMap, repeats: int) -> dict[str, Any]:
    """One image through each stage; stage seconds are medians over ``repeats``."""
    options = PixelOptions()
    decode = median_seconds(lambda: pixels.decode(pydicom.dcmread(io.BytesIO(data))), repeats)
    ds = pydicom.dcmread(io.BytesIO(data))
    arr = pixels.decode(ds)
    detect = median_seconds(lambda: pixels.detect(arr), repeats)
    regions = pixels.detect(arr)
    to_read = [r for r in regions if not pixels.is_small(r)]  # as pixels.clean does
    row: dict[str, Any] = {"syntax": pydicom.uid.UID(syntax).name, "regions": len(regions), "decode": decode}
    row["detect"] = detect
    row["ocr"] = median_seconds(lambda: pixels.read_regions(arr, to_read, options), repeats) if to_read else 0.0
    row["ocr_regions"] = len(to_read)
    result = pixels.clean(ds, options)
    row["action"] = result.report.action
    if result.array is not None:

        def encode() -> None:
            copy = pydicom.dcmread(io.BytesIO(data))
            pixels.store(copy, result.array, syntax)
            copy.save_as(io.BytesIO(), enforce_file_format=True)

        row["encode"] = median_seconds(encode, repeats)
    else:
        row["encode"] = 0.0
    on, off = ProfileOptions(), ProfileOptions(pixels=PixelOptions(enabled=False))
    row["pass2_with_pixels"] = median_seconds(lambda: process.deidentify_bytes(data, ident, on), repeats)
    row["pass2_without_pixels"] = median_seconds(lambda: process.deidentify_bytes(data, ident, off), repeats)
    row["found_boxes"] = [(r.x0, r.y0, r.x1, r.y1) for r in regions]
    return row


def _identity(root: Path) -> identity.IdentityMap:
    source = Location(str(root))
    files = list_files(source)
    records = inventory.scan_partition(((i, k, s) for i, (k, s) in enumerate(files)), source)
    table = inventory.mark_duplicates(inventory.to_table(records))
    return identity.extend(identity.IdentityMap(uid_key=b"bench-secret-0123456789"), table)


def measure_no_text(tmp: Path, seed: int, repeats: int) -> list[dict[str, Any]]:
    """Per transfer syntax: one 3000x2500 image without text, bare loop vs pass 2 off/on."""
    root = tmp / "no-text"
    corpus = synthesize(str(root), patients=3, seed=seed, rows=3000, columns=2500, transfer_syntaxes=NO_TEXT_SYNTAXES)
    ident = _identity(root)
    rows = []
    for syntax in NO_TEXT_SYNTAXES:
        image = next((i for i in corpus.images if i.transfer_syntax == syntax), None)
        if image is not None:
            rows.append(no_text_row((root / image.relpath).read_bytes(), syntax, ident, repeats))
    return rows


def no_text_row(data: bytes, syntax: str, ident: identity.IdentityMap, repeats: int) -> dict[str, Any]:
    """The bare read + write of one file beside pass 2 with pixel scanning off and on."""
    on, off = ProfileOptions(), ProfileOptions(pixels=PixelOptions(enabled=False))

    def bare() -> None:
        pydicom.dcmread(io.BytesIO(data)).save_as(io.BytesIO(), enforce_file_format=True)

    result = process.deidentify_bytes(data, ident, on)
    row: dict[str, Any] = {
        "syntax": pydicom.uid.UID(syntax).name,
        "uid": str(syntax),
        "megabytes": len(data) / 1e6,
        "action": result.pixels.action,
        "regions": result.pixels.regions_found,
        "bare_loop": median_seconds(bare, repeats),
        "pass2_without_pixels": median_seconds(lambda: process.deidentify_bytes(data, ident, off), repeats),
        "pass2_with_pixels": median_seconds(lambda: process.deidentify_bytes(data, ident, on), repeats),
    }
    row["scan_extra"] = row["pass2_with_pixels"] - row["pass2_without_pixels"]
    row["extra_vs_bare"] = row["scan_extra"] / row["bare_loop"]
    row["run_vs_bare"] = row["bare_loop"] / row["pass2_with_pixels"]
    return row


def run(root: Path, repeats: int, patients: int = 3, seed: int = 21) -> dict[str, Any]:
    """Measure the pixel path; the result is what pixels.json holds (``bench/run.py`` calls this)."""
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}",
        "repeats": repeats,
    }
    with tempfile.TemporaryDirectory(prefix="cxr-bench-pixels-", dir=root) as tmp:
        raw = Path(tmp) / "raw"
        corpus = synthesize(
            str(raw),
            patients=patients,
            seed=seed,
            rows=3000,
            columns=2500,
            transfer_syntaxes=SYNTAXES,
            burned_in_text=True,
        )
        ident = _identity(raw)
        rows = []
        planted_total = planted_hit = found_total = found_correct = 0
        for image in corpus.images:
            row = measure_image((raw / image.relpath).read_bytes(), image.transfer_syntax, ident, repeats)
            text_boxes = [p.box for p in image.burned_in if p.kind != STRUCTURE]
            found = row.pop("found_boxes")
            hit, correct = score(text_boxes, found)
            planted_total, planted_hit = planted_total + len(text_boxes), planted_hit + hit
            found_total, found_correct = found_total + len(found), found_correct + correct
            row.update(
                planted_text=len(text_boxes),
                planted_found=hit,
                has_decoy=any(p.kind == STRUCTURE for p in image.burned_in),
            )
            rows.append(row)
        no_text = measure_no_text(Path(tmp), seed, repeats)
    ocr_rows = [r for r in rows if r["ocr_regions"]]
    encode_rows = [r for r in rows if r["action"] == "cleaned"]
    results.update(
        images=len(rows),
        size="3000x2500",
        median_seconds={
            "decode": statistics.median(r["decode"] for r in rows),
            "detect": statistics.median(r["detect"] for r in rows),
            "ocr_when_read": statistics.median(r["ocr"] for r in ocr_rows) if ocr_rows else 0.0,
            "encode_when_cleaned": statistics.median(r["encode"] for r in encode_rows) if encode_rows else 0.0,
            "pass2_with_pixels": statistics.median(r["pass2_with_pixels"] for r in rows),
            "pass2_without_pixels": statistics.median(r["pass2_without_pixels"] for r in rows),
        },
        skipped_by_detector=sum(not r["regions"] for r in rows) / len(rows),
        ocr_skipped=sum(not r["ocr_regions"] for r in rows) / len(rows),
        cleaned=sum(r["action"] == "cleaned" for r in rows) / len(rows),
        detector_recall=planted_hit / planted_total if planted_total else None,
        detector_precision=found_correct / found_total if found_total else None,
        planted_text_boxes=planted_total,
        planted_text_found=planted_hit,
        detected_regions=found_total,
        detected_regions_correct=found_correct,
        per_image=rows,
        no_text=no_text,
    )
    return results


#: Issue 7: with scanning on, a 15 MB CXR without text runs at >= 0.5x the bare loop.
#: Applies where the bare loop decodes nothing either: uncompressed and deflated files.
NO_TEXT_TARGET = {str(ExplicitVRLittleEndian): 0.5, str(ImplicitVRLittleEndian): 0.5,
                  str(DeflatedExplicitVRLittleEndian): 0.5}  # fmt: skip


_SHORT_NAMES = {
    "Explicit VR Little Endian": "explicit VR LE",
    "Implicit VR Little Endian": "implicit VR LE",
    "Deflated Explicit VR Little Endian": "deflated",
    "RLE Lossless": "RLE",
    "JPEG-LS Lossless Image Compression": "JPEG-LS lossless",
    "JPEG 2000 Image Compression (Lossless Only)": "JPEG 2000 lossless",
}


def _short(syntax_name: str) -> str:
    return _SHORT_NAMES.get(syntax_name, syntax_name[:16])


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows for bench/run.py: stage costs, detector score, the no-text path per syntax."""
    corpus = f"3000x2500 text ({result['images']} images)"
    m = result["median_seconds"]
    out: list[dict[str, Any]] = [
        {"section": "pixels", "corpus": corpus, "what": f"ms/image {label}", "value": 1000 * m[key]}
        for label, key in (
            ("decode", "decode"),
            ("detect", "detect"),
            ("OCR (lines read)", "ocr_when_read"),
            ("encode (cleaned)", "encode_when_cleaned"),
            ("pass 2, pixels on", "pass2_with_pixels"),
            ("pass 2, pixels off", "pass2_without_pixels"),
        )
    ]
    shares = (
        ("share skipped by the detector", f"{result['skipped_by_detector']:.0%}"),
        ("share with no OCR at all", f"{result['ocr_skipped']:.0%}"),
        ("detector recall / precision", f"{result['detector_recall']:.2f} / {result['detector_precision']:.2f}"),
    )
    out += [{"section": "pixels", "corpus": corpus, "what": what, "value": value} for what, value in shares]
    for r in result["no_text"]:
        out.append(
            {
                "section": "pixels",
                "corpus": f"3000x2500 no text, {r['megabytes']:.0f} MB",
                "what": f"scan on / bare: {_short(r['syntax'])}",
                "files_s": 1 / r["pass2_with_pixels"],
                "mb_s": r["megabytes"] / r["pass2_with_pixels"],
                "ratio": r["run_vs_bare"],
                "target": NO_TEXT_TARGET.get(r.get("uid", "")),
            }
        )
    return out


def print_report(results: dict[str, Any]) -> None:
    stages = ("decode", "detect", "ocr", "encode", "pass2_with_pixels", "pass2_without_pixels")
    rows = results["per_image"]
    print(f"burned-in text, 3000x2500, one core, median of {results['repeats']}; {results['machine']}")
    print(f"{'syntax':48} {'regions':>7} " + " ".join(f"{s[:12]:>12}" for s in stages) + "  action")
    for r in rows:
        print(
            f"{r['syntax'][:48]:48} {r['regions']:>7} "
            + " ".join(f"{r[s]:>12.3f}" for s in stages)
            + f"  {r['action']}"
        )
    m = results["median_seconds"]
    print(
        f"median s/image: decode {m['decode']:.3f}, detect {m['detect']:.3f}, "
        f"OCR {m['ocr_when_read']:.3f} (images with lines to read), "
        f"encode {m['encode_when_cleaned']:.3f} (cleaned images); "
        f"pass 2 {m['pass2_with_pixels']:.3f} with pixels vs {m['pass2_without_pixels']:.3f} without"
    )
    print(
        f"skipped by the detector {results['skipped_by_detector']:.0%} (no OCR at all: {results['ocr_skipped']:.0%}), "
        f"cleaned {results['cleaned']:.0%}; "
        f"detector recall {results['detector_recall']:.2f}, precision {results['detector_precision']:.2f} "
        f"({results['planted_text_found']}/{results['planted_text_boxes']} planted boxes, "
        f"{results['detected_regions_correct']}/{results['detected_regions']} regions)"
    )
    print("no-text fast path, 3000x2500, per transfer syntax (s/image; extra = pass 2 with scanning - without):")
    print(
        f"{'syntax':44} {'MB':>5} {'bare loop':>9} {'without':>8} {'with':>8} {'extra':>8} "
        f"{'extra/bare':>10} {'run/bare':>8}  action"
    )
    for r in results["no_text"]:
        print(
            f"{r['syntax'][:44]:44} {r['megabytes']:>5.1f} {r['bare_loop']:>9.4f} {r['pass2_without_pixels']:>8.4f} "
            f"{r['pass2_with_pixels']:>8.4f} {r['scan_extra']:>8.4f} {r['extra_vs_bare']:>10.2f} "
            f"{r['run_vs_bare']:>8.2f}  {r['action']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=3, help="patients in the 3000x2500 corpus")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
        results = run(Path(tmp), args.repeats, args.patients, args.seed)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pixels.json").write_text(json.dumps(results, indent=2) + "\n")
    print_report(results)


if __name__ == "__main__":
    main()
