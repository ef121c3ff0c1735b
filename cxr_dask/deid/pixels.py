"""Burned-in text: decode, detect, OCR, decide, redact, re-encode (PS3.15 Clean Pixel Data).

Text in the pixels cannot be removed from the header: it has to be found in the image.
Two stages keep that affordable on a cluster of 3000x2500 radiographs:

1. ``detect``: a cheap detector on a downscaled copy (block max for bright text, block
   min for dark text, so one-pixel strokes survive the downscale). A morphological
   top-hat keeps thin high-contrast strokes and drops smooth anatomy; connected
   components of glyph size are grouped into text lines. Wires, ECG leads and ruler
   bars are one long component each and fail the glyph-size test.
2. ``read_regions``: Tesseract reads only the candidate lines, all of one image in a
   single call (the crops stacked into one montage, background removed, upscaled to a
   size Tesseract reads well), and returns word boxes in image coordinates.

``decide`` keeps allow-listed words (``rules.PixelOptions``), blanks the rest of every
candidate line, blanks whole lines in strict mode and lines OCR cannot read. A region
with room for two characters at most (a side marker, an arrow) is kept without OCR: it
cannot identify anybody, and Tesseract reads lone letters poorly. The rectangles of a
matching known-region rule are blanked whatever OCR says. Blanking uses the photometric
minimum: 0 for MONOCHROME2, the largest stored value for MONOCHROME1.

Where the text is does not matter to the detector: modalities print in corners and along
edges, but side markers sit beside the lungs, so location is no filter.

Doing each thing once keeps an image without text nearly free: uncompressed pixels are
read as a view of the PixelData bytes (``native_view``), pooled in their own dtype, and
each top-hat is skipped when its erosion (dilation) shows no pixel can reach glyph
contrast (OpenCV's square filters, exact, are the cheapest way to know);
compressed pixels go to the fastest decoder measured; JPEG 2000 is screened at half
resolution first (``j2k_preview``) and decoded in full only when the screen sees
candidate strokes.

An image where nothing is found, or where everything found is allow-listed, keeps its
original PixelData bytes; only changed images are re-encoded (``store``). Nothing here
logs or returns recognised text: reports hold counts, a rule's name and seconds.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import subprocess
import time
from dataclasses import dataclass, field

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

try:  # OpenCV comes with rapidocr (the text detector's model); the numpy filters stand in
    import cv2

    cv2.setNumThreads(1)  # one core per Dask task, as onnxruntime and Tesseract
except ImportError:  # pragma: no cover - exercised only without OpenCV
    cv2 = None

from cxr_dask.deid import decoders
from cxr_dask.deid.rules import PixelOptions
from cxr_dask.errors import QuarantineError

#: Transfer syntaxes a cleaned image is written back into: lossless, with an encoder.
REENCODE_IN_PLACE = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless}
    | {JPEG2000Lossless, JPEGLSLossless}
)
#: Lossless syntaxes without an encoder: written as Explicit VR Little Endian, still lossless.
LOSSLESS_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless, process 14
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
    }
)
#: PS3.3 C.7.6.1.1.5 method names of lossy transfer syntaxes (LossyImageCompressionMethod).
LOSSY_METHOD = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.53": "ISO_10918_1",  # retired JPEG processes, read by dcmdjpeg
    "1.2.840.10008.1.2.4.55": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}
#: Decoding plugins measured fastest at 3000x2500 (bench/pixels.py, one core): pyjpegls
#: 0.17 s vs gdcm 0.35 s (JPEG-LS), pylibjpeg-rle 0.010 s vs pydicom 0.027 s (RLE),
#: pylibjpeg-openjpeg 1.25 s vs gdcm 1.56 s (JPEG 2000).
_FAST_DECODER = {
    "1.2.840.10008.1.2.4.80": "pyjpegls",
    "1.2.840.10008.1.2.4.81": "pyjpegls",
    "1.2.840.10008.1.2.5": "pylibjpeg",
    "1.2.840.10008.1.2.4.90": "pylibjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg",
}
_ENCODING_PLUGIN = {JPEG2000Lossless: "pylibjpeg", RLELossless: "pylibjpeg", JPEGLSLossless: "pyjpegls"}

CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")

#: The detector works on images of at most this many pixels a side.
DETECTION_SIDE = 1024
#: Top-hat window (detection pixels): wider than any stroke, narrower than anatomy.
TOPHAT_SIZE = 11
#: A glyph must have a stroke that stands out by this share of the image's dynamic range
#: (text is burned in near white or black; anatomy rarely differs this much within a few
#: pixels) and is grown over pixels that stand out by ``GROW_CONTRAST``.
CONTRAST = 0.2
GROW_CONTRAST = 0.1
#: JPEG 2000 previews: at most this many resolution levels dropped, contrast thresholds
#: scaled by this (a one-pixel stroke keeps at least a quarter of its contrast per level).
PREVIEW_MAX_LEVEL = 1
PREVIEW_SENSITIVITY = 0.5
J2K_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})
#: Glyphs stacked in one column that make a vertical line of text.
VERTICAL_GLYPHS = 3
#: ... at most this share of their size apart (letters are close; ribs and rungs are not).
VERTICAL_GAP = 0.5
#: ... and overlap each other by at most this share (rib arcs and rungs do overlap).
VERTICAL_OVERLAP = -0.25
#: Dense pages (film scans of several panels, each framed by annotation blocks): glyphs
#: join a line only when within this factor of each other's height (capitals, lower case,
#: digits), and line boxes merge only when their heights are (the two polarities of one
#: line). Looser grouping (3, any) strings small text, bone fragments and skull rims into
#: one region whose "line height" is the skull's, and the text in it is never read.
DENSE_HEIGHT_RATIO = 2.0
#: ... and a glyph is at most this many image pixels high (text up to 150 pixels high
#: with room; a whole skull on a film scan is a component of "glyph" size otherwise).
DENSE_MAX_GLYPH = 200
#: ... a region of a dense page is read when it is a block of this many lines at most (a
#: taller one is anatomy cut into pieces; read at a mixed scale in one montage, it spoils
#: Tesseract's reading of the lines around it).
DENSE_LINES = 4
#: Text height Tesseract reads best (pixels); crops are scaled towards it.
OCR_HEIGHT = 40
OCR_GAP = 24
#: Seconds one Tesseract call may take before the image is quarantined.
OCR_TIMEOUT = 300


@dataclass(frozen=True)
class Region:
    """A candidate text line in image coordinates (end-exclusive) and what it is made of."""

    x0: int
    y0: int
    x1: int
    y1: int
    bright: bool  # strokes of higher stored values than their ground
    glyphs: int  # connected components at detection scale
    line_height: int  # typical glyph height, image pixels (sets the OCR scale)
    vertical: bool = False  # glyphs stacked in a column (text written top-down or rotated)

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


@dataclass(frozen=True)
class Word:
    """One OCR word box in image coordinates; ``allowed`` says whether it may stay.

    ``confidence`` is Tesseract's (0-100); ``characters`` counts the letters and digits
    read (never the text itself: nothing here keeps what was read).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    allowed: bool
    confidence: float = 100.0
    characters: int = 2
    spaced: bool = False  # one letter of a letter-spaced word
    symbols: int = 0  # other characters read (junk reads of strokes are mostly symbols)


