"""The arbiter of uncertain text: PP-OCR's recogniser reads a box, and only a read counts.

Tesseract reads junk on anatomy now and then with confidence (two letters at 88 on a
chest film's heart border, three on an MR's gyri), the text detector boxes a scalp's
edge, and a line judged text carries its neighbours' ink (a clavicle beside "ERECT").
On real images these were the blanked anatomy. Every box about to be blanked that no
sure word backs (``policy.Decision.sure``) is shown here to the recogniser trained on
text lines (``PP-OCRv6_rec_small``, inside the ``rapidocr`` wheel with the detector,
run by onnxruntime on one thread): text comes back as its characters at scores near 1,
anatomy as nothing, a low score or CJK strokes. A box is confirmed when it reads at
least ``MIN_CHARACTERS`` Latin letters or digits at ``MIN_SCORE`` in either polarity.
A box whose strokes do not stand out of its own noise (``has_strokes``) is not read:
stretched to 8 bits, a noisy film's heart shadow reads as letters at 0.85 and more.

Nothing read is kept: only counts leave this module. Without the packages nothing is
vetoed (the detector is missing too, and the policy is what it was before them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from cxr_dask.deid.pixels.morphology import stretched8, value_percentiles
from cxr_dask.deid.pixels.types import Box

MODEL_FILE = "PP-OCRv6_rec_small.onnx"
#: The model's input height; widths follow the crop's aspect.
INPUT_HEIGHT = 48
#: Crops wider than this (model input pixels) are read in pieces.
MAX_WIDTH = 1600
#: Crops run through the model together (padded to the widest).
BATCH = 8
#: A box narrower than this many times its height is read as two halves too.
TWO_LINES = 2.5
#: A read counts with this mean probability of its Latin letters and digits (text read
#: 0.89-1.0 on the real set; junk on anatomy 0.06-0.71) ...
MIN_SCORE = 0.85
#: ... and at least this many Latin letters or digits (a lone letter identifies nobody).
MIN_CHARACTERS = 2
#: A read of that many at this score or more, short of ``MIN_SCORE``, is unsure: the box
#: is left in place but flagged for a human look (below it, the read is nothing).
UNSURE_SCORE = 0.5
#: A crop holds strokes when the range of its 3x3 means is this many times its noise's
#: sigma: every labelled text box of the real set is at 9 or more, noise on a film 2-3.
MIN_STROKE_SNR = 5.0

_session = None
_characters: list[str] = []
_lock = threading.Lock()


@dataclass(frozen=True)
class Reading:
    """What the recogniser made of one box: Latin letters and digits, other characters,
    the Latin ones' mean probability (never the characters themselves)."""

    latin: int
    other: int
    score: float
    allowed: bool = False  # every word read is allow-listed (a marker Tesseract misread)

    @property
    def is_text(self) -> bool:
        return self.latin >= MIN_CHARACTERS and self.latin >= self.other and self.score >= MIN_SCORE

    @property
    def is_unsure(self) -> bool:
        """Latin letters or digits read between "not text" and "text" (``UNSURE_SCORE``)."""
        return (
            not self.is_text
            and self.latin >= MIN_CHARACTERS
            and self.latin >= self.other
            and self.score >= UNSURE_SCORE
        )

    @property
    def is_marker(self) -> bool:
        """Read surely, and every word of it allow-listed."""
        return self.allowed and self.score >= MIN_SCORE


def available() -> bool:
    from cxr_dask.deid.pixels import textdet

    return textdet.model_path(MODEL_FILE) is not None and textdet.onnxruntime_installed()


def _get_session():
    """One onnxruntime session per process, one thread, and the model's character list."""
    global _session, _characters
    with _lock:
        if _session is None:
            from cxr_dask.deid.pixels import textdet

            path = textdet.model_path(MODEL_FILE)
            if path is None:
                raise RuntimeError("text recogniser model not installed")
            session = textdet.new_session(path)
            _characters = session.get_modelmeta().custom_metadata_map["character"].splitlines()
            _session = session
        return _session


