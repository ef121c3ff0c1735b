"""``clean``: one image through screen, decode, detect, OCR, text detector and policy.

The order keeps an image without text nearly free: a JPEG 2000 may be screened at half
resolution first, the detector runs on a downscaled copy, OCR and the text detector only
on candidates, the dense-page second look only on an image known to hold text.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from cxr_dask.deid.pixels import colour
from cxr_dask.deid.pixels.checks import check_supported, frames, is_colour
from cxr_dask.deid.pixels.decoding import (
    darkest_index,
    decode,
    decode_frames,
    j2k_preview,
    palette_table,
    photometric_black,
)
from cxr_dask.deid.pixels.detection import (
    DENSE_HEIGHT_RATIO,
    GLYPH_SHARE,
    INK_PAD,
    MIN_GLYPH_HEIGHT,
    SPLIT_CONTRAST,
    TOPHAT_SIZE,
    _merge_overlapping,
    _region,
    detect,
    detection_factor,
    ink_boxes,
    periodic_bars,
    preview_has_candidates,
    stroke_span,
)
from cxr_dask.deid.pixels.morphology import top_hat
from cxr_dask.deid.pixels.ocr import (
    MIRRORED_VIEWS,
    TURNED_VIEWS,
    View,
    _read_in_chunks,
    _views_in_chunks,
    holds_strokes,
    read_regions,
)
from cxr_dask.deid.pixels.policy import (
    CHAINED_WHY,
    LINE_REACH,
    WORD_CONFIDENCE,
    Decision,
    _letter_spaced,
    beside_words,
    decide,
    is_evidence,
    is_near,
    is_small,
    is_unread,
    redact_boxes,
    with_ink,
    word_box,
)
from cxr_dask.deid.pixels.types import (
    Box,
    PixelReport,
    PixelResult,
    Region,
    RegionRecord,
    Word,
    box_from_xywh,
    clipped,
    enclosing,
    within,
)
from cxr_dask.deid.pixels.types import gap as _gap
from cxr_dask.deid.pixels.types import inside as _inside
from cxr_dask.deid.rules import PixelOptions, RegionRule

if TYPE_CHECKING:
    from cxr_dask.deid.pixels.textrec import Reading

#: A region of a dense page is read when it is a block of this many lines at most (a
#: taller one is anatomy cut into pieces; read at a mixed scale in one montage, it spoils
#: Tesseract's reading of the lines around it).
DENSE_LINES = 4
#: A candidate block this many line heights tall or more goes to the text detector
#: first, and Tesseract reads it only when the detector sees text there: such blocks
#: are mostly anatomy cut into lines (a film's grid texture, bone over a lung field),
#: where Tesseract reads only junk, and they were most of its time (on the 52 labelled
#: bench images with text: 3.3 of 6.0 s read one by one, no evidence of text lost).
GATED_LINES = 4
#: A first-pass decision from the text detector's boxes alone (``_holds_text``); its
#: other decisions' reasons begin with it.
DETECTOR_WHY = "text detector"
#: On a dense page, a line of glyphs this high (share of the text detector's box, which
#: is grown around the text it finds) beside text the detector found is text too.
DETECTED_SIZE = (0.3, 1.2)
#: A page with this many lines read as text on the dense look is a film scan's page of
#: annotation blocks (NEMA's SC1: 144; the bench's chest films and figures: 2 at most):
#: there a line is not shown to a reader again that one has seen already.
DENSE_PAGE = 32
#: ... and a text detector's box beside anatomy that much covered by words the page's
#: lines read surely is not read by OCR again (``_markers_beside``).
READ_ALREADY = 0.9
#: A component too tall for a glyph (``detection.detect``'s ``big``) this much covered by
#: lines read surely as text on a dense page is a block of them, not anatomy.
BIG_COVERED = 0.5
#: Text boxes of at most this many line heights (lines, words) extend to unread lines of
#: their block (``_in_block``); a taller one is a first-pass region of anatomy and text.
BLOCK_HEIGHT = 2
#: A word box is cut down to the strokes in it only when they span this share of its width.
WORD_COVERED = 0.8
#: Up to this many text boxes in an image, every one is read by the recogniser (markers
#: Tesseract misread are kept); beyond it only those no sure word backs (``confirm_reads``).
READ_ALL = 32
#: ... and of those sure words back, only the ones short enough to be a marker (width
#: at most this many times the height: "SEMI-ERECT" is about 6, a name banner 20).
MARKER_ASPECT = 8
#: A word read turned or mirrored (``_read_turned``) counts with this many letters or
#: digits, read so by Tesseract and by the recogniser: on a film's ridge texture two-letter
#: junk came through both (Tesseract at 92, the recogniser at 0.96) in one of three views.
TURNED_CHARACTERS = 3
#: ... in a flagged region at most this share of the image a side: a word chained to a
#: marker or a code is a corner's worth (talo's NIH films: 0.08-0.16); a flagged region
#: over a quarter of the film a side is anatomy chained together, where three more views
#: read nothing and cost seconds (Hannover's bedside films: up to 15 s a film).
TURNED_SIDE = 0.25
#: A box narrower than this many times its height (and not a column) has one glyph's
#: room: it cannot hold the two characters the recogniser needs.
ONE_GLYPH = 1.2
#: A blanked box's edge that cuts through a component of ink this high at most (in glyph
#: heights: the tallest component inside the box), ...
CUT_GLYPH = 1.25
#: ... that lies outside the box by this share of its height or width, grows over it: the
#: top halves of a line's letters above a blanked line were left readable.
CUT_OUTSIDE = 0.25
#: A line nothing read is flagged for a human look when two glyphs of ink in it sit side
#: by side (``ink_in_a_row``: letters no reader made out, "AP" a hand high, "PORTATIL" in
#: a region merged with a shoulder), or when the recogniser reads a line with one as text
#: or nearly. A glyph of ink is this high, in line heights, and at least ``MIN_GLYPH``
#: pixels (a letter, not a speck or a rib) ...
INK_GLYPH_HEIGHT = (0.25, 1.6)
MIN_GLYPH = 8
#: ... at most this many times as wide as high (not a wire or an edge) ...
INK_GLYPH_SHAPE = 3
#: ... and two side by side differ in height by this factor at most.
INK_HEIGHT_RATIO = 1.5


def confirm_text(regions: list[Region], arr: np.ndarray) -> list[list[Box]]:
    """Second stage on regions OCR could not read: text boxes from a text detector, if any.

    Without the detector's packages every region stays flagged (left in place). A box
    that holds a ruler's tick marks only (``detection.periodic_bars``) is no text.
    """
    from cxr_dask.deid.pixels import textdet

    found = textdet.text_boxes(arr, [r.box for r in regions], [r.line_height for r in regions])
    return [[b for b in boxes if not periodic_bars(arr, b)] for boxes in found]


def dense_lines(
    arr: np.ndarray,
    window: float | None,
    options: PixelOptions,
    regions: list[Region],
    decisions: list[Decision],
    screen: dict[str, Any] | None = None,
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
    lines are not recorded: they lie in regions the first pass judged already. ``screen``
    holds what the first screen of ``arr`` labelled (``detection.detect``).
    """
    blanked = np.zeros(arr.shape, dtype=bool)
    for first, decision in zip(regions, decisions, strict=True):
        if decision.kind == "text":
            # (anatomy chained into one region with words read in it was judged whole:
            # its lines read again at their own height are the anatomy's, and a block of
            # them read as words on a Hannover film's abdomen was blanked, 15% of it)
            chained = decision.why == CHAINED_WHY
            for x0, y0, x1, y1 in (first.box,) if chained else decision.blank:
                blanked[y0:y1, x0:x1] = True
    big: list[Box] = []
    span = stroke_span(arr, window)
    found = [
        r
        for r in _split_blocks(arr, detect(arr, window, dense=True, big=big, screen=screen), window, span)
        if not is_small(r)
        and not r.vertical
        and r.height <= DENSE_LINES * r.line_height + 8
        and blanked[r.y0 : r.y1, r.x0 : r.x1].mean() < 0.9
        and not any(_judged(r, first) for first, d in zip(regions, decisions, strict=True) if d.kind != "text")
    ]
    # a line found twice (one box in two groups of line heights, or a block's line cut out
    # of it and found on its own too) is read once: SC1 read 10 of its 275 lines twice
    first_found: dict[Box, Region] = {}
    for r in found:
        first_found.setdefault(r.box, r)
    found = list(first_found.values())
    out = []
    unread = []
    for region, words in zip(found, _read_in_chunks(arr, found, options, span), strict=True):
        decision = decide(region, words, options, arr.shape)
        if decision.kind == "text" and 2 * sum(is_evidence(w) for w in words) >= len(words):
            # most words read are evidence: a line holding a sure word is as sure as it
            # (the recogniser need not read the ~400 boxes of a film scan's pages again);
            # evidence short of sure (three characters at 60 on an MR's vertebra, a line
            # of one word) leaves the recogniser the last word, as everywhere else
            sure = (*decision.sure, region.box) if decision.sure and decision.lines else decision.sure
            out.append((region, dataclasses.replace(decision, why="words read on a dense page", sure=sure)))
        elif decision.kind == "text" or is_unread(decision):
            unread.append(region)
    heights = [r.line_height for r, d in out if d.why == "words read on a dense page" and d.lines]
    # a component too tall for a glyph that lines read surely as text mostly cover (sure
    # words back them: blanked unless the recogniser reads a marker) is a block of those
    # lines whose strokes joined, not anatomy a label touches (SC1: 20 of 48 components,
    # each line of theirs found and read once more there); its other lines were shown to
    # the detector as unread lines. (Boxes read unsure do not count: on a held-out film
    # the recogniser vetoed some, and only the look beside anatomy blanked a device block.)
    read_surely = np.zeros(arr.shape, dtype=bool)
    for _, d in out:
        for x0, y0, x1, y1 in d.sure:
            read_surely[y0:y1, x0:x1] = True
    big = [box for box in big if read_surely[box[1] : box[3], box[0] : box[2]].mean() < BIG_COVERED]
    # on a page of many lines of text (a film scan's annotation) a line is not read twice:
    # the detector's boxes beside anatomy that its lines read surely cover are not read by
    # OCR again, and an unread line inside a crop the detector saw there was looked at
    # already, at the page's text height (SC1 showed it 30 such lines once more, one boxed)
    page = len(heights) >= DENSE_PAGE
    crops: list[Box] = []
    sure_words = tuple(box for _, d in out for box in d.sure) if page else ()
    beside = _beside_anatomy(arr, big, heights, options, span, crops, sure_words)
    # what OCR could not read, the text detector sees at the line's own scale
    # and the region's other lines of glyphs of the size of the text it boxed go too (in a
    # block whose lines the screen merged, it boxed one line of three; anatomy cut into
    # the region is taller). A line without a stroke of glyph contrast is no line of text
    # (the screen's test for a glyph: ``detection.MIN_STRONG``; nothing read there could
    # be evidence, ``ocr.holds_strokes``): on a chest film the dense look cuts anatomy
    # into ~100 lines a few pixels high, most of them such, shown to the detector at 4x.
    stroked = [region for region in unread if holds_strokes(arr, region, span)]
    if page:
        stroked = [r for r in stroked if not any(_inside(r.box, crop) for crop in crops)]
    for region, boxes in zip(stroked, confirm_text(stroked, arr), strict=True):
        if boxes:
            tall = max(y1 - y0 for _, y0, _, y1 in boxes)
            # (a "line" cut by the region's top or bottom is a structure that goes on
            # beyond it: a skull's rim above a ruler and a label, not a line of the block;
            # a lone glyph is no line either: the circled "L" beside "Bettaufnahme")
            lines = [
                ink
                for ink in ink_boxes(arr, region.box, region.line_height, region.bright, window, span)
                if DETECTED_SIZE[0] * tall <= ink[3] - ink[1] <= DETECTED_SIZE[1] * tall
                and region.y0 < ink[1]
                and ink[3] < region.y1
                and ink[2] - ink[0] >= ONE_GLYPH * (ink[3] - ink[1])
            ]
            blank = (*boxes, *lines)
            out.append((region, Decision("text", "text detector on a dense page", blank, lines=len(blank))))
    # a line nothing reads, in a block beside lines found to be text, is a line of that
    # block (a slice thickness such as "5mm" above an id, read by neither OCR nor the
    # detector on its own)
    texts = [
        box
        for first, d in (*zip(regions, decisions, strict=True), *out)
        if d.kind == "text"
        for box in d.blank
        if box[3] - box[1] <= BLOCK_HEIGHT * first.line_height + 8
    ]
    out += beside
    # (beside a line found to be text, not beside another line only taken for one of its
    # block: chained that way, lines walked down from a label into the anatomy under it, a
    # clavicle under "MOBILE", a bedside film's ribs; none of 15 such lines on the 705
    # bench, held-out and Hannover files read as text, each read, flagged and read turned)
    rest = [r for r in unread if not any(r is region for region, _ in out)]
    text_boxes = np.array(texts, dtype=np.int64).reshape(-1, 4)
    out += [(r, Decision("text", "line of a text block", (r.box,))) for r in rest if _in_block(r, text_boxes).any()]
    return _keep_markers(out, decisions)


