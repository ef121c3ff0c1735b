"""OCR: Tesseract reads the candidate lines of one image in a single call, fail closed.

The crops are stacked into one montage, background removed and upscaled to a size
Tesseract reads well; the words come back as boxes in image coordinates. Tesseract
itself is run by ``cxr_dask.tools`` (the one call, shared with ``verify``); a
Tesseract that is missing, fails or times out quarantines the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from PIL import Image

from cxr_dask import tools
from cxr_dask.deid.pixels.detection import CONTRAST, GROW_CONTRAST, MIN_STRONG, STRONG_SHARE
from cxr_dask.deid.pixels.morphology import stroke_values, top_hat, value_percentiles
from cxr_dask.deid.pixels.policy import _letter_spaced
from cxr_dask.deid.pixels.types import Region, Word
from cxr_dask.deid.rules import PixelOptions
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

T = TypeVar("T")

#: Text height Tesseract reads best (pixels); crops are scaled towards it.
OCR_HEIGHT = 40
OCR_GAP = 24
#: Seconds one Tesseract call may take before the image is quarantined.
OCR_TIMEOUT = 300
#: Tesseract reads each line it is unsure of a second time inverted (white on black). A
#: montage is already dark strokes on white (``_ocr_crop``; the other polarity is a read
#: of its own), so the inverted read finds no text, only junk in anatomy, and it was a
#: third of Tesseract's time on films with lines of anatomy to read.
TESSERACT_SETTINGS = ("-c", "tessedit_do_invert=0")


def _ocr_scale(region: Region) -> float:
    """How much a region's crop is scaled for Tesseract: towards ``OCR_HEIGHT``, within 4x."""
    return min(4.0, max(0.25, OCR_HEIGHT / region.line_height))


def _stroke_window(region: Region) -> int:
    """The top-hat window of a region's strokes: wider than a stroke, narrower than a glyph."""
    return max(3, int(region.line_height * 0.6))


def _ocr_crop(arr: np.ndarray, region: Region) -> tuple[np.ndarray, float, np.ndarray]:
    """The region as dark text on white, background removed, scaled towards OCR_HEIGHT;
    and its stroke strength (top-hat response in stored values, at the region's scale)."""
    found = stroke_values(arr[region.y0 : region.y1, region.x0 : region.x1], _stroke_window(region), region.bright)
    top = float(value_percentiles(found, 99.5, np.float32)) or 1.0
    strokes = found.astype(np.float32, copy=False)
    gray = 255.0 - np.clip(strokes / top, 0.0, 1.0) * 255.0
    scale = _ocr_scale(region)
    image = Image.fromarray(gray.astype(np.uint8))
    if scale != 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(image), scale, strokes


def _stroked(strokes: np.ndarray, span: float) -> bool:
    """Whether a word's box holds a stroke strong along its length, as a screened glyph does.

    The OCR crop is stretched to its own strongest strokes, so film noise in a crop
    without any (a dark blob's surround read in the other polarity) looks like ink to
    Tesseract, which then reads words in it at 70% confidence. Text strokes reach glyph
    contrast (``CONTRAST``) in most of their pixels; noise reaches it in a few of the
    pixels it lifts over ``GROW_CONTRAST`` (measured on a 128x96 synthetic film: 5 of 98).
    """
    strong = int(np.count_nonzero(strokes >= CONTRAST * span))
    grown = int(np.count_nonzero(strokes > GROW_CONTRAST * span))
    return strong >= max(MIN_STRONG, STRONG_SHARE * grown)


