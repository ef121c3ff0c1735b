"""``clean``: one image through screen, decode, detect, OCR, text detector and policy.

The order keeps an image without text nearly free: a JPEG 2000 may be screened at half
resolution first, the detector runs on a downscaled copy, OCR and the text detector only
on candidates, the dense-page second look only on an image known to hold text.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from cxr_dask.deid.pixels.checks import check_supported
from cxr_dask.deid.pixels.decoding import decode, j2k_preview, photometric_black
from cxr_dask.deid.pixels.detection import (
    DENSE_HEIGHT_RATIO,
    INK_PAD,
    _merge_overlapping,
    _region,
    detect,
    ink_boxes,
    periodic_bars,
    preview_has_candidates,
    stroke_span,
)
from cxr_dask.deid.pixels.ocr import _read_in_chunks, read_regions
from cxr_dask.deid.pixels.policy import (
    Decision,
    beside_words,
    decide,
    is_evidence,
    is_small,
    redact_boxes,
    with_ink,
)
from cxr_dask.deid.pixels.types import Box, PixelReport, PixelResult, Region, RegionRecord, Word, box_from_xywh
from cxr_dask.deid.rules import PixelOptions

#: A region of a dense page is read when it is a block of this many lines at most (a
#: taller one is anatomy cut into pieces; read at a mixed scale in one montage, it spoils
#: Tesseract's reading of the lines around it).
DENSE_LINES = 4
#: On a dense page, a line of glyphs this high (share of the text detector's box, which
#: is grown around the text it finds) beside text the detector found is text too.
DETECTED_SIZE = (0.3, 1.2)
#: Text boxes of at most this many line heights (lines, words) extend to unread lines of
#: their block (``_in_block``); a taller one is a first-pass region of anatomy and text.
BLOCK_HEIGHT = 2
#: A word box is cut down to the strokes in it only when they span this share of its width.
WORD_COVERED = 0.8


def confirm_text(regions: list[Region], arr: np.ndarray) -> list[list[Box]]:
    """Second stage on regions OCR could not read: text boxes from a text detector, if any.

    Without the detector's packages every region stays flagged (left in place). A box
    that holds a ruler's tick marks only (``detection.periodic_bars``) is no text.
    """
    from cxr_dask.deid.pixels import textdet

    found = textdet.text_boxes(arr, [r.box for r in regions], [r.line_height for r in regions])
    return [[b for b in boxes if not periodic_bars(arr, b)] for boxes in found]


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
    big: list[Box] = []
    found = [
        r
        for r in _split_blocks(arr, detect(arr, window, dense=True, big=big), window)
        if not is_small(r)
        and not r.vertical
        and r.height <= DENSE_LINES * r.line_height + 8
        and blanked[r.y0 : r.y1, r.x0 : r.x1].mean() < 0.9
        and not any(_judged(r, first) for first, d in zip(regions, decisions, strict=True) if d.kind != "text")
    ]
    out = []
    unread = []
    for region, words in zip(found, _read_in_chunks(arr, found, options, stroke_span(arr, window)), strict=True):
        decision = decide(region, words, options, arr.shape)
        if decision.kind == "text" and 2 * sum(is_evidence(w) for w in words) >= len(words):
            out.append((region, dataclasses.replace(decision, why="words read on a dense page")))
        elif decision.kind in ("flagged", "text"):
            unread.append(region)
    # what OCR could not read, the text detector sees at the line's own scale
    # and the region's other lines of glyphs of the size of the text it boxed go too (in a
    # block whose lines the screen merged, it boxed one line of three; anatomy cut into
    # the region is taller)
    for region, boxes in zip(unread, confirm_text(unread, arr), strict=True):
        if boxes:
            tall = max(y1 - y0 for _, y0, _, y1 in boxes)
            # (a "line" cut by the region's top or bottom is a structure that goes on
            # beyond it: a skull's rim above a ruler and a label, not a line of the block)
            lines = [
                ink
                for ink in ink_boxes(arr, region.box, region.line_height, region.bright, window)
                if DETECTED_SIZE[0] * tall <= ink[3] - ink[1] <= DETECTED_SIZE[1] * tall
                and region.y0 < ink[1]
                and ink[3] < region.y1
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
    heights = [r.line_height for r, d in out if d.why == "words read on a dense page"]
    out += _beside_anatomy(arr, big, heights, options, stroke_span(arr, window))
    rest = [r for r in unread if not any(r is region for region, _ in out)]
    while rest:
        beside = [r for r in rest if any(_in_block(r, box) for box in texts)]
        if not beside:
            break
        for region in beside:
            out.append((region, Decision("text", "line of a text block", (region.box,))))
            texts.append(region.box)
        rest = [r for r in rest if not any(r is b for b in beside)]
    return out


def _beside_anatomy(
    arr: np.ndarray,
    big: list[Box],
    heights: list[int],
    options: PixelOptions | None = None,
    span: float | None = None,
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
    are all allow-listed, are kept.
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
    sizes = [height] * len(boxes)
    found_per_box = textdet.text_boxes(arr, boxes, sizes, sizes)
    options = options or PixelOptions()
    span = stroke_span(arr) if span is None else span
    kept = _markers_beside(arr, [b for found in found_per_box for b in found], height, options, span)
    out = []
    for box, found in zip(boxes, found_per_box, strict=True):
        lines = tuple(b for b in found if kept.get(b))  # text beside an allow-listed word
        words = tuple(b for b in found if b not in kept)
        if lines or words:
            keep = tuple(w for b in lines for w in kept[b])
            region = dataclasses.replace(_region(arr, box, len(lines) + len(words), height), line_height=height)
            why = "text detector beside anatomy"
            out.append((region, Decision("text", why, (*lines, *words), keep=keep, lines=len(lines))))
    return out


def _markers_beside(
    arr: np.ndarray, found: list[Box], height: int, options: PixelOptions, span: float
) -> dict[Box, tuple[Word, ...]]:
    """The text detector's boxes beside anatomy that hold a marker, judged by the policy
    (``policy.decide``): box -> the allow-listed words to keep in it (empty: keep the
    whole box). Each box is read by OCR (one call for the page) at the page's text
    height, in the polarity its padded surround gives."""
    regions = []
    for x0, y0, x1, y1 in found:
        pad = max(2, height // 4)
        padded = (max(0, x0 - pad), max(0, y0 - pad), min(arr.shape[1], x1 + pad), min(arr.shape[0], y1 + pad))
        regions.append(dataclasses.replace(_region(arr, padded, 1, height), line_height=height))
    out: dict[Box, tuple[Word, ...]] = {}
    to_read = [r for r in regions if not is_small(r)]
    read = dict(zip(to_read, read_regions(arr, to_read, options, span), strict=True)) if to_read else {}
    for box, region in zip(found, regions, strict=True):
        decision = decide(region, read.get(region, []), options, arr.shape)
        if decision.kind == "marker":
            out[box] = ()
        elif decision.kind == "text" and decision.keep:
            out[box] = decision.keep
    return out


def _in_block(line: Region, text: Box) -> bool:
    """Whether ``line`` sits right above or below the text box ``text``, of about its
    height, over the same columns: the next line of one block."""
    x0, y0, x1, y1 = text
    gap = max(y0 - line.y1, line.y0 - y1)
    common = min(x1, line.x1) - max(x0, line.x0)
    tall = y1 - y0
    return (
        gap <= line.line_height // 2
        and common >= 0.5 * min(x1 - x0, line.width)
        and tall <= DENSE_HEIGHT_RATIO * line.height
        and line.height <= DENSE_HEIGHT_RATIO * tall
    )


def _split_blocks(arr: np.ndarray, found: list[Region], window: float | None) -> list[Region]:
    """Blocks a little taller than ``DENSE_LINES`` lines, cut into their lines of glyphs.

    A block of three text lines beside a skull took in a piece of the bone and was one
    pixel over the limit (81 against 80 on ``SC1``): it was never read, and its lines
    (a diagnosis, an id, a date) stayed. Such a block (at most twice the limit) is cut
    into the lines ``detection.ink_boxes`` finds in it, each read on its own; anything
    taller is anatomy strung together and stays out.
    """
    out = []
    for r in found:
        limit = DENSE_LINES * r.line_height + 8
        if r.vertical or r.height <= limit or r.height > 2 * limit:
            out.append(r)
            continue
        for x0, y0, x1, y1 in ink_boxes(arr, r.box, r.line_height, r.bright, window):
            height = y1 - y0 - 2 * INK_PAD
            if height > 2 * r.line_height or (x0, y0, x1, y1) == r.box:
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


def _hug(arr: np.ndarray, region: Region, decision: Decision, window: float | None) -> Decision:
    """A text decision whose boxes (the padded candidate line, the text detector's
    unclipped boxes, OCR's word boxes with their margin) are cut down to the text lines
    inside them (``detection.ink_boxes``): a redaction hugs its glyphs."""
    if decision.kind != "text":
        return decision

    def ink(boxes: tuple[Box, ...], words: bool) -> list[Box]:
        out = []
        for box in boxes:
            found = ink_boxes(arr, box, region.line_height, region.bright, window)
            # a word OCR read whose letters the strokes do not span (a glyph touching
            # bone, a faint one) keeps its whole box
            covered = np.zeros(box[2] - box[0], dtype=bool)
            for x0, _, x1, _ in found:
                covered[x0 - box[0] : x1 - box[0]] = True
            out += [box] if words and covered.mean() < WORD_COVERED else found
        return out

    lines = ink(decision.blank[: decision.lines], False)
    words = decision.blank[decision.lines :]
    if decision.why == "words read" and words:  # lines far from every word read are no text of it
        lines = [line for line in lines if beside_words(line, words, region.line_height)]
    return with_ink(decision, lines, ink(words, True))


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
        for box in (box_from_xywh(*xywh) for xywh in rule.regions):
            x0, y0, x1, y1 = box
            work[y0:y1, x0:x1] = black
            report.boxes.append(box)
            report.regions.append(RegionRecord(box, "rule", "known-region rule"))
        report.rule = rule.name

    mark = time.perf_counter()
    window = _window_width(ds)
    regions = detect(arr, window)
    report.timings["detect"] = time.perf_counter() - mark
    report.regions_found = len(regions)
    if regions:
        mark = time.perf_counter()
        to_read = [] if options.strict else [r for r in regions if not is_small(r)]
        span = stroke_span(arr, window)
        read = dict(zip(to_read, read_regions(arr, to_read, options, span), strict=True))
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
            for i, words_read in zip(unread, read_regions(arr, flipped, options, span), strict=True):
                if 2 * sum(is_evidence(w) for w in words_read) >= len(words_read) > 0:
                    decisions[i] = decide(regions[i], words_read, options, arr.shape)
            report.timings["ocr"] = time.perf_counter() - mark
        # the text detector sees horizontal lines; columns need words Tesseract reads
        flagged = [i for i, d in enumerate(decisions) if d.kind == "flagged" and not regions[i].vertical]
        if flagged:
            mark = time.perf_counter()
            for i, boxes in zip(flagged, confirm_text([regions[i] for i in flagged], arr), strict=True):
                if boxes:
                    decisions[i] = Decision("text", "text detector", tuple(boxes), lines=len(boxes))
            report.timings["second_stage"] = time.perf_counter() - mark
        if not options.strict and any(d.kind == "text" for d in decisions):
            mark = time.perf_counter()
            for region, decision in dense_lines(arr, window, options, list(regions), decisions):
                regions.append(region)
                decisions.append(decision)
                report.regions_found += 1
            report.timings["dense"] = time.perf_counter() - mark
        if not options.strict:
            mark = time.perf_counter()
            decisions = [_hug(arr, region, d, window) for region, d in zip(regions, decisions, strict=True)]
            report.timings["ink"] = time.perf_counter() - mark
        for region, decision in zip(regions, decisions, strict=True):
            report.regions.append(RegionRecord(region.box, decision.kind, decision.why))
            if not decision.redacts:
                report.regions_kept += 1
                continue
            report.regions_redacted += 1
            if work is None:
                work = np.array(arr, copy=True)
            redact_boxes(work, decision.blank, decision.keep, black, decision.lines)
            report.boxes.extend(decision.blank)
    if work is not None and not np.array_equal(work, arr):
        report.action = "cleaned"
    else:
        work = None
    report.seconds = time.perf_counter() - started
    return PixelResult(report, work, arr if report.regions else None)