def _keep_markers(out: list[tuple[Region, Decision]], decisions: list[Decision]) -> list[tuple[Region, Decision]]:
    """Second-look decisions with the allow-listed words the first pass read in their
    region kept: a detector box cut across "AP ERECT" on a film where the screen's line
    (read as the markers it is) and the dense line differ, and "P ERE" read as text."""
    kept = [w for d in decisions for w in d.keep]
    if not kept:
        return out
    result = []
    for region, decision in out:
        words = tuple(w for w in kept if _gap(region.box, (w.x0, w.y0, w.x1, w.y1)) < 0)
        if not words:
            result.append((region, decision))
            continue
        # a box the kept words span (``WORD_COVERED``) is those words: it goes, not just
        # the slivers between them
        blank = []
        for k, box in enumerate(decision.blank):
            covered = np.zeros(box[2] - box[0], dtype=bool)
            for w in words:
                if _gap(box, (w.x0, w.y0, w.x1, w.y1)) < 0:
                    covered[max(0, w.x0 - box[0]) : max(0, w.x1 - box[0])] = True
            if covered.mean() < WORD_COVERED:
                blank.append((k, box))
        if not blank:
            result.append((region, Decision("marker", "allow-listed", keep=words)))
            continue
        lines = sum(k < decision.lines for k, _ in blank)
        boxes = tuple(box for _, box in blank)
        result.append((region, dataclasses.replace(decision, blank=boxes, lines=lines, keep=(*decision.keep, *words))))
    return result


def _beside_anatomy(
    arr: np.ndarray,
    big: list[Box],
    heights: list[int],
    options: PixelOptions | None = None,
    span: float | None = None,
    crops: list[Box] | None = None,
    read_surely: tuple[Box, ...] = (),
) -> list[tuple[Region, Decision]]:
    """Labels that touch anatomy, from the text detector on the anatomy's surround.

    On a film scan a slice label ("A114") sits on a skull's rim: at detection scale its
    strokes join the bone into one component too tall for a glyph, so no line holds it.
    On a page known to hold text (``heights``: its lines read as text), each such
    component (``detection.detect``'s ``big``), grown by a line height, goes to the text
    detector at the page's text height; its boxes are text. They are word boxes for
    ``_hug``: one the glyphs do not span (the label's strokes merged with the bone)
    stays whole. A side or position marker touching anatomy stays as anywhere else
    (``_markers_beside``): boxes with room for two characters, and boxes whose words
    are all allow-listed, are kept. ``crops`` gets the crops shown to the detector;
    ``read_surely``, the boxes of words the page's lines read surely (``Decision.sure``).
    """
    if not big or not heights:
        return []
    from cxr_dask.deid.pixels import textdet

    height = int(np.percentile(heights, 90))  # labels are often the page's largest text
    rows, columns = arr.shape
    grown = [
        ((max(0, x0 - height), max(0, y0 - height), min(columns, x1 + height), min(rows, y1 + height)), 1, 0, False)
        for x0, y0, x1, y1 in big
    ]
    boxes = [box for box, *_ in _merge_overlapping(grown)]
    if crops is not None:
        crops.extend(boxes)
    sizes = [height] * len(boxes)
    found_per_box = textdet.text_boxes(arr, boxes, sizes, sizes)
    options = options or PixelOptions()
    span = stroke_span(arr) if span is None else span
    found_here = [b for found in found_per_box for b in found]
    kept, sure = _markers_beside(arr, found_here, height, options, span, read_surely)
    out = []
    for box, found in zip(boxes, found_per_box, strict=True):
        lines = tuple(b for b in found if kept.get(b))  # text beside an allow-listed word
        words = tuple(b for b in found if b not in kept)
        if lines or words:
            keep = tuple(w for b in lines for w in kept[b])
            backing = tuple(w for b in (*lines, *words) for w in sure.get(b, ()))
            region = dataclasses.replace(_region(arr, box, len(lines) + len(words), height), line_height=height)
            why = "text detector beside anatomy"
            out.append((region, Decision("text", why, (*lines, *words), keep=keep, lines=len(lines), sure=backing)))
    return out


