"""Policy: what is blanked. Text, not strokes; markers kept; rules and strict mode.

``decide`` keeps allow-listed words (``rules.PixelOptions``), blanks every candidate line
where words are read with confidence, blanks whole lines in strict mode and leaves lines
nothing reads in place: ``flagged`` for a human look when a read came close to text
(``is_near``), else ``left`` (counted, not listed for review: on real films most such
lines are edges, wires and bone, which nothing reads). A region with room for two
characters at most (a side marker, an arrow) is kept without OCR: it cannot identify
anybody, and Tesseract reads lone letters poorly. Blanking uses the photometric minimum.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from cxr_dask.deid.pixels.types import Box, Region, Word, gap
from cxr_dask.deid.rules import PixelOptions

#: Tesseract confidence (0-100) a word needs to count as evidence that a line is text.
WORD_CONFIDENCE = 60.0
#: A word of three or more letters or digits read with this confidence, short of
#: evidence, is a near read: its line, if nothing else reads it, is flagged for review.
NEAR_CONFIDENCE = 55.0
#: ... and a two-character word this much.
SURE_CONFIDENCE = 85.0
#: At least this many one-character words in a row are one letter-spaced word (J O H N).
LETTER_SPACED_RUN = 3
#: A word this long (letters and digits) read this surely is text whatever else is near:
#: the boxes it lies in are blanked without asking the recogniser (``textrec``).
SURE_CHARACTERS = 4
SURE_WORD_CONFIDENCE = 80.0
#: A word read on a line that is text is blanked when its height is within this factor of
#: the evidence words' (junk read on anatomy merged into the line is not).
WORD_HEIGHT_RATIO = 2.0
#: An unread line of glyphs in a region read as text is blanked when within this many
#: line heights of a word read there (``beside_words``; words follow each other within
#: half a height, a letter-spaced word's letters are words of their own).
LINE_REACH = 1.0
#: A region more than this many line heights tall (wide, for a column) is no line nor
#: block of lines (twice the block the dense look reads, ``cleaning.DENSE_LINES``, with
#: room): it is anatomy the screen chained together, a film's whole chest at a rib's
#: height. A word read there is evidence for its own box only (``chained``).
CHAINED_LINES = 8
#: ... and the recogniser confirms that box only when it reads this many Latin letters or
#: digits there (``Decision.confirm``): on a COVID-19 film a word box over a clavicle and
#: the "L" tile beside it read as three characters at 63 to Tesseract and as two at 0.91
#: to the recogniser (one of them the L).
CHAINED_CHARACTERS = 3
CHAINED_WHY = "words read in chained anatomy"


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
            out.extend(dataclasses.replace(w, allowed=False, spaced=True) for w in run)
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
    alphanumeric, or one letter of a spaced word, on strokes of glyph contrast. Tesseract
    reads junk on anatomy too, short, symbol-laden and less sure, and words in noise."""
    if not word.stroked or word.confidence < WORD_CONFIDENCE or word.symbols * 3 > word.characters:
        return False
    if word.characters == 1:
        return word.spaced
    return word.characters >= 3 or word.confidence >= SURE_CONFIDENCE


def is_near(word: Word) -> bool:
    """A read that just missed evidence: three or more letters or digits, mostly
    alphanumeric, on strokes of glyph contrast, at ``NEAR_CONFIDENCE`` or more. A line
    nothing reads but that gave such a word is uncertain (a human looks); junk read on
    edges and bone is shorter, symbol-laden or less sure."""
    return (
        not is_evidence(word)
        and word.stroked
        and word.characters >= 3
        and word.symbols * 3 <= word.characters
        and word.confidence >= NEAR_CONFIDENCE
    )


def unread(words: list[Word]) -> Decision:
    """A line where no word is read with confidence: ``flagged`` when one came near
    (``is_near``), else ``left``. Both stay in place; later readers may still find text."""
    if any(is_near(w) for w in words):
        return Decision("flagged", "low-confidence read")
    return Decision("left", "no text read")