def has_strokes(crop: np.ndarray) -> bool:
    """Whether anything in ``crop`` stands out of its noise: the 1st to 99th percentile
    range of its 3x3 means against the noise's sigma (from the median difference between
    neighbours, which a glyph's few edges do not move). Scale-free: a 12-bit crop whose
    text shows only in a narrow window passes as well as an 8-bit one."""
    values = crop.astype(np.float32)
    sigma = _median_step(crop) * 1.4826 / np.sqrt(2.0)
    low, high = np.percentile(ndimage.uniform_filter(values, 3), (1, 99))
    return float(high - low) > MIN_STROKE_SNR * sigma


def _median_step(crop: np.ndarray) -> float:
    """The median absolute difference between horizontal neighbours, as numpy's median of
    the float32 differences gives it. Of stored values of at most 16 bits the differences
    are integers (below 2**16: float32 holds them, and a median of two of them, exactly),
    counted instead of sorted (``morphology.value_percentiles``)."""
    if crop.dtype.kind in "ui" and crop.dtype.itemsize <= 2 and crop.ndim == 2 and crop.shape[0] and crop.shape[1] > 1:
        left, right = crop[:, :-1], crop[:, 1:]
        if crop.dtype.kind == "u":  # the larger less the smaller: no wrap-around
            steps = np.maximum(left, right) - np.minimum(left, right)
        else:
            steps = np.abs(right.astype(np.int32) - left).astype(np.uint8 if crop.dtype.itemsize == 1 else np.uint16)
        return float(value_percentiles(steps, 50.0, np.float32))
    return float(np.median(np.abs(np.diff(crop.astype(np.float32), axis=1))))


def _stretched(crop: np.ndarray) -> np.ndarray:
    """A crop stretched to 8 bits by its own 0.5 and 99.5 percentiles (``morphology.stretched8``,
    percentiles in float32 as the recogniser's crops always were)."""
    return stretched8(crop, _stretch, np.float32)


def _stretch(values: np.ndarray, low: np.float32, high: np.float32) -> np.ndarray:
    """``values`` (float32) from ``low`` to ``high`` onto 0-255."""
    return (np.clip((values - low) / max(float(high - low), 1.0), 0.0, 1.0) * 255.0).astype(np.uint8)


def _views(arr: np.ndarray, box: Box, view: tuple[int, bool] = (0, False)) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The box (with a margin) stretched to 8 bits, at the model's height, in pieces of at
    most ``MAX_WIDTH`` (a box taller than twice its width turned both ways); and, for a
    box as high as a third of its width (``TWO_LINES``), its two halves, read only when
    the box itself reads as nothing: maybe two lines ("kV 120" over "mA 200", one
    detector box), which the model, trained on single lines, reads as nothing. ``view``
    (quarter turns counter-clockwise, mirrored first) shows the box as another reader
    read it (``ocr.read_views``)."""
    rows, columns = arr.shape[:2]
    x0, y0, x1, y1 = box
    margin = max(2, ((x1 - x0) if view[0] % 2 else (y1 - y0)) // 6)  # a sixth of the letters' height
    crop = arr[max(0, y0 - margin) : min(rows, y1 + margin), max(0, x0 - margin) : min(columns, x1 + margin)]
    if min(crop.shape[:2]) < 4 or not has_strokes(crop):
        return [], []
    turn, mirrored = view
    gray = _stretched(crop)
    gray = np.ascontiguousarray(np.rot90(np.fliplr(gray) if mirrored else gray, turn)) if turn or mirrored else gray
    turns = [gray]
    halves = []
    if gray.shape[0] > 2 * gray.shape[1]:
        turns += [np.ascontiguousarray(np.rot90(gray, 1)), np.ascontiguousarray(np.rot90(gray, 3))]
    elif gray.shape[1] < TWO_LINES * gray.shape[0] and y1 - y0 >= 16 and view == (0, False):
        half = gray.shape[0] // 2
        halves = [gray[: half + margin], gray[half - margin :]]
    return _scaled(turns), _scaled(halves)


def _scaled(views: list[np.ndarray]) -> list[np.ndarray]:
    """Each view at the model's height, in pieces of at most ``MAX_WIDTH``."""
    out = []
    for view in views:
        width = max(8, round(INPUT_HEIGHT * view.shape[1] / view.shape[0]))
        scaled = np.asarray(Image.fromarray(view).resize((width, INPUT_HEIGHT), Image.Resampling.BILINEAR))
        for start in range(0, width, MAX_WIDTH - INPUT_HEIGHT):
            out.append(scaled[:, start : start + MAX_WIDTH])
            if start + MAX_WIDTH >= width:
                break
    return out