def _markers_beside(
    arr: np.ndarray,
    found: list[Box],
    height: int,
    options: PixelOptions,
    span: float,
    read_surely: tuple[Box, ...] = (),
) -> tuple[dict[Box, tuple[Word, ...]], dict[Box, tuple[Box, ...]]]:
    """The text detector's boxes beside anatomy that hold a marker, judged by the policy
    (``policy.decide``): box -> the allow-listed words to keep in it (empty: keep the
    whole box); and box -> the sure words OCR read in it (``Decision.sure``: such a box
    needs no recogniser's read; on a film scan most of them). Each box is read by OCR
    (one call for the page) at the page's text height, in the polarity its padded
    surround gives. A box that words read surely on the page's lines (``read_surely``)
    cover is not read again: they back it (a film scan's labels beside its skulls are
    mostly lines of its annotation blocks, read already)."""
    regions = []
    backed = _read_already(found, read_surely)
    for x0, y0, x1, y1 in found:
        pad = max(2, height // 4)
        padded = (max(0, x0 - pad), max(0, y0 - pad), min(arr.shape[1], x1 + pad), min(arr.shape[0], y1 + pad))
        regions.append(dataclasses.replace(_region(arr, padded, 1, height), line_height=height))
    out: dict[Box, tuple[Word, ...]] = {}
    sure: dict[Box, tuple[Box, ...]] = {}
    to_read = [r for box, r in zip(found, regions, strict=True) if not is_small(r) and box not in backed]
    read = dict(zip(to_read, read_regions(arr, to_read, options, span), strict=True)) if to_read else {}
    for box, region in zip(found, regions, strict=True):
        decision = decide(region, read.get(region, []), options, arr.shape)
        if decision.kind == "marker":
            out[box] = ()
        elif decision.kind == "text" and decision.keep:
            out[box] = decision.keep
        if decision.kind == "text" and decision.sure:
            sure[box] = decision.sure
    sure.update(backed)
    return out, sure


def _read_already(found: list[Box], read_surely: tuple[Box, ...]) -> dict[Box, tuple[Box, ...]]:
    """Of ``found``, the boxes ``READ_ALREADY`` covered by the word boxes ``read_surely``,
    each with those of them it holds most of or lies in (``confirm_reads``'s backing).
    Coverage is counted in each box alone, from the words that meet it."""
    out: dict[Box, tuple[Box, ...]] = {}
    if not read_surely:
        return out
    for box in found:
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            continue
        meeting = [w for w in read_surely if w[0] < x1 and w[2] > x0 and w[1] < y1 and w[3] > y0]
        covered = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for wx0, wy0, wx1, wy1 in meeting:
            covered[max(0, wy0 - y0) : wy1 - y0, max(0, wx0 - x0) : wx1 - x0] = True
        if covered.mean() >= READ_ALREADY:
            held = tuple(word for word in meeting if _covers(box, word) or _inside(box, word))
            if held:
                out[box] = held
    return out


def _in_block(line: Region, texts: np.ndarray) -> np.ndarray:
    """Whether ``line`` sits right above or below each text box of ``texts`` (rows of
    x0, y0, x1, y1), of about its height, over the same columns: the next line of one
    block. (Vectorised: a film scan has hundreds of unread lines and text boxes.)"""
    x0, y0, x1, y1 = texts.T
    gap = np.maximum(y0 - line.y1, line.y0 - y1)
    common = np.minimum(x1, line.x1) - np.maximum(x0, line.x0)
    tall = y1 - y0
    return (
        (gap <= line.line_height // 2)
        & (common >= 0.5 * np.minimum(x1 - x0, line.width))
        & (tall <= DENSE_HEIGHT_RATIO * line.height)
        & (line.height <= DENSE_HEIGHT_RATIO * tall)
    )


def _split_blocks(
    arr: np.ndarray, found: list[Region], window: float | None, span: float | None = None
) -> list[Region]:
    """Blocks a little taller than ``DENSE_LINES`` lines, cut into their lines of glyphs.

    A block of three text lines beside a skull took in a piece of the bone and was one
    pixel over the limit (81 against 80 on ``SC1``): it was never read, and its lines
    (a diagnosis, an id, a date) stayed. Such a block (at most twice the limit) is cut
    into the lines ``detection.ink_boxes`` finds in it, each read on its own; anything
    taller is anatomy strung together and stays out. A line of ink lower than the screen's
    smallest glyph (``MIN_GLYPH_HEIGHT`` detection pixels) is specks: read by OCR and shown
    to the text detector, a chest film's block of anatomy cut into ~50 of them cost as
    much as the rest of the dense look. One taller than the screen's tallest glyph
    (``GLYPH_SHARE`` of the rows) is anatomy too: on a Hannover bedside film a "line" of
    126 of 524 rows, boxed by the detector at 0.2x, chained 17 lines of ribs to it, each
    read by the recogniser and turned by Tesseract (~0.5 s, nothing confirmed).
    """
    lowest = MIN_GLYPH_HEIGHT * detection_factor(*arr.shape)
    tallest = GLYPH_SHARE * arr.shape[0]
    out = []
    for r in found:
        limit = DENSE_LINES * r.line_height + 8
        if r.vertical or r.height <= limit or r.height > 2 * limit:
            out.append(r)
            continue
        for x0, y0, x1, y1 in ink_boxes(arr, r.box, r.line_height, r.bright, window, span):
            height = y1 - y0 - 2 * INK_PAD
            if height > 2 * r.line_height or not lowest <= height <= tallest or (x0, y0, x1, y1) == r.box:
                continue
            pad = max(2, height // 4)
            box = (max(r.x0, x0 - pad), max(r.y0, y0 - pad), min(r.x1, x1 + pad), min(r.y1, y1 + pad))
            out.append(dataclasses.replace(r, x0=box[0], y0=box[1], x1=box[2], y1=box[3], line_height=max(1, height)))
    return out


def _judged(line: Region, first: Region) -> bool:
    """Whether a first-pass region was about ``line`` itself (read and judged as it is)."""
    width = min(line.x1, first.x1) - max(line.x0, first.x0)
    height = min(line.y1, first.y1) - max(line.y0, first.y0)
    common = max(0, width) * max(0, height)
    return common >= 0.8 * line.width * line.height and common >= 0.8 * first.width * first.height


def _hug(
    arr: np.ndarray, region: Region, decision: Decision, window: float | None, span: float | None = None
) -> Decision:
    """A text decision whose boxes (the padded candidate line, the text detector's
    unclipped boxes, OCR's word boxes with their margin) are cut down to the text lines
    inside them (``detection.ink_boxes``): a redaction hugs its glyphs."""
    if decision.kind != "text":
        return decision

    def ink(boxes: tuple[Box, ...], whole_unless_spanned: bool) -> list[Box]:
        out = []
        for box in boxes:
            found = ink_boxes(arr, box, region.line_height, region.bright, window, span)
            # a word OCR read, or a line the text detector boxed, whose letters the
            # strokes do not span (a glyph touching bone, a faint one, white letters
            # outlined in black over tissue) keeps its whole box
            covered = np.zeros(box[2] - box[0], dtype=bool)
            for x0, _, x1, _ in found:
                covered[x0 - box[0] : x1 - box[0]] = True
            out += [box] if whole_unless_spanned and covered.mean() < WORD_COVERED else found
        return out

    lines = ink(decision.blank[: decision.lines], decision.why.startswith(DETECTOR_WHY))
    words = decision.blank[decision.lines :]
    if decision.why == "words read" and words:  # lines far from every word read are no text of it
        lines = [line for line in lines if beside_words(line, words, region.line_height)]
    return with_ink(decision, lines, ink(words, True))


def confirm_reads(arr: np.ndarray, decisions: list[Decision], options: PixelOptions) -> list[Decision]:
    """Text boxes are read by the recogniser (``textrec``): a box no sure word backs is
    blanked only when it reads as text, and none is blanked when it reads as allow-listed
    words only. A decision left with no box stays in place: ``flagged`` when a box read
    as unsure (``textrec.Reading.is_unsure``) or was never read, else ``left``.

    Junk Tesseract read on anatomy, the text detector's boxes on a scalp, a clavicle's
    ink beside "ERECT": none reads as text. "ERECT" misread by Tesseract in a montage
    ("RECT" at 85) reads as the marker it is; a word box inside a box read as a marker is
    a piece of it. What is not read (the recogniser costs about 0.1 ms a column of its
    48-pixel-high input): a box of one glyph's room (it cannot hold two characters; it
    is blanked when a box of its decision within a line height is), a box inside a bigger
    box of its decision already confirmed (blanked with it), a box inside a box another
    decision blanks whole (its pixels go anyway), and a box sure words back that is too
    long to be a marker (``MARKER_ASPECT``) or on a page of more than ``READ_ALL`` boxes.
    """
    from cxr_dask.deid.pixels import textrec

    boxes = [(i, k) for i, d in enumerate(decisions) if d.kind == "text" for k in range(len(d.blank))]
    if not boxes or not textrec.available():
        return decisions

    def backed(i: int, k: int) -> bool:
        box = decisions[i].blank[k]
        return any(_covers(box, sure) or _inside(box, sure) for sure in decisions[i].sure)

    def containers(i: int, k: int) -> list[int]:
        box = decisions[i].blank[k]
        return [j for j, other in enumerate(decisions[i].blank) if other != box and _inside(box, other)]

    verdict: dict[tuple[int, int], bool] = {}
    markers: set[tuple[int, int]] = set()
    nothing: set[tuple[int, int]] = set()  # read surely as no text
    first: list[tuple[int, int]] = []
    later: list[tuple[int, int]] = []
    glyphs: list[tuple[int, int]] = []
    for i, k in boxes:
        x0, y0, x1, y1 = decisions[i].blank[k]
        width, height = x1 - x0, y1 - y0
        if backed(i, k) and (len(boxes) > READ_ALL or width > MARKER_ASPECT * height):
            verdict[(i, k)] = True
        elif width < ONE_GLYPH * height and height < 3 * width:
            glyphs.append((i, k))
        else:
            (later if containers(i, k) else first).append((i, k))

    def judge(asks: list[tuple[int, int]]) -> None:
        readings = textrec.read(arr, [decisions[i].blank[k] for i, k in asks], options.is_allowed)
        for (i, k), reading in zip(asks, readings, strict=True):
            enough = reading.latin >= decisions[i].confirm
            verdict[(i, k)] = (backed(i, k) or (reading.is_text and enough)) and not reading.is_marker
            if reading.is_marker:
                markers.add((i, k))
            elif not reading.is_unsure and enough:  # text too short for its decision: a human looks
                nothing.add((i, k))

    def blanked_by_another(asks: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """``asks`` less the boxes that lie inside a box another decision blanks whole
        (confirmed, and nothing of it restored): their pixels go whatever they read (on a
        film scan the detector's lines and the boxes beside anatomy overlap the dense
        page's lines read as text). Those are confirmed without a read."""
        whole = [(j, m) for (j, m), v in verdict.items() if v and not decisions[j].keep]
        if not whole or not asks:
            return asks
        outer = np.array([decisions[j].blank[m] for j, m in whole])
        owner = np.array([j for j, _ in whole])
        left = []
        for i, k in asks:
            if (within(decisions[i].blank[k], outer) & (owner != i)).any():
                verdict[(i, k)] = True
            else:
                left.append((i, k))
        return left

    judge(blanked_by_another(first))
    unsettled = []
    for i, k in later:
        around = containers(i, k)
        if any((i, j) in markers for j in around):
            verdict[(i, k)] = False  # a piece of a marker ("RECT" of "ERECT")
            nothing.add((i, k))
        elif any(verdict.get((i, j)) for j in around):
            verdict[(i, k)] = True  # blanked with the box it lies in
        else:
            unsettled.append((i, k))
    judge(blanked_by_another(unsettled))
    # a glyph's box goes with text of its decision within a line height ("PM" of a time
    # whose digits OCR boxed apart); alone, or far from it (an ultrasound probe's "P"
    # icon beside the settings column), it stays
    for i, k in glyphs:
        box = decisions[i].blank[k]
        reach = LINE_REACH * (box[3] - box[1])
        verdict[(i, k)] = backed(i, k) or any(
            v and _gap(box, decisions[j].blank[m]) <= reach for (j, m), v in verdict.items() if j == i
        )
    out = []
    for i, d in enumerate(decisions):
        if d.kind != "text":
            out.append(d)
            continue
        kept = [k for k in range(len(d.blank)) if verdict.get((i, k), True)]
        if not kept:
            out.append(_not_confirmed([(i, k) in nothing or (i, k) in markers for k in range(len(d.blank))]))
            continue
        out.append(dataclasses.replace(d, blank=tuple(d.blank[k] for k in kept), lines=sum(k < d.lines for k in kept)))
    return out


def _keep_across(decisions: list[Decision]) -> list[Decision]:
    """Text decisions with the allow-listed words other decisions read with confidence
    (``WORD_CONFIDENCE``) inside their line boxes kept too.

    One place is judged by several decisions (the first pass, the dense look, the text
    detector), and each restores only the words it read itself: a circled "L" beside
    "liegend", read as a marker on the dense look's line, lay in the first pass's text
    detector box, which took the word and the ring together, and was blanked. A kept word
    restores only what the decision it joins blanked (``redact_boxes``), never another
    decision's black, and never over a word box of its own (read as text).
    """
    kept = [w for d in decisions if d.kind in ("text", "marker") for w in d.keep if w.confidence >= WORD_CONFIDENCE]
    if not kept:
        return decisions
    out = []
    for d in decisions:
        lines, words = d.blank[: d.lines], d.blank[d.lines :]
        more = tuple(
            w
            for w in kept
            if w not in d.keep
            and any(_gap(line, w.box) < 0 for line in lines)
            and not any(_gap(word, w.box) < 0 for word in words)
        )
        out.append(dataclasses.replace(d, keep=(*d.keep, *more)) if d.kind == "text" and more else d)
    return out


def _spare_kept(arr: np.ndarray, regions: list[Region], decisions: list[Decision]) -> list[Decision]:
    """Text decisions whose word boxes stop short of an allow-listed word read at their
    edge glyph: a code's box (or junk read over a whole column) that took in the "L"
    beside it blacked the marker out, a word box staying black over the kept words it
    overlaps (``redact_boxes``). The box stops in the gap before that glyph."""
    out = []
    for region, d in zip(regions, decisions, strict=True):
        if d.kind != "text" or not d.keep or len(d.blank) == d.lines:
            out.append(d)
            continue
        words = list(d.blank[: d.lines])
        for box in d.blank[d.lines :]:
            kept = [w.box for w in d.keep if _gap(box, w.box) < 0]
            for glyph, limit in _edge_glyphs(arr, box, region.bright, not region.vertical) if kept else []:
                if any(_inside_middle(glyph, k) for k in kept):
                    box = clipped(box, limit)
            words.append(box)
        out.append(dataclasses.replace(d, blank=tuple(words)))
    return out


def _spare_line_ends(
    arr: np.ndarray, regions: list[Region], decisions: list[Decision], options: PixelOptions
) -> list[Decision]:
    """Text decisions over a column whose boxes stop short of a side marker at its end.

    A line box blanks its line whole (``_hug``): an upright "L" stacked under a code
    written top-down was one more glyph of the column, and the line and word boxes over
    it blacked the marker out. The column's first or last glyph (``_edge_glyphs``; its
    line boxes are its glyphs, taken together) is spared when the recogniser reads it
    alone as a one-letter marker while the rest still reads as text turned
    (``_turned_text``): every box of the decision over that glyph stops in the gap
    before it. A line's kept allow-listed words are restored over its line boxes already
    (``redact_boxes``); an upright line's end glyph read as a marker may be a letter of
    its word, so only columns are looked at.
    """
    from cxr_dask.deid.pixels import textrec

    out = list(decisions)
    columns = [
        i
        for i, (r, d) in enumerate(zip(regions, decisions, strict=True))
        if d.kind == "text" and d.lines and r.vertical
    ]
    if not columns or not textrec.available():
        return decisions
    for i in columns:
        d = decisions[i]
        column = enclosing(d.blank[: d.lines])
        ends = _edge_glyphs(arr, column, regions[i].bright, False)
        markers = _read_as_markers(arr, [glyph for glyph, _ in ends], (0, False), options)
        candidates = [(glyph, limit) for glyph, limit in ends if glyph in markers]
        rests = [clipped(column, limit) for _, limit in candidates]
        text = [False] * len(rests)
        for view in (*MIRRORED_VIEWS, (1, False), (3, False)):
            ask = [k for k, is_text in enumerate(text) if not is_text]
            if not ask:
                break
            for k, reading in zip(
                ask, textrec.read(arr, [rests[k] for k in ask], options.is_allowed, view), strict=True
            ):
                text[k] = _turned_text(reading)
        limits = [end for end, is_text in zip(candidates, text, strict=True) if is_text]
        if not limits:
            continue
        blank: list[Box] = []
        line_count = 0
        for k, box in enumerate(d.blank):
            for glyph, limit in limits:
                if _inside_middle(glyph, box):
                    box = clipped(box, limit)
            if box[0] < box[2] and box[1] < box[3]:
                blank.append(box)
                line_count += k < d.lines
        out[i] = dataclasses.replace(d, blank=tuple(blank), lines=line_count)
    return out


def _inside_middle(glyph: Box, box: Box) -> bool:
    """Whether the middle of ``glyph`` lies inside ``box``."""
    x, y = (glyph[0] + glyph[2]) // 2, (glyph[1] + glyph[3]) // 2
    return box[0] <= x < box[2] and box[1] <= y < box[3]


def _grow_over_cut_glyphs(
    arr: np.ndarray, regions: list[Region], decisions: list[Decision], span: float, options: PixelOptions
) -> list[Decision]:
    """Text decisions with the glyphs of ink their boxes cut through blanked whole.

    A box hugs the lines it was read on; a glyph of a line beside it that reaches into
    it or sits on its edge was cut in two or left whole: on Clunie's SMPTE patterns the
    letters of "SMPTE", on the top edge of the blanked line below and touching a grid
    line (so no line box held them), stayed readable. Each component of ink
    (``_cut_glyphs``) a blanked box's edge cuts through or runs along is blanked too, as
    a box of its own a few pixels around it: of glyph size (``CUT_GLYPH``; not a wire, a
    rib edge or a bone, which run on beyond the box's surround), out of the box by
    ``CUT_OUTSIDE`` of its size, touching no kept word or marker region, and not a lone
    glyph (none of the others cut beside it) the recogniser reads alone as a one-letter
    marker (a side marker beside a word stays; the "L" of a name cut with its line goes).
    A lone glyph whose grown box the text decisions black out anyway (``_blanked``: on a
    film scan most cut glyphs lie in a line of the block above or below) is not read:
    grown over or not, no pixel changes.
    """
    from cxr_dask.deid.pixels import textrec

    kept = [w.box for d in decisions for w in d.keep]
    kept += [r.box for r, d in zip(regions, decisions, strict=True) if d.kind == "marker"]
    found: dict[int, list[tuple[Box, Box]]] = {}
    for i, (region, decision) in enumerate(zip(regions, decisions, strict=True)):
        if decision.kind == "text":
            for box in decision.blank:
                found.setdefault(i, []).extend(
                    (part, grown)
                    for part, grown in _cut_glyphs(arr, box, region.bright, span)
                    if not any(_gap(part, k) < 0 for k in kept) and grown not in decision.blank
                )
    # a letter of a line cut in a row with others ("L" of a name) is no side marker: only
    # the glyphs cut alone are read (the recogniser's two views cost ~0.17 s a film)
    lone = {
        i: {p for p, _ in cut if not any(ink_in_a_row([p, q]) for q, _ in cut if q != p)} for i, cut in found.items()
    }
    read_alone = set().union(*lone.values())
    pairs = dict.fromkeys(pair for cut in found.values() for pair in cut)
    if read_alone and textrec.available():
        black = _blanked(arr.shape, decisions)
        read_alone -= {part for part, grown in pairs if black[grown[1] : grown[3], grown[0] : grown[2]].all()}
    parts = [part for part, _ in pairs if part in read_alone]
    markers = _read_as_markers(arr, parts, (0, False), options) if parts and textrec.available() else set()
    out = list(decisions)
    for i, cut in found.items():
        alone = lone[i] & markers
        more = tuple(dict.fromkeys(grown for part, grown in cut if part not in alone))
        if more:
            out[i] = dataclasses.replace(decisions[i], blank=(*decisions[i].blank, *more))
    return out


def _blanked(shape: tuple[int, ...], decisions: list[Decision]) -> np.ndarray:
    """The pixels the text decisions black out (as ``redact_boxes`` does, each in turn: kept
    words restored, word boxes black again over them): 1, else 0."""
    mask = np.zeros(shape[:2], dtype=np.uint8)
    for d in decisions:
        if d.kind == "text":
            redact_boxes(mask, d.blank, d.keep, 1, d.lines)
    return mask


def _cut_glyphs(arr: np.ndarray, box: Box, bright: bool, span: float) -> list[tuple[Box, Box]]:
    """The components of ink ``box``'s edge cuts through (or runs along): each one's box,
    and that box grown by the pad of a word box of its height. Ink: the strokes (top-hat
    in the box's polarity, the window of ``inked_glyphs``) over ``SPLIT_CONTRAST`` of the
    range, in the box grown by its smaller side. The line's glyph height is that of the
    tallest component inside the box (none: nothing grows); a component that reaches
    the edge of the surround is no glyph."""
    from scipy import ndimage

    rows, columns = arr.shape
    side = min(box[2] - box[0], box[3] - box[1])
    if side < MIN_GLYPH:
        return []
    x0, y0 = max(0, box[0] - side), max(0, box[1] - side)
    x1, y1 = min(columns, box[2] + side), min(rows, box[3] + side)
    window = max(3, min(int(side * 0.6), TOPHAT_SIZE * detection_factor(rows, columns)))
    labels, count = ndimage.label(top_hat(arr[y0:y1, x0:x1], window, bright) >= SPLIT_CONTRAST * span)
    parts = [
        (x0 + cx.start, y0 + cy.start, x0 + cx.stop, y0 + cy.stop)
        for cy, cx in (found for found in (ndimage.find_objects(labels) if count else []) if found is not None)
        if cx.start > 0 and cy.start > 0 and cx.stop < x1 - x0 and cy.stop < y1 - y0
    ]
    inside = [part[3] - part[1] for part in parts if _inside(part, box)]
    if not inside:
        return []
    glyph = max(inside)
    out = []
    for part in parts:
        height, width = part[3] - part[1], part[2] - part[0]
        outside = max(box[0] - part[0], part[2] - box[2], box[1] - part[1], part[3] - box[3])
        if (
            _gap(part, box) <= 0
            and outside >= CUT_OUTSIDE * min(height, width)
            and max(MIN_GLYPH / 2, INK_GLYPH_HEIGHT[0] * glyph) <= height <= CUT_GLYPH * glyph
            and width <= INK_GLYPH_SHAPE * height
        ):
            pad = 2 + height // 10  # a word box's (``policy.word_box``) for the glyph's height
            grown = (
                max(0, part[0] - pad),
                max(0, part[1] - pad),
                min(columns, part[2] + pad),
                min(rows, part[3] + pad),
            )
            out.append((part, grown))
    return out


def _not_confirmed(read_as_no_text: list[bool]) -> Decision:
    """A text decision none of whose boxes the recogniser confirmed: ``left`` when it read
    every box surely as no text (or as a marker), ``flagged`` when it was unsure of one
    or read one not at all (a glyph's box, judged by its neighbours)."""
    if all(read_as_no_text):
        return Decision("left", "not text to the recogniser")
    return Decision("flagged", "text not confirmed")


def inked_glyphs(arr: np.ndarray, region: Region, span: float) -> list[Box]:
    """The glyphs of ink of a line (boxes in its crop): components of its strokes (top-hat
    in its polarity) that stand out by ``SPLIT_CONTRAST`` of the range, of a glyph's size
    and shape. Burned-in letters are ink, also where they touch bone (cut out of it at
    that contrast, as ``detection`` does); the rib, clavicle and lung edges and the noise
    of most unread lines stand out by a tenth of that, and wires are too long."""
    from scipy import ndimage

    crop = arr[region.y0 : region.y1, region.x0 : region.x1]
    if crop.size == 0:
        return []
    # the screen's stroke scale (``TOPHAT_SIZE`` at detection scale), at most the OCR
    # crop's: in a region of anatomy a line height is the bone's, and a window that wide
    # lifts the bone with the letters on it into one blob
    factor = detection_factor(*arr.shape[:2])
    window = max(3, min(int(region.line_height * 0.6), TOPHAT_SIZE * factor))
    strokes = top_hat(crop, window, region.bright)
    labels, count = ndimage.label(strokes >= SPLIT_CONTRAST * span)
    if not count:
        return []
    low = max(MIN_GLYPH, INK_GLYPH_HEIGHT[0] * region.line_height)
    high = INK_GLYPH_HEIGHT[1] * region.line_height
    glyphs = []
    for rows, columns in ndimage.find_objects(labels):
        height, width = rows.stop - rows.start, columns.stop - columns.start
        if low <= height <= high and width <= INK_GLYPH_SHAPE * height:
            glyphs.append((columns.start, rows.start, columns.stop, rows.stop))
    return glyphs


def ink_in_a_row(glyphs: list[Box]) -> bool:
    """Whether two glyphs sit side by side: about one height (``INK_HEIGHT_RATIO``), over
    half the lower one's rows in common, at most the taller one's height apart. Letters of
    a word do; rib ends stacked one under the other do not."""
    if len(glyphs) < 2:
        return False
    x0, y0, x1, y1 = np.asarray(glyphs, dtype=np.int64).T
    height = y1 - y0
    common = np.minimum.outer(y1, y1) - np.maximum.outer(y0, y0)
    lower, taller = np.minimum.outer(height, height), np.maximum.outer(height, height)
    apart = np.subtract.outer(x0, x1)  # [i, j]: x0 of i less x1 of j
    gap = np.maximum(apart, apart.T)
    beside = (2 * common >= lower) & (taller <= INK_HEIGHT_RATIO * lower) & (gap <= taller)
    np.fill_diagonal(beside, False)
    return bool(beside.any())


def _flag_ink(
    arr: np.ndarray, regions: list[Region], decisions: list[Decision], span: float, options: PixelOptions
) -> list[Decision]:
    """Lines left because nothing read them, flagged when they hold letters of ink: two
    side by side, or one in a line the recogniser (``textrec``) reads as text or nearly
    ("80" of a ruler's "80 mm" beside a bone edge). Only such lines are read: most left
    lines hold no ink at all."""
    from cxr_dask.deid.pixels import textrec

    out = list(decisions)
    asks = []
    for i, (region, decision) in enumerate(zip(regions, decisions, strict=True)):
        if decision.kind != "left" or decision.why != "no text read":
            continue
        # both polarities, as OCR read it: white letters in a region found by their dark
        # outlines ("PORTATIL" merged with a shoulder into a dark region)
        flipped = dataclasses.replace(region, bright=not region.bright)
        glyphs = inked_glyphs(arr, region, span)
        if ink_in_a_row(glyphs) or ink_in_a_row(more := inked_glyphs(arr, flipped, span)):
            out[i] = Decision("flagged", "unread glyphs of ink")
        elif glyphs or more:
            asks.append(i)
    if asks and textrec.available():
        readings = textrec.read(arr, [regions[i].box for i in asks], options.is_allowed)
        for i, reading in zip(asks, readings, strict=True):
            if (reading.is_text or reading.is_unsure) and not reading.is_marker:
                out[i] = Decision("flagged", "glyphs of ink read by the recogniser alone")
    return out


def _read_turned(
    arr: np.ndarray, regions: list[Region], decisions: list[Decision], span: float, options: PixelOptions
) -> list[Decision]:
    """Flagged lines read once more turned a quarter both ways and mirrored.

    A region the readers half saw text in may hold text no reader sees upright: a word
    written top-down chained to a side marker into one horizontal line ("PORT" beside
    "L"), or a technologist's code on a film flipped left to right. Each flagged region
    of at most ``TURNED_SIDE`` of the image a side (with the unjudged regions it overlaps:
    the rest of a column it cut) is read by Tesseract in ``TURNED_VIEWS`` (a vertical one
    mirrored and turned). A word read there counts under the rules of every read:
    evidence (``policy.is_evidence``: confidence, strokes of glyph contrast), not
    allow-listed (a mirrored "L" stays), and read in the same view by the recogniser as
    text, by both with ``TURNED_CHARACTERS`` at least (sure words too: three more views
    are three more chances for junk). Its box is blanked; the rest of the region stays,
    flagged as it was when nothing is confirmed.
    """
    from cxr_dask.deid.pixels import textrec

    rows, columns = arr.shape
    flagged = [
        i
        for i, d in enumerate(decisions)
        if d.kind == "flagged" and regions[i].width <= TURNED_SIDE * columns and regions[i].height <= TURNED_SIDE * rows
    ]
    if not flagged or not textrec.available():
        return decisions
    looks = [_with_overlapping(regions, decisions, i) for i in flagged]
    views = [MIRRORED_VIEWS if look.vertical else TURNED_VIEWS for look in looks]
    found: dict[tuple[int, View], list[Word]] = {}
    for i, per_view, read in zip(flagged, views, _views_in_chunks(arr, looks, views, options, span), strict=True):
        for view, words in zip(per_view, read, strict=True):
            evidence = [
                w
                for w in _letter_spaced(words)
                if is_evidence(w) and not w.allowed and w.characters >= TURNED_CHARACTERS
            ]
            if evidence:
                found[(i, view)] = evidence
    out = list(decisions)
    blank: dict[int, list[Box]] = {}
    for (i, view), words in found.items():
        upright = view[0] % 2 == 0
        readings = textrec.read(arr, [w.box for w in words], options.is_allowed, view)
        text = [_turned_text(r) for r in readings]
        failed = [w for w, is_text in zip(words, text, strict=True) if not is_text]
        # a confirmed word box may have taken in a whole marker beside it (a code closer
        # to the "L" than its letters to each other): its edge glyph read alone as a
        # marker is left out, the blanking stopping in the gap before it, when the word
        # less it is still text (two letters of "PORT" turned read upright as one)
        confirmed_words = [w for w, is_text in zip(words, text, strict=True) if is_text]
        edges = [_edge_glyphs(arr, w.box, regions[i].bright, upright) for w in confirmed_words]
        markers = _read_as_markers(arr, [glyph for ends in edges for glyph, _ in ends], view, options)
        spares: list[tuple[Word, Word, list[Box]]] = []
        for w, ends in zip(confirmed_words, edges, strict=True):
            limits = [limit for glyph, limit in ends if glyph in markers]
            if limits:
                x0, y0, x1, y1 = functools.reduce(clipped, limits, w.box)
                spares.append((w, dataclasses.replace(w, x0=x0, y0=y0, x1=x1, y1=y1), limits))
            else:
                blank.setdefault(i, []).append(word_box(w, arr.shape, upright=upright))
        less = textrec.read(arr, [rest.box for _, rest, _ in spares], options.is_allowed, view) if spares else []
        for (w, _, limits), reading in zip(spares, less, strict=True):
            box = word_box(w, arr.shape, upright=upright)
            box = functools.reduce(clipped, limits, box) if _turned_text(reading) else box
            blank.setdefault(i, []).append(box)
        # a word box that took in part of a marker beside it (a mirrored "L" closer to
        # a code than its letters to each other) is read again less its last glyph, and
        # less its first; what is blanked stops short of the glyph left out
        trims = [t for w in failed for t in _less_one_glyph(arr, w, regions[i].bright, upright)]
        readings = textrec.read(arr, [word.box for word, _ in trims], options.is_allowed, view) if trims else []
        confirmed: set[Word] = set()
        for (word, (original, limit)), reading in zip(trims, readings, strict=True):
            if original not in confirmed and _turned_text(reading):
                confirmed.add(original)
                blank.setdefault(i, []).append(clipped(word_box(word, arr.shape, upright=upright), limit))
    for i, boxes in blank.items():
        if boxes:
            out[i] = Decision("text", "words read turned or mirrored", tuple(dict.fromkeys(boxes)), lines=0)
    return out


def _read_as_markers(arr: np.ndarray, glyphs: list[Box], view: View, options: PixelOptions) -> set[Box]:
    """The glyph boxes the recogniser reads alone as a one-letter marker ("L", "R"), in the
    view a word beside them was read in, upright or mirrored (a side marker stands upright
    on the film, on a flipped one mirrored, whichever way a code beside it runs). Two
    letters in one run of ink ("RT" of a turned "PORT") are the word's, not a marker."""
    from cxr_dask.deid.pixels import textrec

    found: set[Box] = set()
    for look in dict.fromkeys((view, (0, False), (0, True))):
        rest = [g for g in glyphs if g not in found]
        if not rest:
            break
        readings = textrec.read(arr, rest, options.is_allowed, look)
        found.update(g for g, r in zip(rest, readings, strict=True) if r.is_marker and r.latin == 1)
    return found


def _turned_text(reading: Reading) -> bool:
    """Whether the recogniser confirms a word read turned or mirrored."""
    return reading.is_text and reading.latin >= TURNED_CHARACTERS and not reading.is_marker


def _ink_runs(arr: np.ndarray, box: Box, bright: bool, upright: bool) -> list[tuple[int, int]]:
    """The runs of ink of a word box along its reading direction (columns; rows when it
    runs up or down), end-exclusive, in image coordinates: the box's strongest pixel
    across the line over half its range."""
    x0, y0, x1, y1 = box
    crop = arr[y0:y1, x0:x1].astype(np.float32)
    if crop.size == 0:
        return []
    profile = (crop if bright else -crop).max(axis=0 if upright else 1)
    ink = np.concatenate(([False], profile > (profile.min() + profile.max()) / 2, [False]))
    edges = np.flatnonzero(ink[1:] != ink[:-1])
    start = x0 if upright else y0
    return [(start + int(a), start + int(b)) for a, b in zip(edges[0::2], edges[1::2], strict=True)]


def _less_one_glyph(arr: np.ndarray, word: Word, bright: bool, upright: bool) -> list[tuple[Word, tuple[Word, Box]]]:
    """The word box less its last run of ink, and less its first (``_ink_runs``), each
    with the word and the box its blanking must stay inside (up to the middle of the gap
    before the glyph left out). Fewer than two runs, nothing to trim."""
    runs = _ink_runs(arr, word.box, bright, upright)
    if len(runs) < 2:
        return []
    (_, less_last_limit), (_, less_first_limit) = _edge_limits(runs, arr.shape, upright)
    if upright:
        less_last = dataclasses.replace(word, x1=runs[-2][1])
        less_first = dataclasses.replace(word, x0=runs[1][0])
    else:
        less_last = dataclasses.replace(word, y1=runs[-2][1])
        less_first = dataclasses.replace(word, y0=runs[1][0])
    return [(less_last, (word, less_last_limit)), (less_first, (word, less_first_limit))]


def _edge_limits(
    runs: list[tuple[int, int]], shape: tuple[int, ...], upright: bool
) -> tuple[tuple[tuple[int, int], Box], tuple[tuple[int, int], Box]]:
    """The last and the first run of ink (two at least), each with the box a blanking
    must stay inside to leave it out: up to the middle of the gap before it."""
    rows, columns = shape[:2]
    last = (runs[-2][1] + runs[-1][0]) // 2
    first = (runs[0][1] + runs[1][0] + 1) // 2
    if upright:
        return (runs[-1], (0, 0, last, rows)), (runs[0], (first, 0, columns, rows))
    return (runs[-1], (0, 0, columns, last)), (runs[0], (0, first, columns, rows))


def _edge_glyphs(arr: np.ndarray, box: Box, bright: bool, upright: bool) -> list[tuple[Box, Box]]:
    """The last and the first glyph of a word box of two runs of ink or more, each as
    its box (the run, across the line as far as its ink goes) and the box the word's
    blanking must stay inside to leave it out."""
    runs = _ink_runs(arr, box, bright, upright)
    if len(runs) < 2:
        return []
    out = []
    x0, y0, x1, y1 = box
    values = arr[y0:y1, x0:x1].astype(np.float32)
    values = values if bright else -values
    profile = values.max(axis=0 if upright else 1)
    level = (profile.min() + profile.max()) / 2  # the level ``_ink_runs`` found ink at
    for (a, b), limit in _edge_limits(runs, arr.shape, upright):
        inked = np.flatnonzero(
            (values[:, a - x0 : b - x0].max(axis=1) if upright else values[a - y0 : b - y0].max(axis=0)) > level
        )
        if not inked.size:
            continue
        lo, hi = (y0 if upright else x0) + int(inked[0]), (y0 if upright else x0) + int(inked[-1]) + 1
        out.append(((a, lo, b, hi) if upright else (lo, a, hi, b), limit))
    return out


def _with_overlapping(regions: list[Region], decisions: list[Decision], i: int) -> Region:
    """Region ``i`` grown over the regions it overlaps that nothing judged text, each at
    most its own size a side and over half of it within its columns (a column's letters
    past the line it was chained into are a region of their own above or below it, often
    a "marker" too small to read; a chain of anatomy it touches at a side is no part of
    it: a shoulder so taken in, turned and mirrored, read 79 junk words in 0.3 s)."""
    region = regions[i]
    boxes = [
        other.box
        for other, decision in zip(regions, decisions, strict=True)
        if decision.kind in ("marker", "flagged", "left")
        and _gap(region.box, other.box) < 0
        and other.width <= region.width
        and other.height <= region.height
        and 2 * (min(region.x1, other.x1) - max(region.x0, other.x0)) > other.width
    ]
    x0, y0, x1, y1 = enclosing(boxes)
    return dataclasses.replace(region, x0=x0, y0=y0, x1=x1, y1=y1)


def _covers(box: Box, word: Box) -> bool:
    """Whether ``box`` holds most of the word box ``word``."""
    width = min(box[2], word[2]) - max(box[0], word[0])
    height = min(box[3], word[3]) - max(box[1], word[1])
    area = (word[2] - word[0]) * (word[3] - word[1])
    return width > 0 and height > 0 and 2 * width * height >= area


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
    QuarantineError when the pixels cannot be decoded. Colour and palette images, and
    images of several frames (at most ``options.max_frames``), go through ``_clean_stack``.
    """
    started = time.perf_counter()
    report = PixelReport()
    if not options.enabled:
        report.action = "disabled"
        return PixelResult(report)
    check_supported(ds, options.max_frames)
    rule = options.rule_for(*_device(ds), int(ds.Rows), int(ds.Columns))
    if is_colour(ds) or frames(ds) > 1:
        return _clean_stack(ds, options, report, rule, started)
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
        for x0, y0, x1, y1 in _rule_boxes(report, rule):
            work[y0:y1, x0:x1] = black

    for region, decision in _judge(arr, _window_width(ds), options, report):
        if _record(report, region, decision):
            if work is None:
                work = np.array(arr, copy=True)
            redact_boxes(work, decision.blank, decision.keep, black, decision.lines)
    if work is not None and not np.array_equal(work, arr):
        report.action = "cleaned"
    else:
        work = None
    report.seconds = time.perf_counter() - started
    return PixelResult(report, work, arr if report.regions else None)


def _detector() -> bool:
    """Whether the text detector is installed (``textdet.available``)."""
    from cxr_dask.deid.pixels import textdet

    return textdet.available()


def _with_detected(decision: Decision, boxes: list[Box]) -> Decision:
    """A block read as text with the detector's lines its blanked boxes leave out.

    Tesseract's read of a block depends on the rest of its montage (the threshold it
    binarises with): a line it read surely in one montage merged with the anatomy beside
    it into junk in another ("Patient standing" by a clavicle, chained into the anatomy's
    region). The detector saw that line on the block alone; like every text box it is
    blanked only when the recogniser reads text in it (``confirm_reads``).
    """
    if decision.kind != "text":
        return decision
    extra = tuple(b for b in boxes if not any(_inside(b, blank) for blank in decision.blank))
    return dataclasses.replace(decision, blank=decision.blank + extra) if extra else decision


def _rule_boxes(report: PixelReport, rule: RegionRule) -> list[Box]:
    """A known-region rule's rectangles, recorded in the report."""
    boxes = [box_from_xywh(*xywh) for xywh in rule.regions]
    for box in boxes:
        report.boxes.append(box)
        report.regions.append(RegionRecord(box, "rule", "known-region rule"))
    report.rule = rule.name
    return boxes


def _record(report: PixelReport, region: Region, decision: Decision) -> bool:
    """A judged region in the report; True when it blanks anything."""
    report.regions.append(RegionRecord(region.box, decision.kind, decision.why))
    if not decision.redacts:
        report.regions_kept += 1
        return False
    report.regions_redacted += 1
    report.boxes.extend(decision.blank)
    return True


def _spent(report: PixelReport, step: str, since: float) -> None:
    """Add the seconds since ``since`` to a step's timing (a colour image has several planes)."""
    report.timings[step] = report.timings.get(step, 0.0) + time.perf_counter() - since


def _judge(
    arr: np.ndarray, window: float | None, options: PixelOptions, report: PixelReport
) -> list[tuple[Region, Decision]]:
    """Every candidate region of one greyscale plane and what is done with it.

    Screen, OCR (a block of ``GATED_LINES`` lines only where the text detector sees
    text), the text detector on what OCR could not read (and OCR in the other polarity
    where it sees text), the dense-page second look on an image known to hold
    text (or with lines of ink too fine for the region that holds them:
    ``detection._finer_lines``), the boxes cut down to their glyphs, and the
    recogniser's last word on those no sure word backs. Counts and
    timings go to ``report``; recording the regions is the caller's (``_record``).
    """
    mark = time.perf_counter()
    finer: list[Box] = []  # lines of ink in regions too small to read: the dense look reads them
    inner: list[tuple[Box, Box]] = []  # (region, line): lines of ink finer than a readable region's
    screen: dict[str, Any] = {}  # the stroke components labelled, for the dense look
    regions = detect(arr, window, finer=finer, inner=inner, screen=screen)
    _spent(report, "detect", mark)
    report.regions_found += len(regions)
    if not regions:
        return []
    mark = time.perf_counter()
    to_read = [] if options.strict else [r for r in regions if not is_small(r)]
    span = stroke_span(arr, window)
    # a block of several lines is read only where the text detector sees text in it (a
    # column, the detector's blind spot, is always read; without the detector, all is)
    blocks = [r for r in to_read if not r.vertical and r.height >= GATED_LINES * r.line_height] if _detector() else []
    seen = dict(zip(blocks, confirm_text(blocks, arr), strict=True))
    to_read = [r for r in to_read if seen.get(r, True)]
    read = dict(zip(to_read, read_regions(arr, to_read, options, span), strict=True))
    words = [read.get(region, []) for region in regions]
    _spent(report, "ocr", mark)
    if options.strict:
        report.rule = report.rule or "strict"
    decisions = [decide(region, found, options, arr.shape) for region, found in zip(regions, words, strict=True)]
    decisions = [_with_detected(d, seen.get(region, [])) for region, d in zip(regions, decisions, strict=True)]
    # The text detector looks at every line nothing read (it sees horizontal lines;
    # columns need words Tesseract reads).
    lines = [i for i, d in enumerate(decisions) if is_unread(d) and not regions[i].vertical]
    mark = time.perf_counter()
    fresh = [i for i in lines if regions[i] not in seen]
    detected = dict(zip(fresh, confirm_text([regions[i] for i in fresh], arr), strict=True))
    detected.update((i, seen[regions[i]]) for i in lines if regions[i] in seen)
    _spent(report, "second_stage", mark)
    # A line nothing read where the detector sees text, or a column, is read once more in
    # the other polarity: dark text on a bright label is found by the label's bright edges
    # and read as bright strokes; its words give tighter boxes than the detector's, and
    # markers to keep. That second reading counts only when most of what it reads is text:
    # edges read inverted give many junk words, one of them sure now and then. A line the
    # detector sees no text in is not read again: on anatomy it read junk, and it was
    # Tesseract's slowest read (a film's grid texture, 1.2 s; the 52 labelled bench
    # images with text: -16% of their time, 2 of 462 outputs moved, both on text).
    again = [i for i, d in enumerate(decisions) if is_unread(d) and regions[i] in read]
    again = [i for i in again if regions[i].vertical or detected.get(i)]
    if again:
        mark = time.perf_counter()
        flipped = [dataclasses.replace(regions[i], bright=not regions[i].bright) for i in again]
        for i, words_read in zip(again, read_regions(arr, flipped, options, span), strict=True):
            if 2 * sum(is_evidence(w) for w in words_read) >= len(words_read) > 0:
                decisions[i] = decide(regions[i], words_read, options, arr.shape)
            elif decisions[i].kind == "left" and any(is_near(w) for w in words_read):
                decisions[i] = Decision("flagged", "low-confidence read")
        _spent(report, "ocr", mark)
    for i in lines:
        if is_unread(decisions[i]) and detected[i]:
            decisions[i] = Decision("text", DETECTOR_WHY, tuple(detected[i]), lines=len(detected[i]))
    # a region nothing read that holds a line of ink finer than its line height was read
    # at the wrong scale (a small line chained to a panel letter): the dense look reads
    # that line at its own; only in a region of a few lines (``DENSE_LINES``): in anatomy
    # chained over the film its lines of ink are the anatomy's (on Hannover films and a
    # CT: regions flagged for review, no text)
    unread_boxes = {
        r.box
        for r, d in zip(regions, decisions, strict=True)
        if is_unread(d) and r.height <= DENSE_LINES * r.line_height + 8
    }
    finer += [line for box, line in inner if box in unread_boxes]
    if not options.strict and (finer or _holds_text(arr, decisions, options)):
        mark = time.perf_counter()
        for region, decision in dense_lines(arr, window, options, list(regions), decisions, screen):
            regions.append(region)
            decisions.append(decision)
            report.regions_found += 1
        _spent(report, "dense", mark)
    if not options.strict:
        mark = time.perf_counter()
        decisions = [_hug(arr, region, d, window, span) for region, d in zip(regions, decisions, strict=True)]
        _spent(report, "ink", mark)
        mark = time.perf_counter()
        decisions = confirm_reads(arr, decisions, options)
        _spent(report, "confirm", mark)
        decisions = _keep_across(decisions)
        decisions = _spare_kept(arr, regions, decisions)
        decisions = _spare_line_ends(arr, regions, decisions, options)
        decisions = _flag_ink(arr, regions, decisions, span, options)
        mark = time.perf_counter()
        decisions = _read_turned(arr, regions, decisions, span, options)
        _spent(report, "turned", mark)
        mark = time.perf_counter()
        decisions = _grow_over_cut_glyphs(arr, regions, decisions, span, options)
        _spent(report, "ink", mark)
    return list(zip(regions, decisions, strict=True))


def _holds_text(arr: np.ndarray, decisions: list[Decision], options: PixelOptions) -> bool:
    """Whether the first pass knows the image holds text (the dense look's condition):
    words read as text, or a text detector box the recogniser reads as text or nearly. A
    detector box alone is no knowledge: on a chest film one box at the film's edge, vetoed
    later, sent the whole film's anatomy, cut into ~130 lines, to Tesseract and the
    detector (a second of one core, nothing found)."""
    texts = [d for d in decisions if d.kind == "text"]
    if any(d.why != DETECTOR_WHY for d in texts):
        return True
    boxes = [box for d in texts for box in d.blank]
    if not boxes:
        return False
    from cxr_dask.deid.pixels import textrec

    if not textrec.available():
        return True
    readings = textrec.read(arr, boxes, options.is_allowed)
    return any((r.is_text or r.is_unsure) and not r.is_marker for r in readings)


def _clean_stack(
    ds: Dataset, options: PixelOptions, report: PixelReport, rule: RegionRule | None, started: float
) -> PixelResult:
    """A colour or palette image, or several frames: text found on greyscale planes of each
    frame, blanked in every channel.

    A colour frame's planes (``colour.planes``) are its luminance, then each channel whose
    colour departs from it enough to hide text from it (yellow or green annotations on a
    grey ultrasound, red on grey of the same brightness), with what earlier planes blanked
    filled in so the same text is not read twice; a greyscale frame is its own plane. The
    boxes blanked on any plane are black in all three channels (a palette image's darkest
    entry). Frames after the first are searched in full, except the regions judged on the
    first frame whose pixels are the same in this one (a cine loop's fixed banner): those
    are filled in and take the first frame's judgement. Text that moves or changes (a
    frame's time) is judged again, so every frame is as clean as a single image.
    A changed RGB image is written as RGB (``reencode.store``); a palette image keeps its
    palette.
    """
    mark = time.perf_counter()
    stored = decode_frames(ds, options.max_frames)
    table = palette_table(ds) if is_colour(ds) and stored.ndim == 3 else None
    shown = table[stored] if table is not None else stored
    report.timings["decode"] = time.perf_counter() - mark
    rgb = shown.ndim == 4
    window = None if rgb else _window_width(ds)
    black = darkest_index(table) if table is not None else 0 if rgb else photometric_black(ds)
    masks = np.zeros(shown.shape[:3], dtype=np.uint8)  # blanked, per frame
    if rule is not None:
        for x0, y0, x1, y1 in _rule_boxes(report, rule):
            masks[:, y0:y1, x0:x1] = 1
    first: list[Box] = []  # what each region judged on the first frame covers
    for index, frame in enumerate(shown):
        mask = masks[index]
        seen = mask.copy()  # blanked here, or judged on the first frame and the same here
        if index:
            for x0, y0, x1, y1 in first:
                if np.array_equal(frame[y0:y1, x0:x1], shown[0, y0:y1, x0:x1]):
                    mask[y0:y1, x0:x1] |= masks[0, y0:y1, x0:x1]
                    seen[y0:y1, x0:x1] = 1
        planes = colour.planes(frame, seen) if rgb else iter([colour.fill(frame, seen)])
        for plane in planes:
            for region, decision in _judge(plane, window, options, report):
                if not index:
                    boxes = (region.box, *decision.blank)
                    first.append(
                        (
                            max(0, min(b[0] for b in boxes)),  # (no negative slice start)
                            max(0, min(b[1] for b in boxes)),
                            max(b[2] for b in boxes),
                            max(b[3] for b in boxes),
                        )
                    )
                if _record(report, region, decision):
                    redact_boxes(mask, decision.blank, decision.keep, 1, decision.lines)
                    redact_boxes(seen, decision.blank, decision.keep, 1, decision.lines)
    work: np.ndarray | None = None
    if masks.any():
        work = stored.copy()
        work[masks.astype(bool)] = black
        if np.array_equal(work, stored):
            work = None
    if work is not None:
        report.action = "cleaned"
    report.seconds = time.perf_counter() - started
    single = len(stored) == 1
    if work is not None and single:
        work = work[0]
    # the review shows the first frame (every frame's regions drawn on it)
    return PixelResult(report, work, stored[0] if report.regions else None, palette=table)