def is_unread(decision: Decision) -> bool:
    """A line left in place because nothing read text in it (so far)."""
    return decision.kind in ("flagged", "left")


def is_sure(word: Word) -> bool:
    """Evidence nobody doubts: four letters or digits read at 80 or more (junk on anatomy
    is short or unsure; a name, an id, a date is not)."""
    return (
        is_evidence(word)
        and not word.spaced
        and word.characters >= SURE_CHARACTERS
        and word.confidence >= SURE_WORD_CONFIDENCE
    )


def word_box(word: Word, shape: tuple[int, int], upright: bool = True) -> Box:
    """The word's box grown by a few pixels (anti-aliasing, OCR box jitter), inside the
    image: a tenth of its letters' height (its width when the word runs up or down)."""
    pad = 2 + ((word.y1 - word.y0) if upright else (word.x1 - word.x0)) // 10
    return (max(0, word.x0 - pad), max(0, word.y0 - pad), min(shape[1], word.x1 + pad), min(shape[0], word.y1 + pad))


@dataclass(frozen=True)
class Decision:
    """What happens to one candidate region: its class, a fixed reason, what is blanked."""

    kind: str  # one of REGION_CLASSES
    why: str
    blank: tuple[Box, ...] = ()
    keep: tuple[Word, ...] = ()
    #: how many of the first ``blank`` boxes are whole lines (allow-listed words inside
    #: them are restored); the others are word boxes, black wherever a margin overlaps them
    lines: int = 1
    #: boxes of sure words (``is_sure``): a blank box over one needs no recogniser's read
    sure: tuple[Box, ...] = ()
    #: Latin letters or digits the recogniser must read in a box to confirm it (0: its own
    #: ``textrec.MIN_CHARACTERS``)
    confirm: int = 0

    @property
    def redacts(self) -> bool:
        return bool(self.blank)


def decide(region: Region, words: list[Word], options: PixelOptions, shape: tuple[int, int]) -> Decision:
    """Blank text, not strokes: only words on a line with evidence of text are blanked.

    Strict mode blanks the whole region. A region with room for two characters at most is
    a marker. A line where no word is read with confidence is left in place (thin bright
    anatomy, wires and edges are what nobody can read), ``flagged`` or ``left``
    (``unread``); the second stage (``textdet``) may still find text there. On a line
    that is text, every word read that is not allow-listed is blanked, box by box, and
    allow-listed words stay (the recogniser then has the last word on the boxes no sure
    word backs: ``cleaning.confirm_reads``).
    """
    box = region.box
    if options.strict:
        return Decision("strict", "strict mode", (box,))
    if is_small(region):
        return Decision("marker", "too small to identify")
    if lone_code(words):  # a two-character code beside a marker: identifies nobody
        kept = tuple(w for w in words if w.allowed)
        return Decision("marker", "allow-listed", keep=kept) if any(map(is_evidence, kept)) else unread(words)
    evidence = [w for w in words if is_evidence(w)]
    if not evidence:
        return unread(words)
    if is_chained(region):
        return chained(evidence, words, shape)
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
    sure = tuple(word_box(w, shape) for w in evidence if is_sure(w))
    kept = tuple(w for w in words if w.allowed)
    if height * WORD_HEIGHT_RATIO < region.line_height:
        # words far smaller than the region's line height (a word in a region of anatomy
        # grouped by the anatomy's height): the region is no line of them; their boxes go
        if not blank:
            return Decision("marker", "allow-listed", keep=kept)
        return Decision("text", "words read", blank, kept, lines=0, sure=sure)
    # The line is text: the whole candidate line goes, allow-listed words restored. Word
    # boxes alone left text OCR did not box (dark text on a bright label, a second line
    # of a merged block) readable; the line's box is its glyphs plus a quarter height.
    return Decision("text", "words read", (box, *blank), kept, sure=sure)


