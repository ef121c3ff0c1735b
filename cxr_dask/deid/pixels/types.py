"""The pixel step's types: one box convention, candidate regions, OCR words, reports.

``Box`` is the one box of the pixel step: (x0, y0, x1, y1) in image pixels (column,
row), end-exclusive, so ``arr[y0:y1, x0:x1]`` is what it holds. Regions, words, blanked
rectangles, review records and the text detector's output all use it; the one other
form, a known-region rule's (x, y, width, height) from the config file, becomes a Box
through ``box_from_xywh``. Importable without OpenCV, scipy or onnxruntime: the client's
audit and review page need only these types.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

#: (x0, y0, x1, y1), image pixels, end-exclusive.
Box = tuple[int, int, int, int]


def box_from_xywh(x: int, y: int, width: int, height: int) -> Box:
    """A rule's rectangle as written in the config file ([x, y, width, height]) as a Box."""
    return (x, y, x + width, y + height)


def inside(box: Box, outer: Box) -> bool:
    """Whether ``box`` lies inside ``outer`` (edges may touch)."""
    return outer[0] <= box[0] and outer[1] <= box[1] and box[2] <= outer[2] and box[3] <= outer[3]


def within(boxes: np.ndarray | Box, outers: np.ndarray | Box) -> np.ndarray:
    """``inside`` on arrays of boxes (last axis x0, y0, x1, y1), broadcast: many boxes in
    one, one box in many, or all pairs (``boxes[:, None]`` against ``outers``)."""
    b, o = np.asarray(boxes), np.asarray(outers)
    return (o[..., 0] <= b[..., 0]) & (o[..., 1] <= b[..., 1]) & (b[..., 2] <= o[..., 2]) & (b[..., 3] <= o[..., 3])


def clipped(box: Box, limit: Box) -> Box:
    """The part of ``box`` inside ``limit`` (their intersection)."""
    return (max(box[0], limit[0]), max(box[1], limit[1]), min(box[2], limit[2]), min(box[3], limit[3]))


def enclosing(boxes: Iterable[Box]) -> Box:
    """The smallest box holding every one of ``boxes`` (at least one)."""
    x0s, y0s, x1s, y1s = zip(*boxes, strict=True)
    return (min(x0s), min(y0s), max(x1s), max(y1s))


def gap(a: Box, b: Box) -> int:
    """The larger of the horizontal and vertical gaps between two boxes (negative: overlap)."""
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


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
    def box(self) -> Box:
        return (self.x0, self.y0, self.x1, self.y1)

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
    stroked: bool = True  # its box holds strokes of glyph contrast (``ocr._stroked``)

    @property
    def box(self) -> Box:
        return (self.x0, self.y0, self.x1, self.y1)


#: What a region of an image was judged to be; the review page and the audit use these
#: (one audit column each). The one list of classes: every other list derives from it.
REGION_CLASSES = ("text", "marker", "rule", "strict", "flagged", "left")
#: The classes that blank pixels; the others leave the region as it is.
BLANKING_CLASSES = ("text", "rule", "strict")


@dataclass(frozen=True)
class RegionRecord:
    """One judged region, in image coordinates (x0, y0, x1, y1), end-exclusive.

    ``kind`` is one of REGION_CLASSES: ``text`` blanked on evidence that it is text,
    ``marker`` kept (allow-listed or too small to identify anyone), ``rule`` blanked by a
    known-region rule, ``strict`` blanked by strict mode, ``flagged`` left in place but
    uncertain (for a human look: a reader half saw text), ``left`` left in place because
    every reader agreed it holds no text (an edge, a wire; counted, never listed for
    review). ``why`` is a short fixed phrase, never the words read.
    """

    box: Box
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
    boxes: list[Box] = field(default_factory=list)
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
    #: A colour image's are (rows, columns, 3) RGB, a palette image's are its indices.
    source: np.ndarray | None = None
    #: A palette image's colours, one row per stored index (``decoding.palette_table``).
    palette: np.ndarray | None = None