def tesseract_tsv(image: np.ndarray, psm: int = 6) -> list[dict[str, str]]:
    """Run the Debian ``tesseract`` on an 8-bit image; its TSV rows (words at level 5).

    An image with candidate text that cannot be read is quarantined (fail closed).
    """
    try:
        out = tools.tesseract(image, ["-l", "eng", "--psm", str(psm), *TESSERACT_SETTINGS, "tsv"], OCR_TIMEOUT)
    except tools.ToolFailure as failure:
        if failure.kind in ("missing", "unstartable"):
            raise QuarantineError(Reason.OCR_UNAVAILABLE, "tesseract") from None
        raise QuarantineError(Reason.OCR_FAILED, "timeout" if failure.kind == "timeout" else "tesseract") from None
    lines = out.splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]


#: A way to show a crop to Tesseract: quarter turns counter-clockwise (``np.rot90``) and
#: whether it is mirrored left to right first.
View = tuple[int, bool]
UPRIGHT: tuple[View, ...] = ((0, False),)
#: A vertical region's views: text runs up or down.
TURNED: tuple[View, ...] = ((1, False), (3, False))
#: A flagged line's last look (``cleaning._read_turned``): a column chained into it, or
#: text mirrored left to right; a flagged column's: mirrored, running up or down.
TURNED_VIEWS: tuple[View, ...] = ((1, False), (3, False), (0, True))
MIRRORED_VIEWS: tuple[View, ...] = ((1, True), (3, True))


def read_regions(
    arr: np.ndarray, regions: list[Region], options: PixelOptions, span: float | None = None
) -> list[list[Word]]:
    """OCR every region in one Tesseract call; the words found in each, in image coordinates.

    A vertical region goes in twice, turned a quarter each way (text runs up or down).
    With ``span`` (``detection.stroke_span``), a word whose box holds no stroke of glyph
    contrast is marked unstroked: read, but no evidence of text (``policy.is_evidence``).
    """
    views = [TURNED if region.vertical else UPRIGHT for region in regions]
    return [
        _letter_spaced([w for found in read for w in found]) for read in read_views(arr, regions, views, options, span)
    ]


def read_views(
    arr: np.ndarray,
    regions: list[Region],
    views: list[tuple[View, ...]],
    options: PixelOptions,
    span: float | None = None,
) -> list[list[list[Word]]]:
    """OCR each region in each of its ``views`` in one Tesseract call: per region, per
    view, the words read (boxes in image coordinates, turned and mirrored back), letter-
    spaced runs not yet marked (``policy._letter_spaced``)."""
    if not regions:
        return []
    entries = [(i, v, view) for i, region in enumerate(regions) for v, view in enumerate(views[i])]
    crops = []
    strengths: list[np.ndarray] = []
    for i, _, (turn, mirrored) in entries:
        crop, scale, strokes = _ocr_crop(arr, regions[i])
        shown = np.fliplr(crop) if mirrored else crop
        crops.append((np.ascontiguousarray(np.rot90(shown, turn)) if turn or mirrored else crop, scale, crop.shape))
        strengths.append(strokes)
    width = max(c.shape[1] for c, _, _ in crops) + 2 * OCR_GAP
    height = sum(c.shape[0] + OCR_GAP for c, _, _ in crops) + OCR_GAP
    montage = np.full((height, width), 255, dtype=np.uint8)
    offsets = []
    y = OCR_GAP
    for crop, _, _ in crops:
        montage[y : y + crop.shape[0], OCR_GAP : OCR_GAP + crop.shape[1]] = crop
        offsets.append(y)
        y += crop.shape[0] + OCR_GAP
    words: list[list[list[Word]]] = [[[] for _ in views[i]] for i in range(len(regions))]
    for row in tesseract_tsv(montage):
        text = row.get("text", "").strip()
        if row.get("level") != "5" or not text:
            continue
        left, top, w, h = (int(row[k]) for k in ("left", "top", "width", "height"))
        middle = top + h / 2
        entry = next(
            (k for k, (c, _, _) in enumerate(crops) if offsets[k] <= middle < offsets[k] + c.shape[0]),
            None,
        )
        if entry is None:
            continue
        index, v, (turn, mirrored) = entries[entry]
        region, (_, scale, (crop_rows, crop_columns)) = regions[index], crops[entry]
        # the word's box in the shown crop, then turned and mirrored back: (rows, columns)
        # end-exclusive in the crop as cut
        r0, r1 = top - offsets[entry], top + h - offsets[entry]
        c0, c1 = left - OCR_GAP, left + w - OCR_GAP
        if turn == 1:  # rot90 counter-clockwise: rot[i, j] = crop[j, W-1-i]
            r0, r1, c0, c1 = c0, c1, crop_columns - r1, crop_columns - r0
        elif turn == 3:  # clockwise: rot[i, j] = crop[H-1-j, i]
            r0, r1, c0, c1 = crop_rows - c1, crop_rows - c0, r0, r1
        if mirrored:
            c0, c1 = crop_columns - c1, crop_columns - c0
        try:
            confidence = float(row.get("conf", "0"))
        except ValueError:
            confidence = 0.0
        x0, y0 = max(0, math.floor(c0 / scale)), max(0, math.floor(r0 / scale))
        x1, y1 = min(region.width, math.ceil(c1 / scale)), min(region.height, math.ceil(r1 / scale))
        words[index][v].append(
            Word(
                x0=region.x0 + x0,
                y0=region.y0 + y0,
                x1=region.x0 + x1,
                y1=region.y0 + y1,
                allowed=options.is_allowed(text),
                confidence=confidence,
                characters=sum(c.isalnum() for c in text),
                symbols=sum(not c.isalnum() for c in text),
                stroked=span is None or _stroked(strengths[entry][y0:y1, x0:x1], span),
            )
        )
    return words