def lone_code(words: list[Word]) -> bool:
    """Whether the line holds allow-listed words (a marker) and one other word only, read
    surely as two characters (``is_evidence``): a technologist's code such as "RS" beside
    a marker "L". Like a region with room for two characters, it identifies nobody: it
    is no evidence of text and is not blanked. (Two such words are text, a date or a time
    read in pieces; so is a code beside any other word, and a code alone: on a film scan
    a piece of a line the screen cut.)"""
    shown = [w for w in words if not w.allowed and w.characters]
    return any(w.allowed for w in words) and len(shown) == 1 and shown[0].characters == 2 and is_evidence(shown[0])


def is_chained(region: Region) -> bool:
    """A region too tall for a line or a block of lines (``CHAINED_LINES``): anatomy."""
    short = region.width if region.vertical else region.height
    return short > CHAINED_LINES * max(region.line_height, 1) + 8


def chained(evidence: list[Word], words: list[Word], shape: tuple[int, int]) -> Decision:
    """Words read with confidence in anatomy chained into one region: each is text on its
    own, its neighbours are not (in a region the size of the film, words of "its line
    height" are ribs read as junk, and its box is the film), and the recogniser confirms
    each box only with ``CHAINED_CHARACTERS`` (a word box that took in a side marker's
    tile with the bone beside it is not text)."""
    blank = tuple(word_box(w, shape) for w in evidence if not w.allowed)
    keep = tuple(w for w in words if w.allowed)
    if not blank:
        return Decision("marker", "allow-listed", keep=keep)
    sure = tuple(word_box(w, shape) for w in evidence if is_sure(w))
    return Decision("text", CHAINED_WHY, blank, keep, lines=0, sure=sure, confirm=CHAINED_CHARACTERS)


def beside_words(line: Box, words: tuple[Box, ...], height: int) -> bool:
    """Whether an unread line of glyphs lies within ``LINE_REACH`` line heights of a word
    read on its region (``words``: their boxes), or overlaps one.

    A region read as text is blanked line by line, lines OCR did not box included (text
    on a bright label, a block's second line: they sit next to the words read). A line
    of glyphs far from every word read is something else in the region: the ultrasound's
    probe icon beside its settings column, with the image's edge, where OCR read no word.
    """
    return any(gap(line, w) <= LINE_REACH * max(1, height) for w in words)


def with_ink(decision: Decision, lines: list[Box], words: list[Box]) -> Decision:
    """``decision`` with its line and word boxes replaced by the text lines found in them
    (``detection.ink_boxes``)."""
    return dataclasses.replace(decision, blank=(*lines, *words), lines=len(lines))


def redact_boxes(arr: np.ndarray, boxes: tuple[Box, ...], keep: tuple[Word, ...], black: int, lines: int = 1) -> None:
    """Black out ``boxes`` except the allow-listed words, restored from the original with
    the margin of a blanked word (OCR boxes cut anti-aliased edges); the first ``lines``
    boxes may be whole lines, the others are words, which stay black wherever a margin
    overlaps them."""
    kept = [word_box(w, arr.shape) for w in keep]
    original = [arr[y0:y1, x0:x1].copy() for x0, y0, x1, y1 in kept]
    for x0, y0, x1, y1 in boxes:
        arr[y0:y1, x0:x1] = black
    for (x0, y0, x1, y1), pixels in zip(kept, original, strict=True):
        arr[y0:y1, x0:x1] = pixels
    for x0, y0, x1, y1 in boxes[lines:] if keep else ():
        arr[y0:y1, x0:x1] = black


def is_small(region: Region) -> bool:
    """Room for two characters at most (a side marker, an arrow): identifies nobody, not OCRed.

    Measured in glyph heights, not the region's own height: a block of several short
    lines (an ultrasound's settings column) is as narrow as a marker but holds words.
    """
    if region.vertical:
        return region.height <= 1.6 * max(region.line_height, region.width / 2)
    return region.width <= 1.6 * max(region.line_height, region.height / 2)