#: What a region of an image was judged to be; the review page and the audit use these.
REGION_CLASSES = ("text", "marker", "rule", "strict", "flagged")


@dataclass(frozen=True)
class RegionRecord:
    """One judged region, in image coordinates (x0, y0, x1, y1), end-exclusive.

    ``kind`` is one of REGION_CLASSES: ``text`` blanked on evidence that it is text,
    ``marker`` kept (allow-listed or too small to identify anyone), ``rule`` blanked by a
    known-region rule, ``strict`` blanked by strict mode, ``flagged`` left in place but
    uncertain (for a human look). ``why`` is a short fixed phrase, never the words read.
    """

    box: tuple[int, int, int, int]
    kind: str
    why: str


@dataclass
class PixelReport:
    """One image's pixel work, as audit columns: counts, a rule name, seconds; never text."""

    action: str = "untouched"  # untouched | cleaned | disabled
    regions_found: int = 0
    regions_kept: int = 0
    regions_redacted: int = 0
    rule: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    #: Rectangles blanked (x0, y0, x1, y1), allow-listed words inside them excepted.
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    #: Every judged region with its class and reason (for the review page).
    regions: list[RegionRecord] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for r in self.regions if r.kind == kind)

    def as_audit(self) -> dict[str, object]:
        return {
            "pixel_action": self.action,
            "pixel_regions_found": self.regions_found,
            "pixel_regions_kept": self.regions_kept,
            "pixel_regions_redacted": self.regions_redacted,
            "pixel_rule": self.rule,
            "pixel_seconds": self.seconds,
        }


@dataclass
class PixelResult:
    """The outcome of ``clean``: the redacted array when pixels changed, else None."""

    report: PixelReport
    array: np.ndarray | None = None
    #: The decoded stored values before any change, when any region was judged (the
    #: review page's "before"); None when nothing was found or pixels were not decoded.
    source: np.ndarray | None = None


# --------------------------------------------------------------------------- decode


#: Syntaxes whose PixelData, once pydicom has read the file, are little-endian native bytes
#: (a deflated file is inflated as a whole on reading).
NATIVE_LITTLE_ENDIAN = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})


def decode(ds: Dataset) -> np.ndarray:
    """The stored pixel values of a single-frame greyscale image; quarantine otherwise.

    A file whose pixels cannot be decoded cannot be checked for burned-in text, so it is
    never written (fail closed). Native little-endian pixels come back as a read-only
    view of the PixelData bytes (``native_view``): no copy of a 15 MB image per file.
    """
    check_supported(ds)
    arr = native_view(ds)
    if arr is None:
        arr = _decode_compressed(ds)
    if arr.ndim != 2 or arr.shape != (int(ds.Rows), int(ds.Columns)):
        raise QuarantineError("undecodable_pixels", "PixelData")
    return arr


def check_supported(ds: Dataset) -> None:
    """Single-frame greyscale only: anything else is quarantined (its text is not searched)."""
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise QuarantineError("unsupported_pixels", "SamplesPerPixel")
    if str(ds.get("PhotometricInterpretation", "")).strip() not in ("MONOCHROME1", "MONOCHROME2"):
        raise QuarantineError("unsupported_pixels", "PhotometricInterpretation")


def _decode_compressed(ds: Dataset) -> np.ndarray:
    """pydicom's decode, with the fastest plugin measured here first (bench/pixels.py).

    pydicom tries its plugins in a fixed order (gdcm before pyjpegls for JPEG-LS, its own
    RLE decoder before pylibjpeg's); the faster one decodes the same values in half the
    time or less. Any plugin failing falls back to pydicom's own choice.
    """
    meta = getattr(ds, "file_meta", None)
    plugin = _FAST_DECODER.get(str(meta.get("TransferSyntaxUID", "")) if meta is not None else "")
    if plugin is not None:
        try:
            return pixel_array(ds, decoding_plugin=plugin)
        except Exception:
            pass  # plugin missing or refusing this file: pydicom picks another below
    try:
        return ds.pixel_array
    except Exception:
        if not decoders.can_decode(ds):
            raise QuarantineError("undecodable_pixels", "PixelData") from None
    return decoders.decode_with_dcmtk(ds)  # JPEG the plugins refuse (12-bit, retired processes)


def native_view(ds: Dataset) -> np.ndarray | None:
    """Uncompressed little-endian pixels as a view of the PixelData bytes, or None.

    The view holds the same values as ``ds.pixel_array`` would (pydicom copies the buffer
    and clears unused high bits): it is only used when no stored value has bits above
    BitsStored (one vectorised max) and the data is unsigned or uses every allocated bit.
    Anything else (big endian, odd bit depths, signed with unused bits, short data) is
    left to pydicom.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax not in NATIVE_LITTLE_ENDIAN or "PixelData" not in ds:
        return None
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    except (AttributeError, TypeError, ValueError):
        return None
    if allocated not in (8, 16) or not 0 < stored <= allocated or (signed and stored != allocated):
        return None
    data = ds.PixelData
    if not isinstance(data, (bytes, bytearray)):
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    count = rows * columns
    if rows <= 0 or columns <= 0 or len(data) < count * dtype.itemsize:
        return None
    arr = np.frombuffer(data, dtype=dtype, count=count).reshape(rows, columns)
    if not signed and stored < allocated and int(arr.max()) >> stored:
        return None  # unused high bits set: pydicom masks them
    return arr


def photometric_black(ds: Dataset) -> int:
    """The stored value that displays as black: MONOCHROME1's black is its largest value."""
    bits = int(ds.BitsStored)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return high if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1" else low


