"""The second stage of burned-in text detection: a detector trained on text (PP-OCR det).

The stroke screen in ``detection.detect`` finds thin high-contrast strokes of glyph size;
on real images most of them are edges, wires and bone. Tesseract reads the ones that are
text. What Tesseract cannot read is shown here, crop by crop, to PaddleOCR's DB text
detector (the ``PP-OCRv6_det_small`` ONNX model shipped inside the ``rapidocr`` wheel,
run by ``onnxruntime`` on one CPU thread; nothing is downloaded at run time). Boxes it
scores as text are evidence; a crop where it sees none stays flagged and untouched.
Crops of one padded size share a model run (the batch axis): a dense page's ~200 crops
take ~45 runs, each crop's boxes as alone. The cost is the pixels the model sees (about
0.35 us a pixel on one core), not the runs.

Only the model file is taken from ``rapidocr`` (found without importing the package, so
its start-up and logging stay out of workers); pre- and post-processing are the DB
defaults (normalise to [-1, 1], sides a multiple of 32, probability > 0.3, box mean
score >= 0.5, boxes grown by area * 1.6 / perimeter) written with numpy and scipy.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from cxr_dask.deid.pixels.morphology import stretched8
from cxr_dask.deid.pixels.types import Box

#: DB post-processing (PaddleOCR's defaults for this model).
PROBABILITY = 0.3
BOX_SCORE = 0.6
UNCLIP_RATIO = 1.6
#: Text height (model input pixels) crops are scaled towards; the model reads 10-60 best.
MODEL_TEXT_HEIGHT = 24
#: ... and never below this one, whatever a crop's size (``BATCH_PIXELS``).
SMALLEST_TEXT_HEIGHT = 12
#: Longest side of a crop given to the model (bounds the cost of one call).
MAX_SIDE = 1280
#: A detector box's core (before unclipping) at least this many times as wide as high
#: is a line of text (a four-letter word's core is about 4; a blob or a column of strokes
#: is not). Judged on the unclipped box, which grows a short word to nearly a square,
#: "P114" under a ruler on a film scan was rejected.
CORE_SHAPE = 2.5
#: A detector box lower than this (image pixels) is no readable text.
MIN_TEXT_HEIGHT = 7
MODEL_FILE = "PP-OCRv6_det_small.onnx"
#: Model input pixels of one run at most (crops of one padded size go through together);
#: a crop bigger than that at its text's scale is shown smaller, to fill one run, its
#: text no lower than ``SMALLEST_TEXT_HEIGHT`` (the look beside anatomy grew a figure's
#: big component into a 1.1M-pixel input, a fifth of a second).
BATCH_PIXELS = 512 * 512

_session = None
_lock = threading.Lock()


@functools.cache
def model_path(name: str = MODEL_FILE) -> Path | None:
    """A model's ONNX file inside the installed ``rapidocr`` wheel (the detector's by
    default), or None. Looked up once per process: every step asks whether the readers
    are there, and the package search and file checks cost ~0.5 ms a time (~3 ms an image)."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "models" / name
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def available() -> bool:
    return model_path() is not None and onnxruntime_installed()


def _get_session():
    """One onnxruntime session per process, one thread (Dask runs one task per core)."""
    global _session
    with _lock:
        if _session is None:
            path = model_path()
            if path is None:
                raise RuntimeError("text detector model not installed")
            _session = new_session(path)
        return _session


def new_session(path: Path):
    """An onnxruntime session on one thread (Dask runs one task per core), quiet, with no
    memory plan kept per input shape: crops come in dozens of shapes and batch sizes, and
    the plans cost more memory than they save time (SC1: 346 -> 299 MiB peak, the same CPU)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_mem_pattern = False
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _display8(crop: np.ndarray) -> np.ndarray:
    """A crop stretched to 8 bits by its own 0.5 and 99.5 percentiles (local window;
    ``morphology.stretched8``: stored integers through a table of their range, the stretch
    two fifths of the detector's time on a big block's crop before)."""
    return stretched8(crop, _stretch)


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` (float32) from ``low`` to ``high`` onto 0-255."""
    if high <= low:
        high = low + 1.0
    return (np.clip((values - low) / (high - low), 0.0, 1.0) * 255.0).astype(np.uint8)


