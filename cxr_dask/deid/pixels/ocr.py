"""OCR: Tesseract reads the candidate lines of one image in a single call, fail closed.

The crops are stacked into one montage, background removed and upscaled to a size
Tesseract reads well; the words come back as boxes in image coordinates. Tesseract
itself is run by ``cxr_dask.tools`` (the one call, shared with ``verify``); a
Tesseract that is missing, fails or times out quarantines the image.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from cxr_dask import tools
from cxr_dask.deid.pixels.detection import CONTRAST, GROW_CONTRAST, MIN_STRONG, STRONG_SHARE
from cxr_dask.deid.pixels.morphology import _crop_opening
from cxr_dask.deid.pixels.policy import _letter_spaced
from cxr_dask.deid.pixels.types import Region, Word
from cxr_dask.deid.rules import PixelOptions
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

#: Text height Tesseract reads best (pixels); crops are scaled towards it.
OCR_HEIGHT = 40
OCR_GAP = 24
#: Seconds one Tesseract call may take before the image is quarantined.
OCR_TIMEOUT = 300


def _ocr_crop(arr: np.ndarray, region: Region) -> tuple[np.ndarray, float, np.ndarray]:
    """The region as dark text on white, background removed, scaled towards OCR_HEIGHT;
    and its stroke strength (top-hat response in stored values, at the region's scale)."""
    crop = arr[region.y0 : region.y1, region.x0 : region.x1].astype(np.float32)
    if not region.bright:
        crop = -crop
    window = max(3, int(region.line_height * 0.6))
    strokes = crop - _crop_opening(crop, window)
    top = float(np.percentile(strokes, 99.5)) or 1.0
    gray = 255.0 - np.clip(strokes / top, 0.0, 1.0) * 255.0
    scale = min(4.0, max(0.25, OCR_HEIGHT / region.line_height))
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
        out = tools.tesseract(image, ["-l", "eng", "--psm", str(psm), "tsv"], OCR_TIMEOUT)
    except tools.ToolFailure as failure:
        if failure.kind in ("missing", "unstartable"):
            raise QuarantineError(Reason.OCR_UNAVAILABLE, "tesseract") from None
        raise QuarantineError(Reason.OCR_FAILED, "timeout" if failure.kind == "timeout" else "tesseract") from None
    lines = out.splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]


def read_regions(
    arr: np.ndarray, regions: list[Region], options: PixelOptions, span: float | None = None
) -> list[list[Word]]:
    """OCR every region in one Tesseract call; the words found in each, in image coordinates.

    A vertical region goes in twice, turned a quarter each way (text runs up or down).
    With ``span`` (``detection.stroke_span``), a word whose box holds no stroke of glyph
    contrast is marked unstroked: read, but no evidence of text (``policy.is_evidence``).
    """
    if not regions:
        return []
    entries = [(i, turn) for i, region in enumerate(regions) for turn in ((1, 3) if region.vertical else (0,))]
    crops = []
    strengths: list[np.ndarray] = []
    for i, turn in entries:
        crop, scale, strokes = _ocr_crop(arr, regions[i])
        crops.append((np.ascontiguousarray(np.rot90(crop, turn)) if turn else crop, scale))
        strengths.append(strokes)
    width = max(c.shape[1] for c, _ in crops) + 2 * OCR_GAP
    height = sum(c.shape[0] + OCR_GAP for c, _ in crops) + OCR_GAP
    montage = np.full((height, width), 255, dtype=np.uint8)
    offsets = []
    y = OCR_GAP
    for crop, _ in crops:
        montage[y : y + crop.shape[0], OCR_GAP : OCR_GAP + crop.shape[1]] = crop
        offsets.append(y)
        y += crop.shape[0] + OCR_GAP
    words: list[list[Word]] = [[] for _ in regions]
    for row in tesseract_tsv(montage):
        text = row.get("text", "").strip()
        if row.get("level") != "5" or not text:
            continue
        left, top, w, h = (int(row[k]) for k in ("left", "top", "width", "height"))
        middle = top + h / 2
        entry = next(
            (k for k, (c, _) in enumerate(crops) if offsets[k] <= middle < offsets[k] + c.shape[0]),
            None,
        )
        if entry is None:
            continue
        index, turn = entries[entry]
        region, (crop, scale) = regions[index], crops[entry]
        # the word's box in the (turned) crop, then turned back: (rows, columns) end-exclusive
        r0, r1 = top - offsets[entry], top + h - offsets[entry]
        c0, c1 = left - OCR_GAP, left + w - OCR_GAP
        if turn == 1:  # rot90 counter-clockwise: rot[i, j] = crop[j, W-1-i]
            r0, r1, c0, c1 = c0, c1, crop.shape[0] - r1, crop.shape[0] - r0
        elif turn == 3:  # clockwise: rot[i, j] = crop[H-1-j, i]
            r0, r1, c0, c1 = crop.shape[1] - c1, crop.shape[1] - c0, r0, r1
        try:
            confidence = float(row.get("conf", "0"))
        except ValueError:
            confidence = 0.0
        x0, y0 = max(0, math.floor(c0 / scale)), max(0, math.floor(r0 / scale))
        x1, y1 = min(region.width, math.ceil(c1 / scale)), min(region.height, math.ceil(r1 / scale))
        words[index].append(
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
    return [_letter_spaced(found) for found in words]


#: Rows of one OCR montage at most (Tesseract refuses images over 32767 pixels a side).
MONTAGE_ROWS = 20000


def _read_in_chunks(
    arr: np.ndarray, regions: list[Region], options: PixelOptions, span: float | None = None
) -> list[list[Word]]:
    """``read_regions`` in montages of at most ``MONTAGE_ROWS`` (a page holds hundreds of lines)."""
    out: list[list[Word]] = []
    chunk: list[Region] = []
    rows = 0.0
    for region in regions:
        tall = region.height * min(4.0, max(0.25, OCR_HEIGHT / region.line_height)) + OCR_GAP
        if chunk and rows + tall > MONTAGE_ROWS:
            out += read_regions(arr, chunk, options, span)
            chunk, rows = [], 0
        chunk.append(region)
        rows += tall
    return out + read_regions(arr, chunk, options, span)