def _decode(probabilities: np.ndarray, is_allowed: Callable[[str], bool]) -> Reading:
    """CTC greedy decoding of one row of the model's output (the text is dropped here)."""
    best = probabilities.argmax(axis=1)
    top = np.take_along_axis(probabilities, best[:, None], axis=1)[:, 0]  # the maximum, one pass fewer
    characters = []
    scores = []
    previous = 0
    for index, probability in zip(best, top, strict=True):
        if index != 0 and index != previous:
            characters.append(_characters[index - 1] if index - 1 < len(_characters) else " ")
            scores.append(float(probability))
        previous = index
    text = "".join(characters)
    is_latin = [c.isascii() and c.isalnum() for c in text]
    latin = sum(is_latin)
    other = sum(not a and not c.isspace() for a, c in zip(is_latin, text, strict=True))
    words = text.split()
    allowed = bool(words) and all(is_allowed(word) for word in words)
    score = float(np.mean([p for p, a in zip(scores, is_latin, strict=True) if a])) if latin else 0.0
    return Reading(latin, other, score, allowed)


def _better(reading: Reading, than: Reading) -> bool:
    return (reading.is_text, reading.latin, reading.score) > (than.is_text, than.latin, than.score)


def _run(pieces: list[tuple[int, np.ndarray]], best: list[Reading], is_allowed: Callable[[str], bool]) -> None:
    """Read ``pieces`` (box index, 8-bit view) in batches of similar width; keep each
    box's best reading in ``best``."""
    session = _get_session()
    order = sorted(range(len(pieces)), key=lambda i: pieces[i][1].shape[1])
    for start in range(0, len(order), BATCH):
        batch = [pieces[i] for i in order[start : start + BATCH]]
        width = max(piece.shape[1] for _, piece in batch)
        tensor = np.zeros((len(batch), 3, INPUT_HEIGHT, width), dtype=np.float32)
        for row, (_, piece) in enumerate(batch):
            tensor[row, :, :, : piece.shape[1]] = piece.astype(np.float32) / 127.5 - 1.0
        (out,) = session.run(None, {session.get_inputs()[0].name: tensor})
        for row, (k, _) in enumerate(batch):
            reading = _decode(out[row], is_allowed)
            if _better(reading, best[k]):
                best[k] = reading


def read(
    arr: np.ndarray, boxes: list[Box], is_allowed: Callable[[str], bool], view: tuple[int, bool] = (0, False)
) -> list[Reading]:
    """The best reading of each box (image coordinates, end-exclusive) over its views.

    Each distinct box is read as it is (or as ``view`` shows it: turned, mirrored); one
    that reads as neither text nor a marker is read once more inverted (the model reads
    both polarities, not always equally well), and as two halves when it may hold two
    lines.
    """
    unique = list(dict.fromkeys(boxes))
    views = [_views(arr, box, view) for box in unique]
    best = [Reading(0, 0, 0.0) for _ in unique]
    _run([(k, view) for k, (found, _) in enumerate(views) for view in found], best, is_allowed)
    again = [
        (k, view)
        for k, (found, halves) in enumerate(views)
        if not (best[k].is_text or best[k].is_marker)
        for view in [*(255 - v for v in found), *halves]
    ]
    _run(again, best, is_allowed)
    by_box = dict(zip(unique, best, strict=True))
    return [by_box[box] for box in boxes]