def _padded(rows: int, columns: int) -> tuple[int, int]:
    """The model's input size for an image: sides padded to multiples of 32."""
    return max(32, -(-rows // 32) * 32), max(32, -(-columns // 32) * 32)


def probability_maps(images: list[np.ndarray]) -> list[np.ndarray]:
    """The model's text probability for 8-bit images of one padded size, in one run.

    Each image is padded (grey, 0 after normalising) to ``_padded`` on its own, so each
    map is the one the image gets alone: the model is not translation-local (its
    squeeze-and-excitation blocks pool over the whole input), so crops tiled into one
    canvas would change one another's scores; stacked in the batch axis they do not.
    """
    shapes = {_padded(*image.shape) for image in images}
    if len(shapes) != 1:
        raise ValueError("one padded size per run")
    (padded,) = shapes
    batch = np.zeros((len(images), 3, *padded), dtype=np.float32)
    for k, image in enumerate(images):
        rows, columns = image.shape
        batch[k, :, :rows, :columns] = image.astype(np.float32) / 127.5 - 1.0
    session = _get_session()
    (out,) = session.run(None, {session.get_inputs()[0].name: batch})
    return [out[k, 0, : image.shape[0], : image.shape[1]] for k, image in enumerate(images)]


def probabilities(images: list[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, probability map) for images of any sizes, one run per padded size (a
    dense page's ~200 crops come in about 40 sizes) of at most ``BATCH_PIXELS``; a batch's
    maps are yielded before the next runs (memory: one batch at a time)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for k, image in enumerate(images):
        groups.setdefault(_padded(*image.shape), []).append(k)
    for (rows, columns), members in groups.items():
        step = max(1, BATCH_PIXELS // (rows * columns))
        for start in range(0, len(members), step):
            chunk = members[start : start + step]
            yield from zip(chunk, probability_maps([images[k] for k in chunk]), strict=True)


def _boxes_from(prob: np.ndarray) -> list[tuple[Box, Box]]:
    """DB post-processing on axis-aligned boxes: components, mean score, unclip.

    Each box comes with its core (the component before unclipping): the unclip grows a
    box by about half its height on every side, so a short word's box is nearly as high
    as wide; its shape is judged on the core.
    """
    labels, _ = ndimage.label(prob > PROBABILITY)
    boxes = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        ys, xs = found
        h, w = ys.stop - ys.start, xs.stop - xs.start
        if min(h, w) < 3:
            continue
        mask = labels[found] == index
        if float(prob[found][mask].mean()) < BOX_SCORE:
            continue
        grow = round(h * w * UNCLIP_RATIO / (2 * (h + w)))
        core = (xs.start, ys.start, xs.stop, ys.stop)
        boxes.append(((xs.start - grow, ys.start - grow, xs.stop + grow, ys.stop + grow), core))
    return boxes


def _core_reaches(region: Box, core: Box, crop: tuple[int, int, float, float]) -> bool:
    """Whether a box's core (crop pixels at the model's scale) reaches into ``region``.

    The unclip grows a core by about half its height on every side: a region holding
    only that margin of text found beside it (the halo under a neighbour line's letters,
    the gap above the next line) holds none of the text, and its clipped box, a sliver
    a few pixels high, read as junk (COVID-00013a's 286x8 under "AP PORT UPR": 1160
    recogniser columns, its batch padded to them)."""
    (x0, y0, x1, y1), (kx0, ky0, kx1, ky1), (cx0, cy0, sx, sy) = region, core, crop
    return cx0 + kx0 * sx < x1 and cx0 + kx1 * sx > x0 and cy0 + ky0 * sy < y1 and cy0 + ky1 * sy > y0


def text_boxes(
    arr: np.ndarray, regions: list[Box], line_heights: list[int] | None = None, margins: list[int] | None = None
) -> list[list[Box]]:
    """Text boxes (image coordinates, end-exclusive, clipped to each region) per region.

    Each region is cropped with a margin (``margins``, or half its height), stretched to 8 bits, scaled
    so its text is about ``MODEL_TEXT_HEIGHT`` high (within ``MAX_SIDE`` a side and
    ``BATCH_PIXELS`` in all); the crops go through the detector
    together (``probabilities``: a dense page's hundreds of crops in a few runs). Empty
    lists when the detector is not installed.
    """
    if not regions:
        return []
    if not available():
        return [[] for _ in regions]
    rows, columns = arr.shape
    crops: list[tuple[int, int, float, float]] = []
    scaled: list[np.ndarray] = []
    heights: list[int] = []
    for k, (x0, y0, x1, y1) in enumerate(regions):
        height = (line_heights[k] if line_heights else 0) or max(1, (y1 - y0) // 2)
        margin = margins[k] if margins else max(4, (y1 - y0) // 2)
        cx0, cy0 = max(0, x0 - margin), max(0, y0 - margin)
        cx1, cy1 = min(columns, x1 + margin), min(rows, y1 + margin)
        crop = _display8(arr[cy0:cy1, cx0:cx1])
        scale = min(4.0, max(0.1, MODEL_TEXT_HEIGHT / height))
        fill = max((BATCH_PIXELS / crop.size) ** 0.5, SMALLEST_TEXT_HEIGHT / height)
        scale = min(scale, MAX_SIDE / max(crop.shape), fill)
        size = (max(8, round(crop.shape[1] * scale)), max(8, round(crop.shape[0] * scale)))
        scaled.append(np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR)))
        crops.append((cx0, cy0, crop.shape[1] / size[0], crop.shape[0] / size[1]))
        heights.append(height)
    out: list[list[Box]] = [[] for _ in regions]
    for k, prob in probabilities(scaled):
        (x0, y0, x1, y1), (cx0, cy0, sx, sy), height = regions[k], crops[k], heights[k]
        found = []
        for (bx0, by0, bx1, by1), (kx0, ky0, kx1, ky1) in _boxes_from(prob):
            box = (
                max(x0, cx0 + int(np.floor(bx0 * sx))),
                max(y0, cy0 + int(np.floor(by0 * sy))),
                min(x1, cx0 + int(np.ceil(bx1 * sx))),
                min(y1, cy0 + int(np.ceil(by1 * sy))),
            )
            tall = box[3] - box[1]
            core_tall = (ky1 - ky0) * sy
            if box[2] <= box[0] or not _core_reaches(regions[k], (kx0, ky0, kx1, ky1), crops[k]):
                continue  # beside the region, not in it: at most the unclip margin of a neighbour's text
            if tall < MIN_TEXT_HEIGHT or core_tall > 2 * height or (kx1 - kx0) < CORE_SHAPE * (ky1 - ky0):
                continue  # not a line of text this size: a tall blob or a column of strokes
            found.append(box)
        out[k] = found
    return out
