"""The pixel path on real public images: false-positive area, text left, markers, cost.

Sources, each used when present: pydicom's own test files (``pydicom.data``), the
``deid-data`` package, and a cache of files from public repositories outside git
(``/work/cache/real-dicom``, rebuilt by ``bench/fetch_real.py``). Single-frame greyscale
images only (the others are quarantined by design).

Reference boxes (``pixels_real_labels.json``, labelled by looking at every image; no
image committed) say where text is, and which of it is a side marker; an image with empty
lists was looked at and holds no text. Images without labels (the cache's films with text,
toolkit files with annotations) are cleaned once and only counted as changed or not: look
at them with ``--render``. Per labelled image:

- ``fp_area``: share of the image blanked outside every labelled text box (dilated by
  a few pixels): anatomy lost. Target: 0 (none over 0.05%) on text-free images.
- ``left``: non-marker tokens of 3+ letters or digits an independent reader (Tesseract,
  whole labelled box, both polarities, 2x) still reads after cleaning that it read before.
- ``markers_kept``: labelled markers whose pixels are unchanged.
- ``text_untouched``: labelled text boxes (not markers) of which no pixel changed. The
  independent reader does not read every label (faint or small text), so a change that
  stops blanking a label can leave ``left`` at 0: compare this count between two runs
  and look at the rows where it rose (``--render``).
- ``ms``: ``pixels.clean`` on one core (the machine may be loaded: medians only); the
  totals divide the median by ``reference_ms``, the text detector's run on a fixed input
  timed before and after the images: machines of one kind differ by 2-3x in speed, and
  costs from two runs compare in those units, not in milliseconds.

    python bench/pixels_real.py [--cache DIR] [--render DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pydicom
from PIL import Image

from cxr_dask.deid import pixels
from cxr_dask.deid.pixels import ocr, textdet, textrec
from cxr_dask.deid.rules import PixelOptions
from cxr_dask.errors import QuarantineError

LABELS = Path(__file__).parent / "pixels_real_labels.json"
DEFAULT_CACHE = Path("/work/cache/real-dicom")
#: A blanked pixel this close to a labelled text box counts as on the text.
SLACK = 4
PYDICOM_FILES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "MR2_J2KR.dcm",
    "emri_small.dcm",
    "rtdose.dcm",
    "liver_1frame.dcm",
    "OBXXXX1A.dcm",
    "SC_rgb.dcm",
    "US1_J2KR.dcm",
    "RG3_J2KR.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
)


def sources(cache: Path) -> dict[str, Path]:
    """Every real file available here, keyed ``source/name``."""
    found: dict[str, Path] = {}
    from pydicom.data import get_testdata_file

    for name in PYDICOM_FILES:
        try:
            path = get_testdata_file(name)
        except Exception:
            path = None
        if path:
            found[f"pydicom/{name}"] = Path(path)
    try:
        import deid_data

        for path in sorted((Path(deid_data.__file__).parent / "data").rglob("*.dcm")):
            found[f"deid-data/{path.parent.name}/{path.name}"] = path
    except ImportError:
        print("deid-data not installed: its images are skipped", file=sys.stderr)
    if cache.exists():
        for path in sorted(p for p in cache.rglob("*") if p.is_file()):
            found[f"cache/{path.relative_to(cache)}"] = path
    else:
        print(f"no cache at {cache}: run bench/fetch_real.py (real files from public repositories)", file=sys.stderr)
    return found


def decoded(path: Path) -> tuple[pydicom.Dataset, np.ndarray] | str:
    """A file's data set and stored pixel values, or why the pixel step does not read it."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as error:  # a toolkit's deliberately broken file: the pipeline quarantines it
        return f"unreadable ({type(error).__name__})"
    try:
        pixels.check_supported(ds)
        return ds, pixels.decode(ds)
    except QuarantineError as error:
        return error.reason


