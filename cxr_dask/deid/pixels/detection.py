"""Detect: candidate text lines, from thin high-contrast strokes of glyph size.

A cheap detector on a downscaled copy (block max for bright text, block min for dark
text, so one-pixel strokes survive the downscale). A morphological top-hat keeps thin
high-contrast strokes and drops smooth anatomy; connected components of glyph size are
grouped into text lines. Wires, ECG leads and ruler bars are one long component each and
fail the glyph-size test. Where the text is does not matter: modalities print in corners
and along edges, but side markers sit beside the lungs, so location is no filter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from cxr_dask.deid.pixels.morphology import (
    _component_counts,
    _component_stats,
    _dilate,
    _erode,
    _labels,
    _pool,
    value_percentiles,
)
from cxr_dask.deid.pixels.policy import is_small
from cxr_dask.deid.pixels.types import Box, Region, within
from cxr_dask.deid.pixels.types import gap as _gap
from cxr_dask.deid.pixels.types import inside as _inside

#: The detector works on images of at most this many pixels a side.
DETECTION_SIDE = 1024


def detection_factor(rows: int, columns: int) -> int:
    """The pooling that brings an image of this size to at most ``DETECTION_SIDE`` a side."""
    return max(1, math.ceil(max(rows, columns) / DETECTION_SIDE))


#: Top-hat window (detection pixels): wider than any stroke, narrower than anatomy.
TOPHAT_SIZE = 11
#: A glyph must have a stroke that stands out by this share of the image's dynamic range
#: (text is burned in near white or black; anatomy rarely differs this much within a few
#: pixels) and is grown over pixels that stand out by ``GROW_CONTRAST``.
CONTRAST = 0.2
GROW_CONTRAST = 0.1
#: A candidate line needs one glyph whose stroke is strong along its length: at least
#: this many of its pixels reach ``CONTRAST``, and this share of the pixels grown around
#: them. On synthetic films noise spikes on rib ridges and lung edges, and the body's
#: fall-off at the top and bottom edge, reach it in one or two pixels of a component, or
#: in a few scattered over a long band (measured: 1-2 of 20-150, 13-33 of 270-520); text
#: strokes reach it in most of theirs. Weak components still group and merge as before
#: (dropping them there un-merged anatomy into new candidates on real images and lost
#: glyphs of small text on a film scan); only lines made of weak ones alone are dropped.
MIN_STRONG = 3
STRONG_SHARE = 0.15
#: JPEG 2000 previews (``decoding.j2k_preview``): contrast thresholds scaled by this (a
#: one-pixel stroke keeps at least a quarter of its contrast per resolution level dropped).
PREVIEW_SENSITIVITY = 0.5
#: A glyph is at least this many detection pixels high (lower: a speck of noise).
MIN_GLYPH_HEIGHT = 3
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
#: No glyph is taller than this share of the image's rows (the screen's limit, both scales).
GLYPH_SHARE = 0.2
#: Components too tall for a glyph, up to this share of the image a side: anatomy a label
#: may touch (a skull on a film scan, whose "A114" the pooled strokes join to the bone).
BIG_SHARE = 0.4
#: A merged block taller than this many glyph heights is anatomy strung together, not text
#: (a block of a few text lines, which OCR reads line by line, stays well below).
MAX_LINE_HEIGHTS = 12
#: Big glyphs: strokes wider than the top-hat window (a bold 150-pixel word on a 1024-pixel
#: film has 25-pixel stems) leave no top-hat response but at their thin parts, and were
#: blanked in pieces (39%) or not at all. A coarse screen runs the same top-hat on every
#: this-many-th pixel of the detection image (a sixteenth of the pixels: ~0.3 ms), where
#: such strokes fit the window ...
COARSE = 4
#: ... and keeps a component as a glyph only when it is at least this many detection
#: pixels high (smaller glyphs' strokes fit the fine window; the fine screen sees them),
#: and at most ``DENSE_MAX_GLYPH`` image pixels (a skull's flat bone pieces on a film scan
#: are 400) ...
BIG_GLYPH = 48
#: ... when this share of its pixels reach ``CONTRAST`` (a burned-in stroke this wide is
#: flat: measured 0.73-1.0, most over 0.9, in eight fonts at 80 and 150 pixels; bones,
#: organs and skulls on the real bench set mostly 0.15-0.6, strong at their rim only) ...
WIDE_STRONG = 0.7
#: ... and in a row of at least this many such glyphs of one height
#: (``DENSE_HEIGHT_RATIO``), one of them holding no glyph the fine screen found half its
#: height (else it saw the word): a word. One or two big glyphs are a marker, kept anyway.
WIDE_WORD = 3
#: Text merged with anatomy (``_split``): a component too big for a glyph is cut at this
#: share of the range, where white or black letters still stand out and the bone or soft
#: tissue edge they touch does not (letters over a clavicle on real films: 0.7-0.9; the
#: clavicle's ridge beneath them 0.1-0.3) ...
SPLIT_CONTRAST = 0.4
#: ... into pieces at least this many detection pixels high (smaller ones are specks),
SPLIT_MIN_HEIGHT = 5
#: ... and a piece counts as a glyph only in a row of this many of about one height
#: (within this ratio): a word, not a ridge broken into specks.
SPLIT_WORD = 3
SPLIT_HEIGHT_RATIO = 1.5
#: A glyph of ink: this share of its pixels reach ``SPLIT_CONTRAST`` (burned-in letters
#: on real films 0.4-0.98; the ridge pieces of ribs and clavicles beside them at most 0.07).
CORE_SHARE = 0.25
#: White letters outlined in black (``_outlined_letters``): pixels within this share of
#: the range of the image's top, within ``OUTLINE_RING`` pixels of its bottom's.
OUTLINE_REACH = 0.1
OUTLINE_RING = 5
#: ... and they make a line of their own unless a kept region holds them whose line
#: height is at most this many times theirs (the screen found them).
OUTLINE_KNOWN = 2
#: The glyphs of ink of a region dropped as no line make a line when at least this many
#: sit in a row (``_rescued``; "AP"; a lone "L" is a marker, kept anyway) ...
CORE_WORD = 2
#: ... in a line at most this many of their median heights high (letters, their
#: counters and pieces in the other polarity: "MOBILE" is 2.2).
CORE_LINE = 3
#: Faint letters (``_faint_lines``): glyphs with ``CORE_SHARE`` of their pixels at
#: ``CONTRAST`` (text at a quarter of the range, which has no letter of ink), at least
#: this many in a row ...
FAINT_WORD = 3
#: ... on one baseline: side by side at most this many heights apart, overlapping by at
#: most this share of one (kerned capitals: 0.1; a film's ridge pieces stack and overlap),
#: heights within this ratio, bottoms or tops within this share of a height ...
FAINT_GAP = 1.2
FAINT_OVERLAP = 0.15
FAINT_HEIGHT_RATIO = 1.5
FAINT_ALIGN = 0.12
#: ... of one stroke level: neighbours' stroke contrasts within this ratio (text blended
#: into the image), or their stroke values within this share of the range (text painted
#: at one grey), all of a run's within ``FAINT_LEVEL_SPREAD`` or ``FAINT_VALUE`` ...
FAINT_LEVEL = 1.2
FAINT_LEVEL_SPREAD = 1.25
FAINT_VALUE = 0.03
#: ... of one stroke width (neighbours within this ratio, a run's within the spread) ...
FAINT_WIDTH = 1.4
FAINT_WIDTH_SPREAD = 1.6
#: ... and shaped as letters, not single strokes: the run's median ``_breadth`` at least
#: this (letters 0.3-0.96, words' medians 0.5-0.9; a bar, a streak, a ridge piece ~0.15).
FAINT_BREADTH = 0.3
#: ... whose strokes are thinner than their glyphs are wide: the run's median of the ratio
#: at most this (letters 0.15-0.35, a bold word's median 0.33; the gaps between bars are
#: blobs as wide as their stroke: 1).
FAINT_THIN = 0.6


def _components(
    response: np.ndarray,
    span: float,
    max_height: int,
    max_width: int,
    sensitivity: float = 1.0,
    sure: list[Box] | None = None,
    big: list[Box] | None = None,
    cores: list[Box] | None = None,
    faint: list[Box] | None = None,
    counted: dict[str, Any] | None = None,
    polarity: str = "",
) -> list[Box]:
    """Boxes of connected components the size and shape of glyphs (or a few merged glyphs).

    A component counts when one of its pixels reaches ``CONTRAST``; an image without such
    a pixel has no glyph at all and is not labelled (the common no-text case). Boxes of
    components strong along their length (``MIN_STRONG``, ``STRONG_SHARE``) also go to
    ``sure`` when given; components over half the tallest glyph's height and at most
    ``BIG_SHARE`` of the image a side (anatomy, which text may touch) go to ``big``.
    Glyphs of ink (``CORE_SHARE`` of their pixels at ``SPLIT_CONTRAST``), and the letters
    cut out of components too big for a glyph (``_split``), go to ``cores``; glyphs with
    ``CORE_SHARE`` of their pixels at ``CONTRAST`` (faint letters, ``_faint_lines``), to ``faint``.
    ``counted`` keeps the labelling of each ``polarity`` (it does not depend on the glyph
    limits): the dense look labels the same responses as the screen did.
    """
    strong = response >= CONTRAST * span * sensitivity
    if not strong.any():
        return []
    if cores is not None and sensitivity >= 1.0:
        labelled = counted.get(polarity) if counted is not None else None
        if labelled is None:
            grown = response > GROW_CONTRAST * span * sensitivity
            labelled = _component_counts(grown, [strong, response >= SPLIT_CONTRAST * span])
            if counted is not None:
                counted[polarity] = labelled
        found, sizes, (peaks, inked) = labelled
    else:
        grown = response > GROW_CONTRAST * span * sensitivity
        found, sizes, peaks = _component_stats(grown, strong)
        inked = None
    keep = peaks > 0
    merged = np.zeros(len(found), dtype=bool)
    if sensitivity >= 1.0:  # below 1, a screen: any strong stroke counts, merged lines and bars too
        h, w = found[:, 3] - found[:, 1], found[:, 2] - found[:, 0]
        # not speckle, anatomy, or a wire/ruler bar
        glyph = (h >= MIN_GLYPH_HEIGHT) & (h <= max_height) & (w <= max_width) & (w <= 12 * h) & (h * w >= 6)
        if big is not None:
            rows, columns = response.shape
            tall = keep & (2 * h > max_height) & (h <= BIG_SHARE * rows) & (w <= BIG_SHARE * columns) & (w <= 12 * h)
            big.extend(tuple(box) for box in found[tall].tolist())
        merged = keep & ~glyph & ((h > max_height) | (w > max_width) | (w > 12 * h))
        keep &= glyph
    boxes: list[Box] = [tuple(box) for box in found[keep].tolist()]
    if sure is not None and sensitivity >= 1.0:
        strong_along = peaks[keep] >= np.maximum(MIN_STRONG, STRONG_SHARE * sizes[keep])
        sure.extend(box for box, yes in zip(boxes, strong_along.tolist(), strict=True) if yes)
    if cores is not None and inked is not None:
        ink = inked[keep] >= CORE_SHARE * sizes[keep]
        cores.extend(box for box, yes in zip(boxes, ink.tolist(), strict=True) if yes)
        if merged.any():
            cuts = counted.setdefault(polarity + " cut", {}) if counted is not None else None
            cores.extend(_split(response, found[merged], span, max_height, max_width, cuts))
    if faint is not None and sensitivity >= 1.0:
        flat = peaks[keep] >= CORE_SHARE * sizes[keep]
        faint.extend(box for box, yes in zip(boxes, flat.tolist(), strict=True) if yes)
    return boxes


def _split(
    response: np.ndarray,
    merged: np.ndarray,
    span: float,
    max_height: int,
    max_width: int,
    cuts: dict[Box, tuple[np.ndarray, np.ndarray] | None] | None = None,
) -> list[Box]:
    """Glyphs inside components too big for one (detection pixels): their cores at
    ``SPLIT_CONTRAST``.

    Burned-in text over a bone or soft-tissue edge is joined to it at ``GROW_CONTRAST``
    (a clavicle's ridge, a shoulder's rim stand out by a tenth of the range), and the
    union is anatomy-sized: white "RESUS" and "MOBILE" over a clavicle on real films were
    never candidates. Their strokes stand out by most of the range, the edge beneath by a
    fraction: cut at ``SPLIT_CONTRAST`` the letters come apart from it. Only letters of a
    row pass (``SPLIT_WORD`` pieces of one height side by side): bone cut this way leaves
    ridges and specks, seldom a row of letter-sized, letter-shaped pieces. ``cuts`` keeps
    each component's pieces for another look at the same ``response`` (by its box).
    """
    pieces: list[Box] = []
    cut = SPLIT_CONTRAST * span
    for x0, y0, x1, y1 in merged.tolist():
        key = (x0, y0, x1, y1)
        if cuts is not None and key in cuts:
            labelled = cuts[key]
        else:
            crop = response[y0:y1, x0:x1] >= cut
            labelled = _component_stats(crop, crop)[:2] if crop.any() else None
            if cuts is not None:
                cuts[key] = labelled
        if labelled is None:
            continue
        found, sizes = labelled
        h, w = found[:, 3] - found[:, 1], found[:, 2] - found[:, 0]
        glyph = (h >= SPLIT_MIN_HEIGHT) & (h <= max_height) & (w <= max_width) & (w <= 2 * h) & (sizes >= 0.2 * h * w)
        offset = np.array([x0, y0, x0, y0])
        pieces += [tuple(box) for box in (found[glyph] + offset).tolist()]
    out: list[Box] = []
    for line, count, _ in _group_lines(pieces, gap_ratio=1.0, height_ratio=SPLIT_HEIGHT_RATIO):
        if count >= SPLIT_WORD:
            out += [p for p in pieces if _inside(p, line)]
    return out


#: ``_group_lines`` compares this many pairs of boxes per vectorised block.
GROUP_BLOCK = 1 << 18


def _group_lines(
    boxes: list[Box],
    gap_ratio: float = 1.2,
    min_gap: float | None = None,
    height_ratio: float = 3.0,
    aligned: float | None = None,
) -> list[tuple[Box, int, int]]:
    """Merge glyph boxes that sit on one line close together: (box, glyphs, median height),
    the lines in the order of their first box. With ``aligned``, two glyphs join only when
    their bottoms or their tops are within that share of the taller one's height (plus a
    pixel): on one baseline."""
    if not boxes:
        return []
    # the pairs test is symmetric and the lines are its connected components; a pair
    # shares rows (``overlap >= 0``), so with the boxes sorted by top only the pairs whose
    # second box starts within the first's rows are tested, vectorised a block at a time
    # (all n^2 pairs cost a film with 2,400 glyph boxes 0.1 s a call, a Python union-find
    # over the pairs found as much again)
    n = len(boxes)
    b = np.asarray(boxes, dtype=np.int64)
    order = np.argsort(b[:, 1], kind="stable")
    x0, y0, x1, y1 = b[order].T
    h = y1 - y0
    ends = np.searchsorted(y0, y1, side="right")  # sorted j < ends[i]: y0[j] <= y1[i]
    counts = np.maximum(ends - np.arange(n) - 1, 0)
    pairs_i, pairs_j = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    start = 0
    while start < n:
        stop = min(n, start + 1 + int(np.searchsorted(np.cumsum(counts[start:]), GROUP_BLOCK)))
        block = counts[start:stop]
        first = np.repeat(np.arange(start, stop), block)
        second = first + 1 + np.arange(len(first)) - np.repeat(np.cumsum(block) - block, block)
        start = stop
        hi, hj = h[first], h[second]
        overlap = np.minimum(y1[first], y1[second]) - np.maximum(y0[first], y0[second])
        gap = np.maximum(x0[second] - x1[first], x0[first] - x1[second])
        tall = np.maximum(hi, hj)
        near = (overlap >= 0.4 * np.minimum(hi, hj)) & (gap <= gap_ratio * tall)
        near &= (hj <= height_ratio * hi) & (hi <= height_ratio * hj)
        if min_gap is not None:  # glyphs in a column follow each other, they do not overlap
            near &= gap >= min_gap * tall
        if aligned is not None:
            reach = aligned * tall + 1
            near &= (np.abs(y1[first] - y1[second]) <= reach) | (np.abs(y0[first] - y0[second]) <= reach)
        pairs_i.append(order[first[near]])
        pairs_j.append(order[second[near]])
    labels = _components_of(n, np.concatenate(pairs_i), np.concatenate(pairs_j))
    # per line (members sorted by line, then height): its box, count and median height,
    # the lines in the order of their first box
    by_line = np.lexsort((b[:, 3] - b[:, 1], labels))
    ordered = b[by_line]
    starts = np.flatnonzero(np.r_[True, labels[by_line][1:] != labels[by_line][:-1]])
    sizes = np.diff(np.r_[starts, n])
    heights = ordered[:, 3] - ordered[:, 1]
    upper = heights[starts + sizes // 2]
    lower = heights[starts + (sizes - 1) // 2]
    medians = np.trunc((upper + lower) / 2).astype(np.int64)  # int(np.median(...))
    low = np.minimum.reduceat(ordered, starts)
    high = np.maximum.reduceat(ordered, starts)
    firsts = np.minimum.reduceat(by_line, starts)
    rows = sorted(np.column_stack([firsts, low, high, sizes, medians]).tolist())
    return [((x0, y0, x1, y1), count, height) for _, x0, y0, _, _, _, _, x1, y1, count, height in rows]


def _components_of(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """A label per node of the graph with edges ``first``-``second``: equal within a
    connected component (hooking roots to the smaller one, then pointer jumping, vectorised;
    scipy's ``csgraph`` would do it too, but its import costs a worker 0.2 s)."""
    labels = np.arange(n)
    while True:
        a, b = labels[first], labels[second]
        if np.array_equal(a, b):
            return labels
        low = np.minimum(a, b)
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        while True:  # every node to its root
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped


def detect(
    arr: np.ndarray,
    window: float | None = None,
    dense: bool = False,
    big: list[Box] | None = None,
    finer: list[Box] | None = None,
    inner: list[tuple[Box, Box]] | None = None,
    screen: dict[str, Any] | None = None,
) -> list[Region]:
    """Candidate text lines: thin high-contrast strokes of glyph size, grouped into lines.

    Works on a copy at most ``DETECTION_SIDE`` pixels a side; cheap enough to run on
    every image so that only images with candidates pay for OCR. ``window`` (the
    header's WindowWidth, stored values) narrows the contrast scale to what a viewer
    shows: text that stands out only in the display window of a 12-bit image is found.
    Glyphs left alone on their row but stacked in a column become a vertical line.
    ``dense`` groups strictly by glyph height (``DENSE_HEIGHT_RATIO``): the lines of a
    page of annotations beside anatomy, for a second look at an image known to hold text;
    with ``big``, it also receives the boxes (image pixels) of stroke components too tall
    for a glyph there (anatomy, with any label that touches it merged in). Outside the
    dense look, lines of glyphs whose strokes are wider than the top-hat window come from
    a coarse screen (``COARSE``, ``BIG_GLYPH``). ``finer``, when given, receives the lines
    of ink in regions too small to read at their own line height (``_finer_lines``,
    image pixels): text the dense look may find at its own scale; ``inner``, the same
    lines in regions big enough to read, with the region's box (``_finer_lines``: read at
    the region's scale, they may not be read at all). ``screen``, a dict the caller keeps
    for one image: the stroke components labelled by one call, reused by the next (the
    screen's and the dense look's differ only in the glyph sizes they keep).
    """
    rows, columns = arr.shape
    factor = detection_factor(rows, columns)
    pooled = arr
    if min(rows, columns) < factor:  # a line of pixels: pad (a small copy) to one whole block
        pooled = np.pad(arr, ((0, max(0, factor - rows)), (0, max(0, factor - columns))), mode="edge")
    ratio = DENSE_HEIGHT_RATIO if dense else 3.0
    sure: list[Box] = []
    tall: list[Box] = []
    wide: list[tuple[Box, int, int]] = []
    cores: list[Box] = []
    faint: tuple[list[Box], list[Box]] = ([], [])
    pools: list[np.ndarray] = []
    glyphs = _glyph_boxes(
        pooled,
        factor,
        window=window,
        max_glyph=DENSE_MAX_GLYPH if dense else None,
        sure=sure,
        big=tall,
        wide=None if dense else wide,
        cores=cores,
        pooled=pools,
        faint=None if dense else faint,
        counted=screen,
    )
    if big is not None:
        big.extend(
            (x0 * factor, y0 * factor, min(columns, x1 * factor), min(rows, y1 * factor)) for x0, y0, x1, y1 in tall
        )
    # lines of big glyphs are grouped apart (a skull's flat bone pieces strung into text
    # lines made regions of the skull's height on a film scan); overlapping boxes merge below
    lines = _group_lines(glyphs, height_ratio=ratio) + wide
    # Glyphs of narrow "lines" (one or two glyphs, or both polarities of one letter) may
    # be letters of a vertical line: stacked close, one after the other.
    narrow = [box for box, _, _ in lines if box[2] - box[0] <= 1.6 * (box[3] - box[1])]
    loose = [g for g, yes in zip(glyphs, _inside_any(glyphs, narrow), strict=True) if yes]
    vertical = []
    transposed = [(b[1], b[0], b[3], b[2]) for b in loose]
    for (y0, x0, y1, x1), count, height in _group_lines(transposed, VERTICAL_GAP, VERTICAL_OVERLAP, ratio):
        if count >= VERTICAL_GLYPHS and y1 - y0 >= 2.5 * (x1 - x0):
            vertical.append(((x0, y0, x1, y1), count, height))
    if vertical:
        lines = [line for line in lines if not any(_inside(line[0], v[0]) for v in vertical)]
    padded = _padded(lines, False, factor, rows, columns) + _padded(vertical, True, factor, rows, columns)
    # a line of weak components only (noise on a ridge, a ramp at the border) is no text
    centres = [((x0 + x1) * factor // 2, (y0 + y1) * factor // 2) for x0, y0, x1, y1 in sure]
    merged = _merge_overlapping(padded, ratio if dense else None)
    if not dense:
        holds = _holds_any([item[0] for item in merged], centres)
        merged = [item for item, yes in zip(merged, holds, strict=True) if yes]
    # the shape tests first, the polarity (two percentiles of the crop) only for what stays
    line_like = [_line_like(_outline(*item)) for item in merged]
    kept = [item for item, yes in zip(merged, line_like, strict=True) if yes]
    if dense:
        # lines of ink only: a chest film's ribs and shoulder cut into lines of one height
        # are ~700 lines of faint ridge pieces, each read by OCR and shown to the detector
        # (a film with one word found spent 80 s there, loaded); a film scan's annotation
        # lines all hold letters of ink (SC1: 299 of 373 lines, every labelled text box)
        ink = [((x0 + x1) * factor // 2, (y0 + y1) * factor // 2) for x0, y0, x1, y1 in cores]
        holds = _holds_any([item[0] for item in kept], ink)
        return [_region(arr, *item) for item, yes in zip(kept, holds, strict=True) if yes]
    dropped = [
        (x0 // factor, y0 // factor, -(-x1 // factor), -(-y1 // factor))
        for ((x0, y0, x1, y1), *_), yes in zip(merged, line_like, strict=True)
        if not yes
    ]
    rescued = _rescued(dropped, cores)
    if dropped:
        rescued += _faint_lines(dropped, faint, glyphs, rescued, pools[0], pools[1], window)
    if finer is not None:
        finer += [
            (x0 * factor, y0 * factor, min(columns, x1 * factor), min(rows, y1 * factor))
            for (x0, y0, x1, y1), *_ in _finer_lines([_outline(*item) for item in kept], cores, factor)
        ]
    if inner is not None:
        for outline in (_outline(*item) for item in kept):
            inner += [
                (outline.box, (x0 * factor, y0 * factor, min(columns, x1 * factor), min(rows, y1 * factor)))
                for (x0, y0, x1, y1), *_ in _finer_lines([outline], cores, factor, small=False)
            ]
    # outlined letters are text wherever they are, also inside a region kept whole (a
    # film's anatomy chained into one region as tall as the image, read at its scale);
    # their rims are strokes, so an image without any candidate line has none (and a
    # text-free image does not pay for the look)
    whole = (0, 0, pooled.shape[1] // factor, pooled.shape[0] // factor)
    outlined = _rescued([whole], _outlined_letters(*pools)) if merged else []
    # (a line the screen found already, in a region of about its height, is not found twice)
    known = [
        (x0 // factor, y0 // factor, -(-x1 // factor), -(-y1 // factor), max(1, height) // factor)
        for (x0, y0, x1, y1), _glyphs, height, *_ in kept
    ]
    rescued += [
        line
        for line in outlined
        if not any(_inside(line[0], found[0]) for found in rescued)
        and not any(_inside(line[0], k[:4]) and k[4] <= OUTLINE_KNOWN * line[2] for k in known)
    ]
    merged_rescued = _merge_overlapping(_padded(rescued, False, factor, rows, columns))
    return [_region(arr, *item) for item in kept + [item for item in merged_rescued if _line_like(_outline(*item))]]


def _finer_lines(kept: list[Region], cores: list[Box], factor: int, small: bool = True) -> list[tuple[Box, int, int]]:
    """Lines of ink in a kept region too small at its own line height to be read
    (``policy.is_small``) whose glyphs are finer than ``DENSE_HEIGHT_RATIO`` times its
    line height: (box, glyphs, median height), detection pixels.

    A region's line height is its tallest line's, and a region with room for two glyphs
    of that height is kept as a marker without OCR. A ruler's "100 mm" beside its
    bracket merged with the bracket into one region 200 pixels "high" and 136 wide: the
    label was never read. Its letters are ink (``_rescued``): at their own scale they are
    a line, and an image holding one gets the dense look (``cleaning.dense_lines``),
    which groups lines strictly by height and reads them at theirs. They are not regions
    of the first pass: text the first pass reads is left out of the dense look, whose
    labels beside anatomy ride on the lines it reads itself. Only such regions are looked
    into: a region read at its scale is read whole, and cutting it into lines of ink read
    "UPRIGHT" as "UPR" and "GHT", text. A line with room for two glyphs at most of its
    own height is a marker or a speck there too (a pair of specks on a text-free film
    brought it a dense look).

    With ``small`` False, the regions looked into are the others, big enough to read at
    their line height: the caller decides, once they are read, whether a line there needs
    its own scale (``cleaning._judge``: only where nothing was read; a small line of
    text chained to a panel letter five times its height was read at the letter's scale,
    as junk).
    """
    out = []
    for region in kept:
        if region.vertical or is_small(region) != small:
            continue
        outer = (region.x0 // factor, region.y0 // factor, -(-region.x1 // factor), -(-region.y1 // factor))
        out += [
            line
            for line in _rescued([outer], cores)
            if DENSE_HEIGHT_RATIO * line[2] * factor < region.line_height and not is_small(_outline(*line))
        ]
    return out


def _padded(
    lines: list[tuple[Box, int, int]], upright: bool, factor: int, rows: int, columns: int
) -> list[tuple[Box, int, int, bool]]:
    """Lines (detection pixels) padded by a quarter of their height, in image pixels:
    (box, glyphs, line height, upright)."""
    out = []
    for (x0, y0, x1, y1), count, height in lines:
        pad = max(2, ((x1 - x0) if upright else (y1 - y0)) // 4)
        box = (
            max(0, (x0 - pad) * factor),
            max(0, (y0 - pad) * factor),
            min(columns, (x1 + pad) * factor),
            min(rows, (y1 + pad) * factor),
        )
        out.append((box, count, height * factor, upright))
    return out


def _faint_lines(
    dropped: list[Box],
    faint: tuple[list[Box], list[Box]],
    glyphs: list[Box],
    rescued: list[tuple[Box, int, int]],
    high: np.ndarray,
    low: np.ndarray,
    window: float | None,
) -> list[tuple[Box, int, int]]:
    """Lines of faint letters in regions dropped as no line, where no line of ink is:
    (box, glyphs, median height), detection pixels.

    ``_rescued`` finds letters of ink; letters burned in at a quarter of the range (a
    faint time) have none, and chained to a film's ridge pieces they were dropped with
    them. The faint glyphs of one polarity (``faint``: bright, then dark) are grouped on
    one baseline (``FAINT_GAP`` to ``FAINT_ALIGN``), and in each row, runs of neighbours
    of one stroke level and width shaped as letters (``_one_level``) make a line; a
    film's ridge pieces in a row differ in contrast, width or baseline, or are single
    strokes. A line grows by the screen's ``glyphs`` beside it on its baseline at its
    level (``_extended``). A line that overlaps one of ink is that line (found already).
    ``high`` and ``low`` are the image pooled as the screen pooled it, ``window`` the
    screen's.
    """
    out: list[tuple[Box, int, int]] = []
    outers = np.asarray(dropped, dtype=np.int64).reshape(-1, 4)
    span = None
    others = np.asarray(glyphs, dtype=np.int64).reshape(-1, 4)
    for pooled, bright, boxes in ((high, True, faint[0]), (low, False, faint[1])):
        if len(boxes) < FAINT_WORD:
            continue
        every = np.asarray(boxes, dtype=np.int64)
        # glyphs at least ``SPLIT_MIN_HEIGHT`` high: specks of noise have no stroke to measure
        found = every[within(every[:, None, :], outers).any(axis=1) & (every[:, 3] - every[:, 1] >= SPLIT_MIN_HEIGHT)]
        letters: list[Box] = [tuple(g) for g in found.tolist()]
        for line, count, height in _group_lines(
            letters, gap_ratio=FAINT_GAP, min_gap=-FAINT_OVERLAP, height_ratio=FAINT_HEIGHT_RATIO, aligned=FAINT_ALIGN
        ):
            if count < FAINT_WORD or any(_gap(line, known[0]) < 0 for known in rescued):
                continue
            row = np.asarray([b for b in letters if _inside(b, line) and _alike_heights(b[3] - b[1], height)])
            row = row[~_nested(row)]  # a box inside another is a piece of it (a speck in a bowl)
            if len(row) < FAINT_WORD:
                continue
            members: list[Box] = [tuple(b) for b in row[np.argsort(row[:, 0], kind="stable")].tolist()]
            span = stroke_span(low, window) if span is None else span
            strokes = _stroke_levels(members, pooled, bright, span)
            for run in _one_level(members, strokes):
                out.append(_extended([members[k] for k in run], strokes[run], others, pooled, bright, span))
    return out


def _alike_heights(a: int, b: int) -> bool:
    """Whether two glyph heights are within ``FAINT_HEIGHT_RATIO``."""
    return max(a, b) <= FAINT_HEIGHT_RATIO * min(a, b)


def _beside(a: Box, b: Box) -> bool:
    """Whether ``b`` follows ``a`` on its baseline (``FAINT_GAP`` to ``FAINT_ALIGN``)."""
    tall = max(a[3] - a[1], b[3] - b[1])
    reach = FAINT_ALIGN * tall + 1
    return (
        -FAINT_OVERLAP * tall <= b[0] - a[2] <= FAINT_GAP * tall
        and (abs(a[3] - b[3]) <= reach or abs(a[1] - b[1]) <= reach)
        and _alike_heights(a[3] - a[1], b[3] - b[1])
    )


def _one_level(members: list[Box], strokes: np.ndarray) -> list[list[int]]:
    """Runs (indices into ``members``, left to right) of ``FAINT_WORD`` or more glyphs,
    each beside the one before, of one stroke level and width, shaped as letters."""
    level, width, breadth, value = strokes.T
    wide = np.array([max(1, b[2] - b[0]) for b in members], dtype=np.float64)
    runs: list[list[int]] = [[0]]
    for k in range(1, len(members)):
        i = runs[-1][-1]
        if (
            _beside(members[i], members[k])
            and _same_level(level[[i, k]], value[[i, k]], FAINT_LEVEL)
            and _same_width(width[[i, k]], FAINT_WIDTH)
        ):
            runs[-1].append(k)
        else:
            runs.append([k])
    return [
        run
        for run in runs
        if len(run) >= FAINT_WORD
        and _same_level(level[run], value[run], FAINT_LEVEL_SPREAD)
        and _same_width(width[run], FAINT_WIDTH_SPREAD)
        and float(np.median(breadth[run])) >= FAINT_BREADTH
        and float(np.median(width[run] / wide[run])) <= FAINT_THIN
    ]


def _same_width(width: np.ndarray, ratio: float) -> bool:
    """Whether strokes share one width: within ``ratio``, or a pixel at detection scale."""
    return bool(width.max() <= ratio * width.min() or np.ptp(width) <= 1.0)


def _same_level(level: np.ndarray, value: np.ndarray, ratio: float) -> bool:
    """Whether strokes share one contrast (within ``ratio``) or one value (``FAINT_VALUE``)."""
    return bool(level.max() <= ratio * level.min() or np.ptp(value) <= FAINT_VALUE)


def _extended(
    run: list[Box], strokes: np.ndarray, others: np.ndarray, pooled: np.ndarray, bright: bool, span: float
) -> tuple[Box, int, int]:
    """A run of faint letters grown by the glyphs beside it, each at the run's level:
    (box, glyphs, median height)."""
    height = int(np.median([b[3] - b[1] for b in run]))
    x0, y0, x1, y1 = run[0][0], min(b[1] for b in run), run[-1][2], max(b[3] for b in run)
    reach = int(FAINT_GAP * FAINT_HEIGHT_RATIO * height) + 1
    near = others[(others[:, 2] > x0 - reach) & (others[:, 0] < x1 + reach) & (others[:, 3] > y0) & (others[:, 1] < y1)]
    near = near[~within(near, (x0, y0, x1, y1))]
    candidates = [tuple(b) for b in near.tolist() if _alike_heights(b[3] - b[1], height)]
    count = len(run)
    if candidates:
        levels = _stroke_levels(candidates, pooled, bright, span)
        level, value = float(np.median(strokes[:, 0])), float(np.median(strokes[:, 3]))
        fits = [
            c
            for c, (lv, _w, _l, v) in zip(candidates, levels.tolist(), strict=True)
            if max(lv, level) <= FAINT_LEVEL * min(lv, level) or abs(v - value) <= FAINT_VALUE
        ]
        left, right = run[0], run[-1]
        while True:  # leftwards, then rightwards, the nearest glyph beside the end
            step = [c for c in fits if c[0] < left[0] and _beside(c, left)]
            if not step:
                break
            left = max(step, key=lambda c: c[2])
            count += 1
        while True:
            step = [c for c in fits if c[0] > right[0] and _beside(right, c)]
            if not step:
                break
            right = min(step, key=lambda c: c[0])
            count += 1
        x0, x1 = left[0], right[2]
        y0, y1 = min(y0, left[1], right[1]), max(y1, left[3], right[3])
    return (x0, y0, x1, y1), count, height


def _nested(boxes: np.ndarray) -> np.ndarray:
    """For each of ``boxes``, whether it lies inside another of them (blocks of at most
    ``GROUP_BLOCK`` pairs)."""
    out = np.zeros(len(boxes), dtype=bool)
    step = max(1, GROUP_BLOCK // max(1, len(boxes)))
    for start in range(0, len(boxes), step):
        block = boxes[start : start + step]
        holders = within(block[:, None, :], boxes) & (block[:, None, :] != boxes).any(axis=2)
        out[start : start + step] = holders.any(axis=1)
    return out


def _stroke_levels(members: list[Box], pooled: np.ndarray, bright: bool, span: float) -> np.ndarray:
    """Per glyph (detection pixels, of one polarity): its stroke contrast (the 90th
    percentile of the top-hat over its largest component, a share of ``span``), stroke
    width (the mean over its half-contrast pixels of the shorter of their row and column
    runs), ``_breadth`` and stroke value (90th percentile, a share of ``span``; dark
    strokes negated). The top-hat is taken again on a crop around them, as the screen
    took it (its window's margin around the glyphs: the same response)."""
    b = np.asarray(members, dtype=np.int64)
    rows, columns = pooled.shape
    margin = TOPHAT_SIZE
    x0, y0 = max(0, int(b[:, 0].min()) - margin), max(0, int(b[:, 1].min()) - margin)
    x1, y1 = min(columns, int(b[:, 2].max()) + margin), min(rows, int(b[:, 3].max()) + margin)
    crop = pooled[y0:y1, x0:x1].astype(np.float32)
    if bright:
        response, raw = crop - _dilate(_erode(crop, TOPHAT_SIZE), TOPHAT_SIZE), crop
    else:
        response, raw = _erode(_dilate(crop, TOPHAT_SIZE), TOPHAT_SIZE) - crop, -crop
    out = []
    for gx0, gy0, gx1, gy1 in b.tolist():
        part = (slice(gy0 - y0, gy1 - y0), slice(gx0 - x0, gx1 - x0))
        grown = response[part] > GROW_CONTRAST * span
        if not grown.any():
            out.append((0.0, 0.0, 0.0, 0.0))
            continue
        labels = _labels(grown)
        biggest = labels == 1 + int(np.argmax(np.bincount(labels[grown])[1:]))
        level = float(np.percentile(response[part][biggest], 90))
        half = biggest & (response[part] >= 0.5 * level)
        width = float(np.mean(np.minimum(_runs(half), _runs(half.T).T)[half]))
        breadth = _breadth(half)
        value = float(np.percentile(raw[part][biggest], 90))
        out.append((level / span, width, breadth, value / span))
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


def _breadth(mask: np.ndarray) -> float:
    """How far ``mask``'s pixels spread across their main axis: the square root of the
    ratio of the smaller to the larger variance of their coordinates (one straight
    stroke: its width over its length, ~0.15; a letter spans both ways: 0.3-1)."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 3:
        return 0.0
    low, high = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(np.float64)))
    return math.sqrt(max(low, 0.0) / high) if high > 0 else 0.0


def _runs(mask: np.ndarray) -> np.ndarray:
    """Per pixel of ``mask``, the length of its run along its row (0 off the mask)."""
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).view(np.int8), axis=1)
    starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
    lengths = ends[1] - starts[1]
    out = np.zeros(mask.shape, dtype=np.int64)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[np.repeat(starts[0], lengths), np.repeat(starts[1], lengths) + offsets] = np.repeat(lengths, lengths)
    return out


def _rescued(dropped: list[Box], cores: list[Box]) -> list[tuple[Box, int, int]]:
    """Lines of ink in regions dropped as no line (``_line_like``): (box, glyphs, median
    height), detection pixels.

    Grouping chains glyphs by their neighbours: on a film's ribs, clavicles and shoulder
    the top-hat leaves hundreds of faint ridge pieces of glyph size, and they chained
    white "AP ERECT" and "RESUS" beside a shoulder into one group 70 line heights tall;
    elsewhere a chain of a shoulder's texture merged with "MOBILE" into one region 12
    line heights tall. No text line is that tall, and the region was dropped with the
    text in it. Burned-in letters are ink: most of their pixels stand out by
    ``SPLIT_CONTRAST`` (0.4-0.98 of them on real films); the ridge pieces at most 0.07.
    Grouped alone (of one height, ``DENSE_HEIGHT_RATIO``), at least ``CORE_WORD`` of
    them in a row, the letters are lines again; the rest of the region is dropped as
    before (kept whole, it un-merged anatomy into dozens of new candidates).
    """
    if not dropped or not cores:
        return []
    out = []
    every = np.asarray(cores, dtype=np.int64).reshape(-1, 4)
    for x0, y0, x1, y1 in dropped:
        inked = every[within(every, (x0, y0, x1, y1))]
        # a component holding two or more others is letters joined to each other or to
        # what they touch (a letter holds at most its counter, seen in the other polarity)
        holds = np.zeros(len(inked), dtype=bool)
        for k in range(len(inked)):
            holds[k] = (within(inked, inked[k]) & (inked != inked[k]).any(axis=1)).sum() >= 2
        letters: list[Box] = [tuple(g) for g in inked[~holds].tolist()]
        out += [
            found
            for found in _group_lines(letters, height_ratio=DENSE_HEIGHT_RATIO)
            if found[1] >= CORE_WORD and found[0][3] - found[0][1] <= CORE_LINE * found[2]
        ]
    return out


def _outlined_letters(high: np.ndarray, low: np.ndarray) -> list[Box]:
    """Letters drawn in the image's white and outlined in its black (detection pixels).

    Bedside films' overlays ("liegend", "Bettaufnahme") are white letters with a
    one-pixel black rim, over a shoulder or a clavicle: their top-hat over the bright bone
    is weak, the rims join the letters to each other and to the bone's edges, and the
    screen's group is dropped as no line with the letters in it. Anatomy has no pixel of
    the top tenth of the range within two pixels of one of the bottom tenth (edges are
    blurred, noise is far smaller); these letters are nothing else. Their bodies, of a
    glyph's size and shape, join the glyphs of ink ``_rescued`` groups again. ``high``
    and ``low`` are the image pooled as the screen pooled it (``_glyph_boxes``' ``pooled``).
    """
    top, bottom = float(high.max()), float(low.min())
    reach = OUTLINE_REACH * (top - bottom)
    if reach <= 0:
        return []
    black = _dilate((low <= bottom + reach).view(np.uint8), OUTLINE_RING) > 0
    letters = (high >= top - reach) & black
    if not letters.any():
        return []
    found, sizes, _ = _component_stats(letters, letters)
    h, w = found[:, 3] - found[:, 1], found[:, 2] - found[:, 0]
    glyph = (h >= SPLIT_MIN_HEIGHT) & (h <= GLYPH_SHARE * high.shape[0]) & (w <= 3 * h) & (sizes >= 6)
    return [tuple(box) for box in found[glyph].tolist()]


def stroke_span(arr: np.ndarray, window: float | None = None) -> float:
    """The contrast scale glyph contrast is measured against, as the screen measures it:
    the image's 1-99.5 percentile range, narrowed to the display window when given."""
    step = (max(1, arr.shape[0] // 256), max(1, arr.shape[1] // 256))
    p_low, p_high = np.percentile(arr[:: step[0], :: step[1]], (1, 99.5))
    span = max(float(p_high - p_low), 1.0)
    return min(span, float(window)) if window and window > 1.0 else span


def _inside_any(boxes: list[Box], outers: list[Box]) -> list[bool]:
    """For each of ``boxes``, whether it lies inside one of ``outers`` (``_inside``, all
    pairs at once: a chest film's ~1,500 glyphs against its ~1,000 narrow lines)."""
    if not boxes or not outers:
        return [False] * len(boxes)
    o = np.asarray(outers, dtype=np.int64)
    return _any_in_blocks(boxes, len(o), lambda r: within(r, o))


def _holds_any(boxes: list[Box], points: list[tuple[int, int]]) -> list[bool]:
    """For each of ``boxes``, whether one of ``points`` (x, y) lies in it (its end
    excluded), all pairs at once."""
    if not boxes or not points:
        return [False] * len(boxes)
    p = np.asarray(points, dtype=np.int64)
    return _any_in_blocks(
        boxes,
        len(p),
        lambda r: (r[..., 0] <= p[:, 0]) & (p[:, 0] < r[..., 2]) & (r[..., 1] <= p[:, 1]) & (p[:, 1] < r[..., 3]),
    )


def _any_in_blocks(boxes: list[Box], others: int, pairs: Callable[[np.ndarray], np.ndarray]) -> list[bool]:
    """For each of ``boxes``, whether ``pairs`` (a (block, 1, 4) slice of them against all
    ``others`` at once) holds for one of the others: blocks of at most ``GROUP_BLOCK`` pairs."""
    b = np.asarray(boxes, dtype=np.int64)
    out = np.zeros(len(b), dtype=bool)
    step = max(1, GROUP_BLOCK // others)
    for start in range(0, len(b), step):
        out[start : start + step] = pairs(b[start : start + step, None, :]).any(axis=1)
    return out.tolist()


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
    sure: list[Box] | None = None,
    big: list[Box] | None = None,
    wide: list[tuple[Box, int, int]] | None = None,
    cores: list[Box] | None = None,
    pooled: list[np.ndarray] | None = None,
    faint: tuple[list[Box], list[Box]] | None = None,
    counted: dict[str, Any] | None = None,
) -> list[Box]:
    """Glyph-sized stroke components of both polarities, in pixels of ``arr`` pooled by ``factor``.

    ``sensitivity`` scales the contrast thresholds; below 1 (a screen on a reduced-resolution
    preview whose thin strokes the wavelet low-pass has dimmed, and whose lower grow
    threshold merges glyphs into lines) every component with a strong pixel counts,
    whatever its size and shape. ``wide``, when given, receives the lines of big glyphs
    of the coarse screen (``_wide_lines``); ``cores``, the glyphs of ink (``_components``);
    ``pooled``, the block max and min (``_pool``), for ``_outlined_letters``; ``faint``,
    the faint letters (``_components``) of the bright polarity, then of the dark one;
    ``counted``, the components' labelling kept for another look at the same ``arr``.
    """
    high, low = _pool(arr, factor)
    if pooled is not None:
        pooled[:] = [high, low]
    if high.dtype.kind != "u":  # signed or float: differences need room
        high, low = high.astype(np.float32), low.astype(np.float32)
    span = stroke_span(low, window)
    strong = CONTRAST * span * sensitivity  # a glyph needs one pixel of this top-hat response
    det_rows, det_columns = high.shape
    max_height, max_width = max(8, int(GLYPH_SHARE * det_rows)), max(16, int(0.6 * det_columns))
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
        response = high - _dilate(eroded, TOPHAT_SIZE)
        bright = None if faint is None else faint[0]
        boxes += _components(
            response, span, max_height, max_width, sensitivity, sure, big, cores, bright, counted, "bright"
        )
    dilated = _dilate(low, TOPHAT_SIZE)
    if (dilated - low).max() >= strong:
        response = _erode(dilated, TOPHAT_SIZE) - low
        dark = None if faint is None else faint[1]
        boxes += _components(
            response, span, max_height, max_width, sensitivity, sure, big, cores, dark, counted, "dark"
        )
    if wide is not None:
        tallest = min(DENSE_MAX_GLYPH // factor, int(GLYPH_SHARE * det_rows))  # a glyph's limits, as above
        wide.extend(_wide_lines(high, low, span, boxes, sure, tallest))
    return boxes


def _wide_lines(
    high: np.ndarray, low: np.ndarray, span: float, fine: list[Box], sure: list[Box] | None, max_height: int
) -> list[tuple[Box, int, int]]:
    """Lines of glyphs whose strokes are wider than the top-hat window: (box, glyphs,
    median height), detection pixels.

    Every ``COARSE``-th pixel of the detection image's block max (min), top-hat as at
    detection scale; a component counts as a glyph when it has a glyph's shape, is
    ``BIG_GLYPH`` to ``max_height`` high, and strong in most of its pixels
    (``WIDE_STRONG``). A line is a row of ``WIDE_WORD`` such glyphs in one polarity, of
    which at least one holds no glyph of ``fine`` (the detection-scale glyphs) half its
    height (else the fine screen saw the word). Its glyphs go to ``sure``. A text-free
    image seldom has one: a thick collimation border is a step, which a top-hat does not
    see, and bones and organs at this scale are blobs strong at their rim only.
    """
    if min(high.shape) < COARSE * TOPHAT_SIZE:
        return []
    # sampled, not pooled again: a stroke this wide keeps a few samples, and a pooling pass
    # cost three times the rest (1.4 ms on a 3000x2500 film)
    coarse_high = np.ascontiguousarray(high[COARSE // 2 :: COARSE, COARSE // 2 :: COARSE])
    coarse_low = np.ascontiguousarray(low[COARSE // 2 :: COARSE, COARSE // 2 :: COARSE])
    columns = coarse_high.shape[1]
    strong = CONTRAST * span
    responses = []
    eroded = _erode(coarse_high, TOPHAT_SIZE)
    if (coarse_high - eroded).max() >= strong:
        responses.append(coarse_high - _dilate(eroded, TOPHAT_SIZE))
    dilated = _dilate(coarse_low, TOPHAT_SIZE)
    if (dilated - coarse_low).max() >= strong:
        responses.append(_erode(dilated, TOPHAT_SIZE) - coarse_low)
    small = np.asarray(fine, dtype=np.int64).reshape(-1, 4)
    small_height = small[:, 3] - small[:, 1]

    def seen(box: Box) -> bool:
        return bool((within(small, box) & (2 * small_height >= box[3] - box[1])).any())

    out: list[tuple[Box, int, int]] = []
    for response in responses:
        found, sizes, peaks = _component_stats(response > GROW_CONTRAST * span, response >= strong)
        h, w = found[:, 3] - found[:, 1], found[:, 2] - found[:, 0]
        keep = (COARSE * h >= BIG_GLYPH) & (COARSE * h <= max_height) & (w <= 12 * h) & (w <= 0.6 * columns)
        keep &= peaks >= WIDE_STRONG * sizes
        # a sample stands for the COARSE pixels around it: half a step out on either side
        boxes = found[keep] * COARSE + np.array([-1, -1, 1, 1]) * (COARSE // 2)
        boxes[:, 0:2] = np.maximum(boxes[:, 0:2], 0)
        boxes[:, 2] = np.minimum(boxes[:, 2], high.shape[1])
        boxes[:, 3] = np.minimum(boxes[:, 3], high.shape[0])
        glyphs: list[Box] = [tuple(box) for box in boxes.tolist()]
        # a word of big glyphs in one polarity (the other one's blobs are the same bone
        # seen from its other side); one or two glyphs are a marker, kept anyway
        for line, count, height in _group_lines(glyphs, height_ratio=DENSE_HEIGHT_RATIO):
            members = [g for g in glyphs if _inside(g, line)]
            if count >= WIDE_WORD and not all(seen(g) for g in members):
                out.append((line, count, height))
                if sure is not None:
                    sure.extend(members)
    return out


def preview_has_candidates(preview: np.ndarray, level: int, rows: int, columns: int) -> bool:
    """Whether the reduced-resolution screen sees any stroke that could be a glyph.

    Pooled to a detection scale at least as fine as the full-resolution detector's, with
    contrast thresholds scaled by ``PREVIEW_SENSITIVITY`` (the wavelet low-pass of one
    level leaves a one-pixel line at a quarter of its contrast). Erring towards yes only
    costs a full decode.
    """
    full_factor = detection_factor(rows, columns)
    factor = max(1, full_factor >> level)
    return bool(_glyph_boxes(preview, factor, PREVIEW_SENSITIVITY))


def _merge_overlapping(items: list[tuple], height_ratio: float | None = None) -> list[tuple]:
    """Union padded line boxes that mostly overlap, until none do: (box, glyphs, height, upright).

    With ``height_ratio``, only boxes of about the same line height merge. Each box joins
    the first box before it that it mostly overlaps (``_first_overlap``), found with one
    vectorised test against all of them (a film scan has ~1,000 lines: pairwise in Python
    this was ~2 s of ``SC1``).
    """
    merged = list(items)
    changed = True
    while changed:
        changed = False
        out: list[tuple] = []
        edges = np.zeros((len(merged), 4), dtype=np.int64)  # the boxes of ``out``
        heights = np.zeros(len(merged), dtype=np.float64)
        for box, glyphs, height, upright in merged:
            n = len(out)
            k = _first_overlap(edges[:n], heights[:n], box, height, height_ratio)
            if k < 0:
                edges[n], heights[n] = box, height
                out.append((box, glyphs, height, upright))
                continue
            other, other_glyphs, other_height, other_upright = out[k]
            union = (min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]), max(box[3], other[3]))
            keep_upright = upright if glyphs >= other_glyphs else other_upright
            out[k] = (union, max(glyphs, other_glyphs), max(height, other_height), keep_upright)
            edges[k], heights[k] = union, max(height, other_height)
            changed = True
        merged = out
    return merged


def _first_overlap(edges: np.ndarray, heights: np.ndarray, box: Box, height: float, height_ratio: float | None) -> int:
    """The index of the first row of ``edges`` that ``box`` mostly overlaps (half the
    smaller box lies in the other: the two polarities of one line, not two lines; with
    ``height_ratio``, of about its height), or -1. The rows that share any pixel with
    ``box`` are found at once and only they are tested, in order (a dense film's ~450
    lines: most share none)."""
    x0, y0, x1, y1 = box
    near = np.flatnonzero((edges[:, 0] < x1) & (edges[:, 2] > x0) & (edges[:, 1] < y1) & (edges[:, 3] > y0))
    if not len(near):
        return -1
    area = (x1 - x0) * (y1 - y0)
    for k, (ex0, ey0, ex1, ey1), other in zip(near.tolist(), edges[near].tolist(), heights[near].tolist(), strict=True):
        width = min(ex1, x1) - max(ex0, x0)
        tall = min(ey1, y1) - max(ey0, y0)
        if width <= 0 or tall <= 0 or width * tall < 0.5 * min((ex1 - ex0) * (ey1 - ey0), area):
            continue
        if height_ratio is None or max(other, height) <= height_ratio * min(other, height):
            return k
    return -1


def _outline(box: Box, glyphs: int, height: int, upright: bool = False) -> Region:
    """``_region``'s Region without its polarity (bright as False): for the shape tests."""
    return Region(*box, bright=False, glyphs=glyphs, line_height=max(1, height), vertical=upright)


def _region(arr: np.ndarray, box: Box, glyphs: int, height: int, upright: bool = False) -> Region:
    """A Region whose polarity comes from its border: the padding ring is background."""
    x0, y0, x1, y1 = box
    crop = arr[y0:y1, x0:x1]
    ring = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]]).astype(np.float32)
    ground = float(np.median(ring))
    low, high = value_percentiles(crop, (1, 99), np.float32)
    bright = bool(high - ground >= ground - low)
    return Region(x0, y0, x1, y1, bright=bright, glyphs=glyphs, line_height=max(1, height), vertical=upright)


#: A blanked line hugs its glyphs: their strokes grown over ``GROW_CONTRAST`` (which takes
#: in anti-aliasing) at detection scale (a block of up to 3 pixels), plus this many pixels.
INK_PAD = 2


def ink_boxes(
    arr: np.ndarray,
    box: Box,
    line_height: int,
    bright: bool,
    window: float | None = None,
    span: float | None = None,
) -> list[Box]:
    """The text lines inside ``box`` boxed tight: what is blanked of a region judged text.

    A candidate region is its glyphs padded by a quarter of its height, and a block of two
    lines of unequal length is a rectangle: blanking it whole took up to a line's height
    of anatomy below a name and the empty end of a short line (1.6% of a chest film with
    a two-line banner; 0.9% of a CT scout). Here the glyphs are found again in the box as
    the screen finds them (top-hat strokes at detection scale, grown over
    ``GROW_CONTRAST``; the region's polarity, the other one only when it finds no glyph:
    white text's dark "strokes" are the gaps between its lines, which joined a name to
    the line under it), at most twice the line height (a bone or skull merged into the
    region is left out), grouped into lines; a line needs one glyph with a stroke of
    ``CONTRAST``, weak glyphs beside it (thin anti-aliased digits, punctuation) join it.
    Each line's box is padded by ``INK_PAD`` and clipped to ``box``. Nothing found:
    ``[box]`` (fail closed). Lines of big glyphs (``BIG_GLYPH``) are looked at on the
    coarse screen's scale too, whose window their wide strokes fit. ``span`` is
    ``stroke_span(arr, window)`` when the caller has it (a film scan asks for ~800 boxes).
    """
    rows, columns = arr.shape
    factor = detection_factor(rows, columns)
    if span is None:
        span = stroke_span(arr, window)
    fine = _ink_glyphs(arr, box, line_height, bright, span, factor)
    if fine is None:
        return [box]
    found, strong = fine
    # strokes may be wider than the window: the coarse screen's scale too (for glyphs of
    # its sizes only: a region whose line height is a skull's has no big-glyph ink)
    if BIG_GLYPH * factor <= line_height <= DENSE_MAX_GLYPH:
        coarse = _ink_glyphs(arr, box, line_height, bright, span, factor * COARSE)
        if coarse is not None:
            found, strong = found + coarse[0], strong + coarse[1]
    x0, y0, x1, y1 = box
    lines = [line for line, _count, _height in _group_lines(found)]
    # a line without a strong glyph inside is noise in the padding, or faint anatomy (all
    # pairs at once: a chest film's block cut into lines has hundreds of each)
    strong_boxes = np.asarray(strong, dtype=np.int64).reshape(-1, 1, 4)
    held = np.asarray(within(strong_boxes, np.asarray(lines, dtype=np.int64).reshape(-1, 4)).any(axis=0))
    pad = INK_PAD
    out = [
        (max(x0, lx0 - pad), max(y0, ly0 - pad), min(x1, lx1 + pad), min(y1, ly1 + pad))
        for (lx0, ly0, lx1, ly1), strong_inside in zip(lines, held.tolist(), strict=True)
        if strong_inside
    ]
    return out or [box]


def pooled_surround(arr: np.ndarray, box: Box, factor: int) -> tuple[tuple[int, int], np.ndarray, np.ndarray] | None:
    """``box`` with a top-hat window's margin, pooled by ``factor`` (max and min, float32
    unless unsigned): (its top-left corner in image pixels, high, low); None when it is too
    small to pool. The corner is on the pooling grid, so a component's box times ``factor``
    plus the corner is its box in the image."""
    rows, columns = arr.shape
    x0, y0, x1, y1 = box
    margin = TOPHAT_SIZE * factor
    cx0, cy0 = max(0, x0 - margin) // factor * factor, max(0, y0 - margin) // factor * factor
    cx1 = min(columns, cx0 + -(-(min(columns, x1 + margin) - cx0) // factor) * factor)
    cy1 = min(rows, cy0 + -(-(min(rows, y1 + margin) - cy0) // factor) * factor)
    crop = arr[cy0:cy1, cx0:cx1]
    if min(crop.shape) < factor:
        return None
    high, low = _pool(crop, factor)
    if high.dtype.kind != "u":
        high, low = high.astype(np.float32), low.astype(np.float32)
    return (cx0, cy0), high, low


def _ink_glyphs(
    arr: np.ndarray, box: Box, line_height: int, bright: bool, span: float, factor: int
) -> tuple[list[Box], list[Box]] | None:
    """``ink_boxes``' glyphs in ``box`` at detection scale ``factor``: (all, strong), image
    pixels; None when the box is too small to pool. (The components' tests on arrays: a
    chest film's block of anatomy holds thousands.)"""
    pooled = pooled_surround(arr, box, factor)
    if pooled is None:
        return None
    (cx0, cy0), high, low = pooled
    x0, y0, x1, y1 = box
    tallest = 2 * max(1, line_height) // factor + 2
    found: list[Box] = []
    strong: list[Box] = []
    for glyph_bright in (bright, not bright):
        if glyph_bright:
            response = high - _dilate(_erode(high, TOPHAT_SIZE), TOPHAT_SIZE)
        else:
            response = _erode(_dilate(low, TOPHAT_SIZE), TOPHAT_SIZE) - low
        parts, _sizes, (peaks,) = _component_counts(response > GROW_CONTRAST * span, [response >= CONTRAST * span])
        if not len(parts):
            continue
        h, w = parts[:, 3] - parts[:, 1], parts[:, 2] - parts[:, 0]
        peaked = peaks > 0
        # not anatomy, a bar, or a speck of noise
        keep = (h <= tallest) & (w <= 12 * np.maximum(h, tallest // 2)) & (peaked | (h * w >= 4))
        full = parts * factor + np.array([cx0, cy0, cx0, cy0], dtype=np.int64)
        middle_x, middle_y = (full[:, 0] + full[:, 2]) // 2, (full[:, 1] + full[:, 3]) // 2
        keep &= (x0 <= middle_x) & (middle_x < x1) & (y0 <= middle_y) & (middle_y < y1)
        found += [tuple(b) for b in full[keep].tolist()]
        strong += [tuple(b) for b in full[keep & peaked].tolist()]
        if strong:  # the region's polarity found its glyphs: the other one holds their gaps
            break
    return found, strong


#: A ruler: at least this many tick marks ...
RULER_TICKS = 5
#: ... each at most this share of its length wide, evenly spaced (each gap within this
#: share of the median gap, or 2 pixels).
RULER_TICK_SHAPE = 0.34
RULER_SPACING = 0.2


def periodic_bars(arr: np.ndarray, box: Box) -> bool:
    """Whether ``box`` holds a ruler's tick marks and nothing else: thin bars, all across
    one way, evenly spaced, on a bar or not.

    The text detector boxes a ruler's ticks as a word, and OCR reads low-confidence junk
    there (one to fifteen "characters" a word, none sure): blanked as text, a scale beside
    a label went with it. Ink is the crop's upper half of its range, or its lower half;
    rows (columns) mostly ink are the ruler's bar and are left out; what remains
    must be ``RULER_TICKS`` or more components, each a thin bar (``RULER_TICK_SHAPE``),
    at a regular pitch (``RULER_SPACING``). A letter among them (a label beside the
    ruler) is no thin bar, and the box stays text.
    """
    from scipy import ndimage

    x0, y0, x1, y1 = box
    crop = arr[y0:y1, x0:x1].astype(np.float32)
    if min(crop.shape) < 3:
        return False
    low, high = np.percentile(crop, (0.5, 99.5))
    if high - low <= 0:
        return False
    middle = low + 0.5 * (high - low)
    # either polarity (a region's is judged from its border, which a ruler's bar may
    # fill), ticks across a horizontal ruler, then a vertical one
    for mask in (crop > middle, crop < middle, (crop > middle).T, (crop < middle).T):
        mask = mask & ~(mask.mean(axis=1) > 0.6)[:, None]
        labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        if count < RULER_TICKS:
            continue
        spans = ndimage.find_objects(labels)
        widths = np.array([s[1].stop - s[1].start for s in spans])
        heights = np.array([s[0].stop - s[0].start for s in spans])
        if (widths > RULER_TICK_SHAPE * heights).any():
            continue
        centres = np.sort([(s[1].start + s[1].stop) / 2 for s in spans])
        gaps = np.diff(centres)
        pitch = float(np.median(gaps))
        if pitch > 0 and (np.abs(gaps - pitch) <= max(2.0, RULER_SPACING * pitch)).all():
            return True
    return False