#: Rows of one OCR montage at most (Tesseract refuses images over 32767 pixels a side).
MONTAGE_ROWS = 20000


def _in_montages(rows: list[float], read: Callable[[list[int]], list[T]]) -> list[T]:
    """``read`` over consecutive runs of items (by index) whose ``rows`` sum to at most
    ``MONTAGE_ROWS`` (a page holds hundreds of lines), the results in order."""
    out: list[T] = []
    chunk: list[int] = []
    total = 0.0
    for i, tall in enumerate(rows):
        if chunk and total + tall > MONTAGE_ROWS:
            out += read(chunk)
            chunk, total = [], 0.0
        chunk.append(i)
        total += tall
    return out + read(chunk)


def _read_in_chunks(
    arr: np.ndarray, regions: list[Region], options: PixelOptions, span: float | None = None
) -> list[list[Word]]:
    """``read_regions`` in montages of at most ``MONTAGE_ROWS``."""
    rows = [region.height * _ocr_scale(region) + OCR_GAP for region in regions]
    return _in_montages(rows, lambda chunk: read_regions(arr, [regions[k] for k in chunk], options, span))


def holds_strokes(arr: np.ndarray, region: Region, span: float) -> bool:
    """Whether a region's crop holds the ``MIN_STRONG`` pixels of glyph contrast a word
    read in it needs to be evidence (``_stroked``): without them, nothing read there is
    evidence or a near read."""
    strokes = top_hat(arr[region.y0 : region.y1, region.x0 : region.x1], _stroke_window(region), region.bright)
    return int(np.count_nonzero(strokes >= CONTRAST * span)) >= MIN_STRONG


def _views_in_chunks(
    arr: np.ndarray,
    regions: list[Region],
    views: list[tuple[View, ...]],
    options: PixelOptions,
    span: float | None = None,
) -> list[list[list[Word]]]:
    """``read_views`` in montages of at most ``MONTAGE_ROWS`` (a turned view of a line is
    as many rows as the line is wide)."""
    rows = [
        sum((region.width if turn % 2 else region.height) * _ocr_scale(region) + OCR_GAP for turn, _ in views[i])
        for i, region in enumerate(regions)
    ]
    return _in_montages(
        rows, lambda chunk: read_views(arr, [regions[k] for k in chunk], [views[k] for k in chunk], options, span)
    )