def display_gray(ds: pydicom.Dataset, arr: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    """8-bit grey as a viewer shows it (0.5-99.5 percentile window of ``like``, default
    ``arr``: a cleaned image is shown in its original's window), MONOCHROME1 inverted."""
    values = arr.astype(np.float64)
    low, high = np.percentile(values if like is None else like, (0.5, 99.5))
    gray = ((values - low) / max(high - low, 1.0)).clip(0, 1) * 255
    return 255 - gray if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1" else gray


def read_tokens(gray: np.ndarray, box: list[int]) -> set[str]:
    """An independent reader on one box: both polarities, 2x, Tesseract block mode."""
    x0, y0, x1, y1 = box
    crop = gray[max(0, y0 - 6) : y1 + 6, max(0, x0 - 6) : x1 + 6]
    if crop.size == 0:
        return set()
    found: set[str] = set()
    for image in (crop, 255 - crop):
        big = Image.fromarray(image.astype(np.uint8)).resize((crop.shape[1] * 2, crop.shape[0] * 2), Image.BICUBIC)
        buffer = io.BytesIO()
        big.save(buffer, format="PNG")
        command = ["tesseract", "stdin", "stdout", "--psm", "6"]
        run = subprocess.run(command, input=buffer.getvalue(), capture_output=True)
        text = run.stdout.decode("utf-8", "replace").upper()
        found |= {t for t in re.split(r"[^A-Z0-9]+", text) if len(t) >= 3}
    return found


#: Issue 11's cost target for an image with text: one core, the whole pixel step.
COST_TARGET_S = 0.5


def one_core_seconds() -> float:
    """CPU seconds of this process and of its children, live (Tesseract's loaded engines)
    or finished: the pixel step's cost on one core (the models run in-process, one thread).
    Unlike wall time it does not grow when other jobs share the machine."""
    finished = os.times()
    live = sum(sum(child.cpu_times()[:2]) for child in psutil.Process().children(recursive=True))
    return time.process_time() + finished.children_user + finished.children_system + live


def reference_ms(runs: int = 5) -> float:
    """This machine's speed on one core: the text detector on one fixed 512x512 input, the
    best of ``runs`` (ms of CPU). The pixel step's cost is mostly the models', and machines
    of one kind differ: the same code on the same files cost 2.2-2.9x more on one than on
    another (``docs/pixels.md``, eighteenth session). Costs from two runs compare divided
    by their references, not as milliseconds."""
    page = np.random.default_rng(0).integers(0, 256, (512, 512), dtype=np.uint8)
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        textdet.probability_maps([page])
        best = min(best, time.process_time() - start)
    return round(1000 * best, 1)


def warm_up(options: PixelOptions) -> None:
    """Load the readers once before anything is timed (Tesseract's engine, the two models)."""
    page = np.full((48, 160), 255, dtype=np.uint8)
    page[16:32, 20:140] = 0
    ocr.tesseract_tsv(page)
    list(textdet.probabilities([page]))
    textrec.read(page, [(0, 0, 160, 48)], options.is_allowed)


def measure(key: str, path: Path, labels: dict[str, Any], repeats: int = 3) -> dict[str, Any]:
    loaded = decoded(path)
    if isinstance(loaded, str):
        return {"image": key, "skipped": loaded}
    ds, arr = loaded
    label = labels.get(key, {})
    text_boxes, markers = label.get("text", []), label.get("markers", [])
    seconds, core = [], []
    for _ in range(repeats):
        start, start_core = time.perf_counter(), one_core_seconds()
        result = pixels.clean(pydicom.dcmread(path), PixelOptions())
        seconds.append(time.perf_counter() - start)
        core.append(one_core_seconds() - start_core)
    after = arr if result.array is None else result.array
    changed = np.asarray(after != arr)
    on_text = np.zeros_like(changed)
    for x0, y0, x1, y1 in text_boxes + markers:
        on_text[max(0, y0 - SLACK) : y1 + SLACK, max(0, x0 - SLACK) : x1 + SLACK] = True
    fp = float((changed & ~on_text).sum()) / changed.size
    before_gray, after_gray = display_gray(ds, arr), display_gray(ds, after)
    left = 0
    for box in text_boxes:
        if result.array is None:
            left += len(read_tokens(before_gray, box))
        else:
            left += len(read_tokens(before_gray, box) & read_tokens(after_gray, box))
    kept = sum(1 for x0, y0, x1, y1 in markers if not changed[y0:y1, x0:x1].any())
    untouched = sum(1 for x0, y0, x1, y1 in text_boxes if not changed[y0:y1, x0:x1].any())
    return {
        "image": key,
        "size": f"{arr.shape[1]}x{arr.shape[0]}",
        "labelled": key in labels,
        "has_text": bool(text_boxes),
        "changed": result.array is not None,
        "fp_area_pct": round(100 * fp, 3),
        "left": left,
        "markers": len(markers),
        "markers_kept": kept,
        "text_boxes": len(text_boxes),
        "text_untouched": untouched,
        "flagged": result.report.count("flagged"),
        "text_regions": result.report.count("text"),
        "ms": round(1000 * statistics.median(seconds), 1),
        "core_ms": round(1000 * statistics.median(core), 1),
    }


def render(found: dict[str, Path], folder: Path) -> None:
    """PNG previews (full size) of every usable image, to label boxes by looking."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, path in found.items():
        loaded = decoded(path)
        if isinstance(loaded, str):
            continue
        ds, arr = loaded
        Image.fromarray(display_gray(ds, arr).astype(np.uint8)).save(folder / (key.replace("/", "__") + ".png"))


def synthetic_films(seeds: int = 3) -> list[dict[str, Any]]:
    """Text-free synthetic chest films with lines, tubes, wires, ECG leads, a pacemaker,
    rib edges and collimation (``synth_text.DECOYS``), one structure each and all at once:
    the share of each blanked (target: nothing)."""
    from pydicom.dataset import FileMetaDataset

    from cxr_dask.testing.synth_text import DECOYS, film

    out = []
    for seed in range(seeds):
        cases = {name: paint(film(seed)) for name, paint in DECOYS.items()}
        combined = film(seed + 100)
        for paint in DECOYS.values():
            combined = paint(combined)
        cases["all"] = combined
        for name, arr in cases.items():
            ds = pydicom.Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
            ds.Rows, ds.Columns = arr.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PixelData = arr.astype("<u2").tobytes()
            start = time.perf_counter()
            result = pixels.clean(ds, PixelOptions())
            seconds = time.perf_counter() - start
            changed = 0.0 if result.array is None else float((result.array != arr).mean())
            out.append(
                {
                    "image": f"synthetic/{name}/{seed}",
                    "fp_area_pct": round(100 * changed, 3),
                    "flagged": result.report.count("flagged"),
                    "ms": round(1000 * seconds, 1),
                }
            )
    return out


def run(
    root: Path | None = None,
    repeats: int = 3,
    cache: Path = DEFAULT_CACHE,
    only: tuple[str, ...] = (),
    synthetic: bool = True,
) -> dict[str, Any]:
    """bench/run.py's entry point (``root``, its scratch folder, is not needed: files are read in place).

    ``only``: keys starting with one of these (a subset while iterating)."""
    labels = json.loads(LABELS.read_text())["images"] if LABELS.exists() else {}
    warm_up(PixelOptions())
    reference_before = reference_ms()
    rows = []
    for key, path in sources(cache).items():
        if only and not key.startswith(only):
            continue
        # an unlabelled image is timed once: it only says whether anything changed
        rows.append(measure(key, path, labels, repeats if key in labels else 1))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress: real files can take seconds each
    reference = round(statistics.mean([reference_before, reference_ms()]), 1)  # the machine may drift during the run
    rows = [r for r in rows if "skipped" not in r]
    free = [r for r in rows if r["labelled"] and not r["has_text"]]
    labelled = [r for r in rows if r["labelled"]]
    total = {
        "images": len(labelled),
        "text_free": len(free),
        "unlabelled": sum(not r["labelled"] for r in rows),
        "unlabelled_changed": sum(r["changed"] for r in rows if not r["labelled"]),
        "text_free_changed": sum(r["fp_area_pct"] > 0.05 for r in free),
        "fp_area_pct_max": max((r["fp_area_pct"] for r in labelled), default=0.0),
        "tokens_left": sum(r["left"] for r in labelled),
        "markers": sum(r["markers"] for r in labelled),
        "markers_kept": sum(r["markers_kept"] for r in labelled),
        "text_boxes": sum(r["text_boxes"] for r in labelled),
        "text_untouched": sum(r["text_untouched"] for r in labelled),
        "ms_median": statistics.median([r["ms"] for r in labelled]) if labelled else 0.0,
        "ms_text_median": statistics.median([r["ms"] for r in labelled if r["has_text"]] or [0.0]),
        "core_ms_text_median": statistics.median([r["core_ms"] for r in labelled if r["has_text"]] or [0.0]),
        "text_over_target": sum(r["core_ms"] > 1000 * COST_TARGET_S for r in labelled if r["has_text"]),
        "reference_ms": reference,
    }
    total["core_text_median_in_references"] = round(total["core_ms_text_median"] / reference, 2)
    films = synthetic_films() if synthetic else []
    total["synthetic_films"] = len(films)
    total["synthetic_changed"] = sum(r["fp_area_pct"] > 0.05 for r in films)
    return {"rows": rows, "synthetic": films, "total": total}


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Lines for bench/run.py's table."""
    total = result["total"]
    head = {"section": "pixels on real images", "corpus": f"{total['images']} labelled real files"}
    return [
        {
            **head,
            "corpus": f"{total['text_free']} text-free real files",
            "what": "text-free images changed",
            "value": total["text_free_changed"],
            "limit": 0,
        },
        {
            **head,
            "corpus": f"{total['synthetic_films']} synthetic films",
            "what": "text-free films changed",
            "value": total["synthetic_changed"],
            "limit": 0,
        },
        {**head, "what": "readable tokens left", "value": total["tokens_left"], "limit": 0},
        {**head, "what": "markers kept", "value": f"{total['markers_kept']} of {total['markers']}"},
        {
            **head,
            "what": "labelled text boxes untouched (compare runs)",
            "value": f"{total['text_untouched']} of {total['text_boxes']}",
        },
        {
            **head,
            "what": "ms per image with text, one core (median)",
            "value": total["core_ms_text_median"],
            "limit": 500,
        },
        {**head, "what": "images with text over 0.5 s of one core", "value": total["text_over_target"], "limit": 0},
        {
            **head,
            "what": "the median above in runs of the machine's reference (detector, 512x512)",
            "value": f"{total['core_text_median_in_references']} ({total['reference_ms']} ms a run)",
        },
        {
            **head,
            "corpus": f"{total['unlabelled']} unlabelled real files",
            "what": "images changed (look at them: --render)",
            "value": total["unlabelled_changed"],
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--render", type=Path, help="write PNG previews here (for labelling) and stop")
    parser.add_argument("--json", type=Path, help="write the per-image rows and totals here")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per image (median)")
    parser.add_argument("--only", action="append", default=[], help="keys starting with this (repeatable)")
    parser.add_argument("--no-synthetic", action="store_true", help="skip the synthetic device films")
    args = parser.parse_args()
    only = tuple(args.only)
    if args.render:
        found = sources(args.cache)
        render({k: v for k, v in found.items() if not only or k.startswith(only)}, args.render)
        return
    result = run(None, args.repeats, args.cache, only, not args.no_synthetic)
    columns = ["image", "size", "changed", "fp_area_pct", "left", "markers", "markers_kept", "text_untouched"]
    columns += ["flagged", "text_regions", "ms"]
    print("\t".join(columns))
    for row in result["rows"]:
        print("\t".join(str(row[c]) for c in columns))
    for row in result["synthetic"]:
        print(f"{row['image']}\t\t\t{row['fp_area_pct']}\t\t\t\t\t{row['flagged']}\t\t{row['ms']}")
    print(json.dumps(result["total"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