# --------------------------------------------------------------------------- detect


def _pool(arr: np.ndarray, factor: int, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Block max and block min: thin strokes survive in one of them whatever their polarity.

    Rows first (elementwise max/min of the ``factor`` rows of each block, contiguous),
    then columns on the ``factor`` times smaller result, ``chunk`` output rows at a time
    so a band is still in cache for its second statistic: the image is read once, in its
    own dtype, with no float copy (measured 25% faster than whole-image passes).
    """
    if factor == 1:
        return arr, arr
    rows, columns = (arr.shape[0] // factor) * factor, (arr.shape[1] // factor) * factor
    out_rows = rows // factor
    high_out = np.empty((out_rows, columns // factor), dtype=arr.dtype)
    low_out = np.empty_like(high_out)
    band_high = np.empty((min(chunk, out_rows), columns), dtype=arr.dtype)
    band_low = np.empty_like(band_high)
    for start in range(0, out_rows, chunk):
        n = min(chunk, out_rows - start)
        block = arr[start * factor : (start + n) * factor, :columns]
        high, low = band_high[:n], band_low[:n]
        np.maximum(block[0::factor], block[1::factor], out=high)
        np.minimum(block[0::factor], block[1::factor], out=low)
        for i in range(2, factor):
            np.maximum(high, block[i::factor], out=high)
            np.minimum(low, block[i::factor], out=low)
        out_high, out_low = high_out[start : start + n], low_out[start : start + n]
        np.maximum(high[:, 0::factor], high[:, 1::factor], out=out_high)
        np.minimum(low[:, 0::factor], low[:, 1::factor], out=out_low)
        for j in range(2, factor):
            np.maximum(out_high, high[:, j::factor], out=out_high)
            np.minimum(out_low, low[:, j::factor], out=out_low)
    return high_out, low_out


def _running(arr: np.ndarray, size: int, axis: int, op: np.ufunc) -> np.ndarray:
    """A centred running max/min of odd ``size`` along ``axis``, edges repeated.

    Equal to ``scipy.ndimage.maximum_filter1d``/``minimum_filter1d`` with mode "nearest",
    built by window doubling (a handful of contiguous elementwise ops instead of a
    per-element sliding window), several times faster on the detection image.
    """
    half = size // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (half, half)
    padded = np.pad(arr, pad, mode="edge")
    n = arr.shape[axis]

    def cut(a: np.ndarray, start: int, length: int) -> np.ndarray:
        return a[start : start + length] if axis == 0 else a[:, start : start + length]

    window, current = 1, padded
    total = padded.shape[axis]
    while window * 2 <= size:
        length = total - 2 * window + 1
        current = op(cut(current, 0, length), cut(current, window, length))
        window *= 2
    if window < size:
        length = total - size + 1
        current = op(cut(current, 0, length), cut(current, size - window, length))
    return cut(current, 0, n)


#: Dtypes OpenCV's morphology takes; it computes the same square min/max as ``_running``
#: (replicated border = scipy's "nearest") three times faster on the detection image.
_CV_DTYPES = frozenset({np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int16), np.dtype(np.float32)})


def _cv_morphology(arr: np.ndarray, size: int, dilate: bool) -> np.ndarray | None:
    """A square min (max) filter by OpenCV, or None when OpenCV cannot take the array."""
    if cv2 is None or arr.dtype not in _CV_DTYPES or arr.ndim != 2 or 0 in arr.shape:
        return None
    kernel = np.ones((size, size), dtype=np.uint8)
    op = cv2.dilate if dilate else cv2.erode
    return op(np.ascontiguousarray(arr), kernel, borderType=cv2.BORDER_REPLICATE)


def _erode(arr: np.ndarray, size: int) -> np.ndarray:
    out = _cv_morphology(arr, size, dilate=False)
    if out is not None:
        return out
    return _running(_running(arr, size, 0, np.minimum), size, 1, np.minimum)


def _dilate(arr: np.ndarray, size: int) -> np.ndarray:
    out = _cv_morphology(arr, size, dilate=True)
    if out is not None:
        return out
    return _running(_running(arr, size, 0, np.maximum), size, 1, np.maximum)


def _opening(arr: np.ndarray, size: int) -> np.ndarray:
    """Grey opening with a square window (min filter, then max filter)."""
    return _dilate(_erode(arr, size), size)


def _closing(arr: np.ndarray, size: int) -> np.ndarray:
    """Grey closing with a square window (max filter, then min filter)."""
    return _erode(_dilate(arr, size), size)


def _components(
    response: np.ndarray, span: float, max_height: int, max_width: int, sensitivity: float = 1.0
) -> list[tuple[int, int, int, int]]:
    """Boxes of connected components the size and shape of glyphs (or a few merged glyphs).

    A component counts when one of its pixels reaches ``CONTRAST``; an image without such
    a pixel has no glyph at all and is not labelled (the common no-text case).
    """
    strong = response >= CONTRAST * span * sensitivity
    if not strong.any():
        return []
    from scipy import ndimage  # here: 0.3 s to import, and a text-free image never gets here

    labels, count = ndimage.label(response > GROW_CONTRAST * span * sensitivity, structure=np.ones((3, 3), dtype=bool))
    if not count:
        return []
    peaked = np.zeros(count + 1, dtype=bool)
    peaked[labels[strong]] = True
    boxes = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None or not peaked[index]:
            continue
        ys, xs = found
        h, w = ys.stop - ys.start, xs.stop - xs.start
        if sensitivity < 1.0:  # a screen: any strong stroke counts, merged lines and bars too
            boxes.append((xs.start, ys.start, xs.stop, ys.stop))
            continue
        if h < 3 or h > max_height or w > max_width or w > 12 * h:
            continue  # speckle, anatomy, or a wire/ruler bar
        if h * w < 6:
            continue
        boxes.append((xs.start, ys.start, xs.stop, ys.stop))
    return boxes


def _group_lines(
    boxes: list[tuple[int, int, int, int]],
    gap_ratio: float = 1.2,
    min_gap: float | None = None,
    height_ratio: float = 3.0,
) -> list[tuple[tuple[int, int, int, int], int, int]]:
    """Merge glyph boxes that sit on one line close together: (box, glyphs, median height)."""
    parent = list(range(len(boxes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if boxes:
        b = np.asarray(boxes, dtype=np.int64)
        x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        h = y1 - y0
        for i in range(len(boxes)):
            overlap = np.minimum(y1[i], y1) - np.maximum(y0[i], y0)
            gap = np.maximum(x0 - x1[i], x0[i] - x1)
            tall = np.maximum(h[i], h)
            near = (overlap >= 0.4 * np.minimum(h[i], h)) & (gap <= gap_ratio * tall)
            near &= (h <= height_ratio * h[i]) & (h[i] <= height_ratio * h)
            if min_gap is not None:  # glyphs in a column follow each other, they do not overlap
                near &= gap >= min_gap * tall
            for j in np.nonzero(near)[0]:
                parent[root(int(j))] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(boxes)):
        groups.setdefault(root(i), []).append(i)
    lines = []
    for members in groups.values():
        xs0, ys0, xs1, ys1 = zip(*(boxes[m] for m in members), strict=True)
        height = int(np.median([b - a for a, b in zip(ys0, ys1, strict=True)]))
        lines.append(((min(xs0), min(ys0), max(xs1), max(ys1)), len(members), height))
    return lines


def detect(arr: np.ndarray, window: float | None = None, dense: bool = False) -> list[Region]:
    """Candidate text lines: thin high-contrast strokes of glyph size, grouped into lines.

    Works on a copy at most ``DETECTION_SIDE`` pixels a side; cheap enough to run on
    every image so that only images with candidates pay for OCR. ``window`` (the
    header's WindowWidth, stored values) narrows the contrast scale to what a viewer
    shows: text that stands out only in the display window of a 12-bit image is found.
    Glyphs left alone on their row but stacked in a column become a vertical line.
    ``dense`` groups strictly by glyph height (``DENSE_HEIGHT_RATIO``): the lines of a
    page of annotations beside anatomy, for a second look at an image known to hold text.
    """
    rows, columns = arr.shape
    factor = max(1, math.ceil(max(rows, columns) / DETECTION_SIDE))
    pooled = arr
    if min(rows, columns) < factor:  # a line of pixels: pad (a small copy) to one whole block
        pooled = np.pad(arr, ((0, max(0, factor - rows)), (0, max(0, factor - columns))), mode="edge")
    ratio = DENSE_HEIGHT_RATIO if dense else 3.0
    glyphs = _glyph_boxes(pooled, factor, window=window, max_glyph=DENSE_MAX_GLYPH if dense else None)
    lines = _group_lines(glyphs, height_ratio=ratio)
    # Glyphs of narrow "lines" (one or two glyphs, or both polarities of one letter) may
    # be letters of a vertical line: stacked close, one after the other.
    narrow = [box for box, _, _ in lines if box[2] - box[0] <= 1.6 * (box[3] - box[1])]
    loose = [g for g in glyphs if any(_inside(g, box) for box in narrow)]
    vertical = []
    transposed = [(b[1], b[0], b[3], b[2]) for b in loose]
    for (y0, x0, y1, x1), count, height in _group_lines(transposed, VERTICAL_GAP, VERTICAL_OVERLAP, ratio):
        if count >= VERTICAL_GLYPHS and y1 - y0 >= 2.5 * (x1 - x0):
            vertical.append(((x0, y0, x1, y1), count, height))
    if vertical:
        lines = [line for line in lines if not any(_inside(line[0], v[0]) for v in vertical)]
    padded = []
    for items, upright in ((lines, False), (vertical, True)):
        for (x0, y0, x1, y1), count, height in items:
            pad = max(2, ((x1 - x0) if upright else (y1 - y0)) // 4)
            box = (max(0, (x0 - pad) * factor), max(0, (y0 - pad) * factor))
            box += (min(columns, (x1 + pad) * factor), min(rows, (y1 + pad) * factor))
            padded.append((box, count, height * factor, upright))
    regions = [_region(arr, *item) for item in _merge_overlapping(padded, ratio if dense else None)]
    return [r for r in regions if _line_like(r)]


def _inside(box: tuple[int, int, int, int], outer: tuple[int, int, int, int]) -> bool:
    return outer[0] <= box[0] and outer[1] <= box[1] and box[2] <= outer[2] and box[3] <= outer[3]


def _line_like(region: Region) -> bool:
    """A line's short side is a few glyph heights at most (a few merged lines at most)."""
    short = region.width if region.vertical else region.height
    return short <= MAX_LINE_HEIGHTS * max(region.line_height, 1) + 8


def _glyph_boxes(
    arr: np.ndarray,
    factor: int,
    sensitivity: float = 1.0,
    window: float | None = None,
    max_glyph: int | None = None,
) -> list[tuple[int, int, int, int]]:
    """Glyph-sized stroke components of both polarities, in pixels of ``arr`` pooled by ``factor``.

    ``sensitivity`` scales the contrast thresholds; below 1 (a screen on a reduced-resolution
    preview whose thin strokes the wavelet low-pass has dimmed, and whose lower grow
    threshold merges glyphs into lines) every component with a strong pixel counts,
    whatever its size and shape.
    """
    high, low = _pool(arr, factor)
    if high.dtype.kind != "u":  # signed or float: differences need room
        high, low = high.astype(np.float32), low.astype(np.float32)
    p_low, p_high = np.percentile(low[:: max(1, low.shape[0] // 256), :: max(1, low.shape[1] // 256)], (1, 99.5))
    span = max(float(p_high - p_low), 1.0)
    if window and window > 1.0:
        span = min(span, float(window))
    strong = CONTRAST * span * sensitivity  # a glyph needs one pixel of this top-hat response
    det_rows, det_columns = high.shape
    max_height, max_width = max(8, int(0.2 * det_rows)), max(16, int(0.6 * det_columns))
    if max_glyph is not None:  # image pixels: the same glyph limit whatever the pooling
        max_height = max(8, min(max_height, max_glyph // factor))
    # Both polarities feed one grouping: white text also makes dark "gaps" between its
    # strokes, and the two halves of one line must become one region. Opening never
    # exceeds its input and closing never falls below it (no underflow in the image's own
    # unsigned dtype); each is skipped when the erosion (dilation) it starts from already
    # shows no pixel that could reach ``strong``.
    boxes = []
    eroded = _erode(high, TOPHAT_SIZE)
    if (high - eroded).max() >= strong:
        boxes += _components(high - _dilate(eroded, TOPHAT_SIZE), span, max_height, max_width, sensitivity)
    dilated = _dilate(low, TOPHAT_SIZE)
    if (dilated - low).max() >= strong:
        boxes += _components(_erode(dilated, TOPHAT_SIZE) - low, span, max_height, max_width, sensitivity)
    return boxes


# --------------------------------------------------------------------------- JPEG 2000 preview


def j2k_preview(ds: Dataset) -> tuple[np.ndarray, int] | None:
    """A JPEG 2000 image decoded at reduced resolution (Pillow's ``reduce``), and its level.

    Decoding 3000x2500 at half size takes a quarter of the full decode's time. Only for
    single-frame unsigned images at least ``2 * DETECTION_SIDE`` a side; None otherwise or
    when the codestream cannot be read that way (the full decode then decides).
    """
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax not in J2K_SYNTAXES or int(ds.get("PixelRepresentation", 0) or 0) != 0:
        return None
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        level = 0
        while max(rows, columns) >> (level + 1) >= DETECTION_SIDE and level < PREVIEW_MAX_LEVEL:
            level += 1
        if level == 0:
            return None
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        image = Image.open(io.BytesIO(frame))
        image.reduce = level  # Jpeg2KImageFile: decode only the resolution levels needed
        image.load()
        preview = np.asarray(image)
    except Exception:
        return None
    expected = (rows >> level, columns >> level)
    if preview.ndim != 2 or any(abs(a - b) > 1 for a, b in zip(preview.shape, expected, strict=True)):
        return None
    return preview, level


def preview_has_candidates(preview: np.ndarray, level: int, rows: int, columns: int) -> bool:
    """Whether the reduced-resolution screen sees any stroke that could be a glyph.

    Pooled to a detection scale at least as fine as the full-resolution detector's, with
    contrast thresholds scaled by ``PREVIEW_SENSITIVITY`` (the wavelet low-pass of one
    level leaves a one-pixel line at a quarter of its contrast). Erring towards yes only
    costs a full decode.
    """
    full_factor = max(1, math.ceil(max(rows, columns) / DETECTION_SIDE))
    factor = max(1, full_factor >> level)
    return bool(_glyph_boxes(preview, factor, PREVIEW_SENSITIVITY))


def _mostly_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Half the smaller box lies in the other: the two polarities of one line, not two lines."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return False
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height >= 0.5 * smaller


def _merge_overlapping(items: list[tuple], height_ratio: float | None = None) -> list[tuple]:
    """Union padded line boxes that mostly overlap, until none do: (box, glyphs, height, upright).

    With ``height_ratio``, only boxes of about the same line height merge.
    """
    merged = list(items)
    changed = True
    while changed:
        changed = False
        out: list[tuple] = []
        for box, glyphs, height, upright in merged:
            for k, (other, other_glyphs, other_height, other_upright) in enumerate(out):
                if _mostly_overlap(box, other) and (
                    height_ratio is None or max(height, other_height) <= height_ratio * min(height, other_height)
                ):
                    union = (min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]), max(box[3], other[3]))
                    keep_upright = upright if glyphs >= other_glyphs else other_upright
                    out[k] = (union, max(glyphs, other_glyphs), max(height, other_height), keep_upright)
                    changed = True
                    break
            else:
                out.append((box, glyphs, height, upright))
        merged = out
    return merged


def _region(arr: np.ndarray, box: tuple[int, int, int, int], glyphs: int, height: int, upright: bool = False) -> Region:
    """A Region whose polarity comes from its border: the padding ring is background."""
    x0, y0, x1, y1 = box
    crop = arr[y0:y1, x0:x1].astype(np.float32)
    ring = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
    ground = float(np.median(ring))
    low, high = np.percentile(crop, (1, 99))
    bright = bool(high - ground >= ground - low)
    return Region(x0, y0, x1, y1, bright=bright, glyphs=glyphs, line_height=max(1, height), vertical=upright)


# --------------------------------------------------------------------------- OCR


def _crop_opening(crop: np.ndarray, size: int) -> np.ndarray:
    """``ndimage.grey_opening(crop, size=(size, size))``, the same values, by OpenCV.

    scipy centres an even window one pixel differently for its dilation (the structuring
    element is mirrored); the anchors below do the same. Its "reflect" border and
    OpenCV's replicated one give the same min and max: every reflected pixel is already in
    the window. Ten times faster on OCR crops of flagged lines.
    """
    if cv2 is None or crop.dtype != np.float32 or crop.ndim != 2 or 0 in crop.shape:
        from scipy import ndimage

        return ndimage.grey_opening(crop, size=(size, size))
    kernel = np.ones((size, size), dtype=np.uint8)
    centre = size // 2
    eroded = cv2.erode(np.ascontiguousarray(crop), kernel, anchor=(centre, centre), borderType=cv2.BORDER_REPLICATE)
    mirrored = size - 1 - size // 2
    return cv2.dilate(eroded, kernel, anchor=(mirrored, mirrored), borderType=cv2.BORDER_REPLICATE)


def _ocr_crop(arr: np.ndarray, region: Region) -> tuple[np.ndarray, float]:
    """The region as dark text on white, background removed, scaled towards OCR_HEIGHT."""
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
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    return np.asarray(image), scale


def tesseract_tsv(image: np.ndarray, psm: int = 6) -> list[dict[str, str]]:
    """Run the Debian ``tesseract`` on an 8-bit image; its TSV rows (words at level 5)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # one core per worker thread
    try:
        result = subprocess.run(
            ["tesseract", "stdin", "stdout", "-l", "eng", "--psm", str(psm), "tsv"],
            input=buffer.getvalue(),
            capture_output=True,
            env=env,
            check=False,
            timeout=OCR_TIMEOUT,
        )
    except FileNotFoundError:
        raise QuarantineError("ocr_unavailable", "tesseract") from None
    except subprocess.TimeoutExpired:
        raise QuarantineError("ocr_failed", "timeout") from None
    if result.returncode != 0:  # an image with candidate text that cannot be read: fail closed
        raise QuarantineError("ocr_failed", "tesseract")
    lines = result.stdout.decode("utf-8", "replace").splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]


def read_regions(arr: np.ndarray, regions: list[Region], options: PixelOptions) -> list[list[Word]]:
    """OCR every region in one Tesseract call; the words found in each, in image coordinates.

    A vertical region goes in twice, turned a quarter each way (text runs up or down).
    """
    if not regions:
        return []
    entries = [(i, turn) for i, region in enumerate(regions) for turn in ((1, 3) if region.vertical else (0,))]
    crops = []
    for i, turn in entries:
        crop, scale = _ocr_crop(arr, regions[i])
        crops.append((np.ascontiguousarray(np.rot90(crop, turn)) if turn else crop, scale))
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
        words[index].append(
            Word(
                x0=region.x0 + max(0, math.floor(c0 / scale)),
                y0=region.y0 + max(0, math.floor(r0 / scale)),
                x1=min(region.x1, region.x0 + math.ceil(c1 / scale)),
                y1=min(region.y1, region.y0 + math.ceil(r1 / scale)),
                allowed=options.is_allowed(text),
                confidence=confidence,
                characters=sum(c.isalnum() for c in text),
                symbols=sum(not c.isalnum() for c in text),
            )
        )
    return [_letter_spaced(found) for found in words]


# --------------------------------------------------------------------------- decide, redact


#: Tesseract confidence (0-100) a word needs to count as evidence that a line is text.
WORD_CONFIDENCE = 60.0
#: ... and a two-character word this much.
SURE_CONFIDENCE = 85.0
#: A merged block taller than this many glyph heights is anatomy strung together, not text
#: (a block of a few text lines, which OCR reads line by line, stays well below).
MAX_LINE_HEIGHTS = 12
#: At least this many one-character words in a row are one letter-spaced word (J O H N).
LETTER_SPACED_RUN = 3
#: A word read on a line that is text is blanked when its height is within this factor of
#: the evidence words' (junk read on anatomy merged into the line is not).
WORD_HEIGHT_RATIO = 2.0


def _letter_spaced(words: list[Word]) -> list[Word]:
    """Single letters in a row are a word spelled out, never a row of side markers.

    A run of ``LETTER_SPACED_RUN`` or more one-character words on one line loses its
    allow-listing (``L O R A`` is a name, not the marker L) and counts as read text.
    """
    ordered = sorted(words, key=lambda w: (w.x0, w.y0))
    out: list[Word] = []
    run: list[Word] = []

    def flush() -> None:
        if len(run) >= LETTER_SPACED_RUN:
            out.extend(Word(w.x0, w.y0, w.x1, w.y1, False, w.confidence, w.characters, True, w.symbols) for w in run)
        else:
            out.extend(run)
        run.clear()

    for word in ordered:
        same_line = run and min(run[-1].y1, word.y1) - max(run[-1].y0, word.y0) > 0
        if word.characters == 1 and (not run or same_line):
            run.append(word)
            continue
        flush()
        if word.characters == 1:
            run.append(word)
        else:
            out.append(word)
    flush()
    return out


def is_evidence(word: Word) -> bool:
    """A word read with confidence: three letters or digits (two when very sure), mostly
    alphanumeric, or one letter of a spaced word. Tesseract reads junk on anatomy too,
    short, symbol-laden and less sure."""
    if word.confidence < WORD_CONFIDENCE or word.symbols * 3 > word.characters:
        return False
    if word.characters == 1:
        return word.spaced
    return word.characters >= 3 or word.confidence >= SURE_CONFIDENCE


def word_box(word: Word, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The word's box grown by a few pixels (anti-aliasing, OCR box jitter), inside the image."""
    pad = 2 + (word.y1 - word.y0) // 10
    return (max(0, word.x0 - pad), max(0, word.y0 - pad), min(shape[1], word.x1 + pad), min(shape[0], word.y1 + pad))


@dataclass(frozen=True)
class Decision:
    """What happens to one candidate region: its class, a fixed reason, what is blanked."""

    kind: str  # one of REGION_CLASSES
    why: str
    blank: tuple[tuple[int, int, int, int], ...] = ()
    keep: tuple[Word, ...] = ()

    @property
    def redacts(self) -> bool:
        return bool(self.blank)


def decide(region: Region, words: list[Word], options: PixelOptions, shape: tuple[int, int]) -> Decision:
    """Blank text, not strokes: only words on a line with evidence of text are blanked.

    Strict mode blanks the whole region. A region with room for two characters at most is
    a marker. A line where no word is read with confidence is ``flagged`` and left in
    place (thin bright anatomy, wires and edges are what nobody can read); the second
    stage (``textdet``) may still find text there. On a line that is text, every word
    read that is not allow-listed is blanked, box by box, and allow-listed words stay.
    """
    box = (region.x0, region.y0, region.x1, region.y1)
    if options.strict:
        return Decision("strict", "strict mode", (box,))
    if is_small(region):
        return Decision("marker", "too small to identify")
    evidence = [w for w in words if is_evidence(w)]
    if not evidence:
        return Decision("flagged", "unread candidate")
    # A line read with confidence (an allow-listed word included) is text: every other word
    # box of its glyph height on it is text too, however unsure its reading (a name beside
    # PORTABLE, read at low confidence, stayed readable when only sure words were blanked).
    height = float(np.median([w.y1 - w.y0 for w in evidence]))
    blank = tuple(
        word_box(w, shape)
        for w in words
        if not w.allowed
        and (w.characters or w.symbols)
        and (is_evidence(w) or height / WORD_HEIGHT_RATIO <= w.y1 - w.y0 <= height * WORD_HEIGHT_RATIO)
    )
    if not blank and all(w.allowed for w in words if w.characters or w.symbols):
        return Decision("marker", "allow-listed", keep=tuple(w for w in words if w.allowed))
    # The line is text: the whole candidate line goes, allow-listed words restored. Word
    # boxes alone left text OCR did not box (dark text on a bright label, a second line
    # of a merged block) readable; the line's box is its glyphs plus a quarter height.
    return Decision("text", "words read", (box, *blank), tuple(w for w in words if w.allowed))


Box = tuple[int, int, int, int]


def redact_boxes(arr: np.ndarray, boxes: tuple[Box, ...], keep: tuple[Word, ...], black: int) -> None:
    """Black out ``boxes`` except the allow-listed words, restored from the original with
    the margin of a blanked word (OCR boxes cut anti-aliased edges); the first box may be a
    whole line, the others are words, which stay black wherever a margin overlaps them."""
    kept = [word_box(w, arr.shape) for w in keep]
    original = [arr[y0:y1, x0:x1].copy() for x0, y0, x1, y1 in kept]
    for x0, y0, x1, y1 in boxes:
        arr[y0:y1, x0:x1] = black
    for (x0, y0, x1, y1), pixels in zip(kept, original, strict=True):
        arr[y0:y1, x0:x1] = pixels
    for x0, y0, x1, y1 in boxes[1:] if keep else ():
        arr[y0:y1, x0:x1] = black


def is_small(region: Region) -> bool:
    """Room for two characters at most (a side marker, an arrow): identifies nobody, not OCRed.

    Measured in glyph heights, not the region's own height: a block of several short
    lines (an ultrasound's settings column) is as narrow as a marker but holds words.
    """
    if region.vertical:
        return region.height <= 1.6 * max(region.line_height, region.width / 2)
    return region.width <= 1.6 * max(region.line_height, region.height / 2)


def confirm_text(regions: list[Region], arr: np.ndarray) -> list[list[tuple[int, int, int, int]]]:
    """Second stage on regions OCR could not read: text boxes from a text detector, if any.

    Without the detector's packages every region stays flagged (left in place).
    """
    from cxr_dask.deid import textdet

    return textdet.text_boxes(arr, [(r.x0, r.y0, r.x1, r.y1) for r in regions], [r.line_height for r in regions])


def dense_lines(
    arr: np.ndarray, window: float | None, options: PixelOptions, regions: list[Region], decisions: list[Decision]
) -> list[tuple[Region, Decision]]:
    """A second look at an image known to hold text: its lines grouped strictly by height.

    A film scan's annotation blocks sit beside skulls, bone fragments and rulers; the
    screen's grouping strings them into regions whose line height is the anatomy's, which
    OCR reads at the wrong scale or never. Here each line of glyphs of one height is a
    region. Lines the first pass blanked, or left as they are (the same box), are left
    out (on a chest film with a name that is nearly all of them: no second OCR).
    The others are read in one Tesseract call; a line counts only when most of the words
    read on it are evidence (anatomy cut into lines reads as junk with a sure word now
    and then). Lines OCR cannot read go to the text detector at their own scale. Unread
    lines are not recorded: they lie in regions the first pass judged already.
    """
    blanked = np.zeros(arr.shape, dtype=bool)
    for decision in decisions:
        if decision.kind == "text":
            for x0, y0, x1, y1 in decision.blank:
                blanked[y0:y1, x0:x1] = True
    found = [
        r
        for r in detect(arr, window, dense=True)
        if not is_small(r)
        and not r.vertical
        and r.height <= DENSE_LINES * r.line_height + 8
        and blanked[r.y0 : r.y1, r.x0 : r.x1].mean() < 0.9
        and not any(_judged(r, first) for first, d in zip(regions, decisions, strict=True) if d.kind != "text")
    ]
    out = []
    unread = []
    for region, words in zip(found, _read_in_chunks(arr, found, options), strict=True):
        decision = decide(region, words, options, arr.shape)
        if decision.kind == "text" and 2 * sum(is_evidence(w) for w in words) >= len(words):
            out.append((region, dataclasses.replace(decision, why="words read on a dense page")))
        elif decision.kind in ("flagged", "text"):
            unread.append(region)
    # what OCR could not read, the text detector sees at the line's own scale
    for region, boxes in zip(unread, confirm_text(unread, arr), strict=True):
        if boxes:
            out.append((region, Decision("text", "text detector on a dense page", tuple(boxes))))
    return out


#: Rows of one OCR montage at most (Tesseract refuses images over 32767 pixels a side).
MONTAGE_ROWS = 20000


def _read_in_chunks(arr: np.ndarray, regions: list[Region], options: PixelOptions) -> list[list[Word]]:
    """``read_regions`` in montages of at most ``MONTAGE_ROWS`` (a page holds hundreds of lines)."""
    out: list[list[Word]] = []
    chunk: list[Region] = []
    rows = 0
    for region in regions:
        tall = region.height * min(4.0, max(0.25, OCR_HEIGHT / region.line_height)) + OCR_GAP
        if chunk and rows + tall > MONTAGE_ROWS:
            out += read_regions(arr, chunk, options)
            chunk, rows = [], 0
        chunk.append(region)
        rows += tall
    return out + read_regions(arr, chunk, options)


def _judged(line: Region, first: Region) -> bool:
    """Whether a first-pass region was about ``line`` itself (read and judged as it is)."""
    width = min(line.x1, first.x1) - max(line.x0, first.x0)
    height = min(line.y1, first.y1) - max(line.y0, first.y0)
    common = max(0, width) * max(0, height)
    return common >= 0.8 * line.width * line.height and common >= 0.8 * first.width * first.height


def _window_width(ds: Dataset) -> float | None:
    """The first WindowWidth in stored values (RescaleSlope undone), or None."""
    try:
        width = ds.get("WindowWidth")
        if width is None:
            return None
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        return abs(width / slope) if width > 0 and slope else None
    except (TypeError, ValueError, IndexError):
        return None


def _device(ds: Dataset) -> tuple[str, str]:
    return str(ds.get("Manufacturer", "") or ""), str(ds.get("ManufacturerModelName", "") or "")


def clean(ds: Dataset, options: PixelOptions) -> PixelResult:
    """Decode, find and judge burned-in text; the redacted array when anything changed.

    Runs after the header step: what it reads (Manufacturer and model for the known-region
    rules, size, photometric interpretation) is kept by the profile. Raises
    QuarantineError when the pixels cannot be decoded.
    """
    started = time.perf_counter()
    report = PixelReport()
    if not options.enabled:
        report.action = "disabled"
        return PixelResult(report)
    check_supported(ds)
    rule = options.rule_for(*_device(ds), int(ds.Rows), int(ds.Columns))
    if rule is None and options.jpeg2000_preview:
        # JPEG 2000, when asked: screen a reduced-resolution decode first; no candidate
        # stroke there means no text, and the full decode (four times the time) is skipped.
        preview = j2k_preview(ds)
        if preview is not None:
            found = preview_has_candidates(preview[0], preview[1], int(ds.Rows), int(ds.Columns))
            report.timings["screen"] = time.perf_counter() - started
            if not found:
                report.seconds = time.perf_counter() - started
                return PixelResult(report)
    mark = time.perf_counter()
    arr = decode(ds)
    report.timings["decode"] = time.perf_counter() - mark
    black = photometric_black(ds)
    work: np.ndarray | None = None

    if rule is not None:
        work = np.array(arr, copy=True)
        for x, y, w, h in rule.regions:
            work[y : y + h, x : x + w] = black
            report.boxes.append((x, y, x + w, y + h))
            report.regions.append(RegionRecord((x, y, x + w, y + h), "rule", "known-region rule"))
        report.rule = rule.name

    mark = time.perf_counter()
    window = _window_width(ds)
    regions = detect(arr, window)
    report.timings["detect"] = time.perf_counter() - mark
    report.regions_found = len(regions)
    if regions:
        mark = time.perf_counter()
        to_read = [] if options.strict else [r for r in regions if not is_small(r)]
        read = dict(zip(to_read, read_regions(arr, to_read, options), strict=True))
        words = [read.get(region, []) for region in regions]
        report.timings["ocr"] = time.perf_counter() - mark
        if options.strict:
            report.rule = report.rule or "strict"
        decisions = [decide(region, found, options, arr.shape) for region, found in zip(regions, words, strict=True)]
        # A line nothing read is read once more in the other polarity: dark text on a
        # bright label is found by the label's bright edges and read as bright strokes.
        # That second reading counts only when most of what it reads is text: edges read
        # inverted give many junk words, one of them sure now and then.
        unread = [i for i, d in enumerate(decisions) if d.kind == "flagged" and regions[i] in read]
        if unread:
            flipped = [dataclasses.replace(regions[i], bright=not regions[i].bright) for i in unread]
            for i, found in zip(unread, read_regions(arr, flipped, options), strict=True):
                if 2 * sum(is_evidence(w) for w in found) >= len(found) > 0:
                    decisions[i] = decide(regions[i], found, options, arr.shape)
            report.timings["ocr"] = time.perf_counter() - mark
        # the text detector sees horizontal lines; columns need words Tesseract reads
        flagged = [i for i, d in enumerate(decisions) if d.kind == "flagged" and not regions[i].vertical]
        if flagged:
            mark = time.perf_counter()
            for i, boxes in zip(flagged, confirm_text([regions[i] for i in flagged], arr), strict=True):
                if boxes:
                    decisions[i] = Decision("text", "text detector", tuple(boxes))
            report.timings["second_stage"] = time.perf_counter() - mark
        if not options.strict and any(d.kind == "text" for d in decisions):
            mark = time.perf_counter()
            for region, decision in dense_lines(arr, window, options, list(regions), decisions):
                regions.append(region)
                decisions.append(decision)
                report.regions_found += 1
            report.timings["dense"] = time.perf_counter() - mark
        for region, decision in zip(regions, decisions, strict=True):
            box = (region.x0, region.y0, region.x1, region.y1)
            report.regions.append(RegionRecord(box, decision.kind, decision.why))
            if not decision.redacts:
                report.regions_kept += 1
                continue
            report.regions_redacted += 1
            if work is None:
                work = np.array(arr, copy=True)
            redact_boxes(work, decision.blank, decision.keep, black)
            report.boxes.extend(decision.blank)
    if work is not None and not np.array_equal(work, arr):
        report.action = "cleaned"
    else:
        work = None
    report.seconds = time.perf_counter() - started
    return PixelResult(report, work, arr if report.regions else None)


# --------------------------------------------------------------------------- re-encode


def store(ds: Dataset, arr: np.ndarray, source_syntax: str) -> None:
    """Write ``arr`` into ``ds``: the source syntax when it is lossless and encodable, else
    Explicit VR Little Endian with the lossy history kept in LossyImageCompression."""
    syntax = UID(source_syntax)
    photometric = str(ds.PhotometricInterpretation).strip()
    bits_stored = int(ds.BitsStored)
    lossy = not (syntax in REENCODE_IN_PLACE or syntax in LOSSLESS_SYNTAXES)
    try:
        if syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
            ds.set_pixel_data(arr, photometric, bits_stored, generate_instance_uid=False)
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.set_pixel_data(arr, photometric, bits_stored, generate_instance_uid=False)
            if syntax in REENCODE_IN_PLACE:
                ds.compress(syntax, arr, encoding_plugin=_ENCODING_PLUGIN[syntax], generate_instance_uid=False)
    except QuarantineError:
        raise
    except Exception:
        raise QuarantineError("unencodable_pixels", "PixelData") from None
    if lossy:
        # The pixels went through a lossy codec once; say so, whatever the new syntax.
        if str(ds.get("LossyImageCompression", "")).strip() != "01":
            ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds and syntax in LOSSY_METHOD:
            ds.LossyImageCompressionMethod = LOSSY_METHOD[syntax]


def mark_cleaned(ds: Dataset) -> None:
    """BurnedInAnnotation NO and the Clean Pixel Data code, for an image that was cleaned."""
    ds.BurnedInAnnotation = "NO"
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = CLEAN_PIXEL_CODE[0], "DCM", CLEAN_PIXEL_CODE[1]
    codes = ds.get("DeidentificationMethodCodeSequence") or Sequence([])
    if all(getattr(c, "CodeValue", None) != CLEAN_PIXEL_CODE[0] for c in codes):
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
    methods = ds.get("DeidentificationMethod")
    values = list(methods) if isinstance(methods, pydicom.multival.MultiValue) else [str(methods or "")]
    if "clean pixel data" not in values:
        ds.DeidentificationMethod = [v for v in values if v] + ["clean pixel data"]
