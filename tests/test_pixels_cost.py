"""Cost cuts in the pixel path give what the slower code gave: the same groups, the same readings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cxr_dask.deid.pixels import detection


def _group_lines_all_pairs(
    boxes: list[tuple[int, int, int, int]], gap_ratio: float, min_gap: float | None, height_ratio: float
) -> list[tuple[tuple[int, int, int, int], int, int]]:
    """The pairs test over all n^2 pairs (the code before the sweep), groups by union-find."""
    parent = list(range(len(boxes)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, (ax0, ay0, ax1, ay1) in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            bx0, by0, bx1, by1 = boxes[j]
            hi, hj = ay1 - ay0, by1 - by0
            overlap = min(ay1, by1) - max(ay0, by0)
            gap = max(bx0 - ax1, ax0 - bx1)
            tall = max(hi, hj)
            near = overlap >= 0.4 * min(hi, hj) and gap <= gap_ratio * tall
            near = near and hj <= height_ratio * hi and hi <= height_ratio * hj
            if min_gap is not None:
                near = near and gap >= min_gap * tall
            if near:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(boxes)):
        groups.setdefault(root(i), []).append(i)
    out = []
    for members in groups.values():
        xs0, ys0, xs1, ys1 = zip(*(boxes[m] for m in members), strict=True)
        heights = sorted(b - a for a, b in zip(ys0, ys1, strict=True))
        middle = len(heights) // 2
        height = heights[middle] if len(heights) % 2 else int((heights[middle - 1] + heights[middle]) / 2)
        out.append(((min(xs0), min(ys0), max(xs1), max(ys1)), len(members), height))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_group_lines_sweep_gives_the_all_pairs_groups(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sorted by top, only pairs sharing rows are tested: the same lines in the same order,
    also when the pairs go through in several blocks."""
    rng = np.random.default_rng(seed)
    n = 300
    x0 = rng.integers(0, 400, n)
    y0 = rng.integers(0, 400, n)
    h = rng.integers(0, 30, n)  # zero-height boxes too: they share a row edge only
    w = rng.integers(1, 25, n)
    boxes = [(int(a), int(b), int(a + c), int(b + d)) for a, b, c, d in zip(x0, y0, w, h, strict=True)]
    boxes += boxes[:5]  # the same box twice
    monkeypatch.setattr(detection, "GROUP_BLOCK", 1 + seed * 97)
    for gap_ratio, min_gap, height_ratio in ((1.2, None, 3.0), (1.0, None, 1.5), (0.5, -0.25, 2.0)):
        expected = _group_lines_all_pairs(boxes, gap_ratio, min_gap, height_ratio)
        assert detection._group_lines(boxes, gap_ratio, min_gap, height_ratio) == expected
    assert detection._group_lines([], 1.2) == []


def test_montages_stay_under_tesseracts_limit_and_keep_the_order() -> None:
    """A page's lines go to Tesseract in runs of at most ``MONTAGE_ROWS`` rows (its limit
    is 32,767 a side), every line once, in order; a line taller than the limit alone."""
    from cxr_dask.deid.pixels import ocr

    rows = [7000.0, 9000.0, 5000.0, 25000.0, 300.0, 19000.0, 1000.0]
    chunks: list[list[int]] = []
    read = ocr._in_montages(rows, lambda chunk: chunks.append(list(chunk)) or [f"line {k}" for k in chunk])
    assert read == [f"line {k}" for k in range(len(rows))]
    assert chunks == [[0, 1], [2], [3], [4, 5], [6]]
    assert all(sum(rows[k] for k in chunk) <= ocr.MONTAGE_ROWS for chunk in chunks if len(chunk) > 1)


def test_the_dense_look_labels_no_stroke_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dense look's screen reuses the stroke components the first screen labelled, and
    the pieces it cut big components into (neither depends on the glyph sizes kept): the
    same regions, and the dense look labels nothing the first screen labelled."""
    from PIL import ImageFont

    from cxr_dask.testing.synth_text import available_fonts, draw_mask, film

    font = ImageFont.truetype(available_fonts()[0], 22)
    arr = film(seed=3)
    for k in range(3):
        arr = draw_mask(
            arr, lambda d, k=k: d.text((40, 40 + 34 * k), f"ID {4711 + k} HOLLOWAY", fill=255, font=font), 4095
        )
    arr[300:306, 100:400] = 4095  # a bar through a word: a component cut into its letters
    arr = draw_mask(arr, lambda d: d.text((120, 290), "SEMI ERECT", fill=255, font=font), 4095)
    labelled: list[str] = []

    def counted(name: str, labelling: Any) -> Any:
        return lambda *args: labelled.append(name) or labelling(*args)

    for name in ("_component_counts", "_component_stats"):
        monkeypatch.setattr(detection, name, counted(name, getattr(detection, name)))
    alone = detection.detect(arr), detection.detect(arr, dense=True, big=[])
    assert alone[0] and alone[1] and labelled.count("_component_counts") == 4 and "_component_stats" in labelled
    screen: dict[str, Any] = {}
    first = detection.detect(arr, screen=screen)
    labelled.clear()
    assert (first, detection.detect(arr, dense=True, big=[], screen=screen)) == alone
    assert labelled == []


def _first_overlap_all_rows(
    edges: np.ndarray, heights: np.ndarray, box: tuple[int, int, int, int], height: float, height_ratio: float | None
) -> int:
    """The overlap test on every row at once (the code before the pixel-sharing rows were
    picked out first)."""
    if not len(edges):
        return -1
    width = np.minimum(edges[:, 2], box[2]) - np.maximum(edges[:, 0], box[0])
    tall = np.minimum(edges[:, 3], box[3]) - np.maximum(edges[:, 1], box[1])
    areas = (edges[:, 2] - edges[:, 0]) * (edges[:, 3] - edges[:, 1])
    smaller = np.minimum(areas, (box[2] - box[0]) * (box[3] - box[1]))
    hit = (width > 0) & (tall > 0) & (width * tall >= 0.5 * smaller)
    if height_ratio is not None:
        hit &= np.maximum(heights, height) <= height_ratio * np.minimum(heights, height)
    k = int(hit.argmax())
    return k if hit[k] else -1


@pytest.mark.parametrize("seed", range(6))
def test_merge_overlapping_tests_only_rows_sharing_pixels(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines merged by testing only the rows that share a pixel with a box are the lines
    the test of every row gives, with and without a height ratio, empty boxes too."""
    rng = np.random.default_rng(seed)
    n = 400
    x0, y0 = rng.integers(0, 500, n), rng.integers(0, 500, n)
    w, h = rng.integers(0, 60, n), rng.integers(0, 25, n)
    heights = rng.integers(1, 30, n)
    items = [
        ((int(a), int(b), int(a + c), int(b + d)), int(g), int(t), bool(g % 2))
        for a, b, c, d, g, t in zip(x0, y0, w, h, rng.integers(1, 9, n), heights, strict=True)
    ]
    for ratio in (None, 2.0):
        fast = detection._merge_overlapping(items, ratio)
        with monkeypatch.context() as patched:
            patched.setattr(detection, "_first_overlap", _first_overlap_all_rows)
            assert detection._merge_overlapping(items, ratio) == fast
        assert len(fast) < len(items)


def test_a_dense_line_without_strokes_of_glyph_contrast_is_not_shown_to_the_detector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dense look shows the text detector the lines OCR did not read; a line whose crop
    holds no stroke of glyph contrast (a chest film's faint anatomy cut into lines a few
    pixels high, each shown at 4x) is no line of text: nothing read there could be
    evidence, and the detector does not see it. A line of text OCR missed still goes."""
    from cxr_dask.deid.pixels import cleaning, ocr
    from cxr_dask.deid.pixels.detection import stroke_span
    from cxr_dask.deid.pixels.policy import is_evidence, is_near
    from cxr_dask.deid.pixels.types import Region
    from cxr_dask.deid.rules import PixelOptions
    from tests.test_pixels_confirm import _text
    from tests.test_pixels_policy import HIGH

    arr = _text(np.zeros((200, 400), dtype=np.uint16), (20, 20), "HOLLOWAY 1950", 30, HIGH)
    arr[150:156, 40:360] = np.linspace(0, HIGH // 20, 320).astype(np.uint16)  # a faint ramp
    text = Region(10, 14, 300, 60, bright=True, glyphs=12, line_height=30)
    faint = Region(30, 144, 370, 162, bright=True, glyphs=6, line_height=6)
    span = stroke_span(arr)
    (read,) = ocr.read_regions(arr, [faint], PixelOptions(), span)
    assert not ocr.holds_strokes(arr, faint, span) and ocr.holds_strokes(arr, text, span)
    assert not any(is_evidence(w) or is_near(w) for w in read)  # whatever Tesseract reads there

    def detect(image: np.ndarray, window: float | None, dense: bool = False, big: list | None = None, **kw: object):
        return [text, faint]

    shown: list[tuple[int, int, int, int]] = []
    real = cleaning.confirm_text

    def confirm_text(regions: list[Region], image: np.ndarray) -> list:
        shown.extend(r.box for r in regions)
        return real(regions, image)

    monkeypatch.setattr(cleaning, "detect", detect)
    monkeypatch.setattr(cleaning, "_read_in_chunks", lambda image, regions, *rest: [[] for _ in regions])
    monkeypatch.setattr(cleaning, "confirm_text", confirm_text)
    found = cleaning.dense_lines(arr, None, PixelOptions(), [], [])
    assert shown == [text.box]
    assert [(r.box, d.why) for r, d in found] == [(text.box, "text detector on a dense page")]


def _ink_glyphs_one_by_one(
    arr: np.ndarray, box: tuple[int, int, int, int], line_height: int, bright: bool, span: float, factor: int
) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int, int, int]]] | None:
    """``detection._ink_glyphs`` as it was: scipy's labels, each component tested in turn."""
    from scipy import ndimage

    pooled = detection.pooled_surround(arr, box, factor)
    if pooled is None:
        return None
    (cx0, cy0), high, low = pooled
    x0, y0, x1, y1 = box
    tallest = 2 * max(1, line_height) // factor + 2
    found: list[tuple[int, int, int, int]] = []
    strong: list[tuple[int, int, int, int]] = []
    size = detection.TOPHAT_SIZE
    for glyph_bright in (bright, not bright):
        if glyph_bright:
            response = high - detection._dilate(detection._erode(high, size), size)
        else:
            response = detection._erode(detection._dilate(low, size), size) - low
        labels, count = ndimage.label(response > detection.GROW_CONTRAST * span, structure=np.ones((3, 3), dtype=bool))
        if not count:
            continue
        peaks = np.bincount(labels[response >= detection.CONTRAST * span], minlength=count + 1)
        for index, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
            h, w = ys.stop - ys.start, xs.stop - xs.start
            if h > tallest or w > 12 * max(h, tallest // 2) or (not peaks[index] and h * w < 4):
                continue
            full = (cx0 + xs.start * factor, cy0 + ys.start * factor, cx0 + xs.stop * factor, cy0 + ys.stop * factor)
            if not (x0 <= (full[0] + full[2]) // 2 < x1 and y0 <= (full[1] + full[3]) // 2 < y1):
                continue
            found.append(full)
            if peaks[index]:
                strong.append(full)
        if strong:
            break
    return found, strong


def _ink_boxes_line_by_line(
    arr: np.ndarray, box: tuple[int, int, int, int], line_height: int, bright: bool, span: float
) -> list[tuple[int, int, int, int]]:
    """``detection.ink_boxes`` as it was: each component, then each line against every strong
    glyph, tested in turn."""
    factor = detection.detection_factor(*arr.shape)
    fine = _ink_glyphs_one_by_one(arr, box, line_height, bright, span, factor)
    if fine is None:
        return [box]
    found, strong = fine
    if detection.BIG_GLYPH * factor <= line_height <= detection.DENSE_MAX_GLYPH:
        coarse = _ink_glyphs_one_by_one(arr, box, line_height, bright, span, factor * detection.COARSE)
        if coarse is not None:
            found, strong = found + coarse[0], strong + coarse[1]
    out = []
    for (lx0, ly0, lx1, ly1), _, _ in detection._group_lines(found):
        if any(detection._inside(s, (lx0, ly0, lx1, ly1)) for s in strong):
            pad = detection.INK_PAD
            out.append((max(box[0], lx0 - pad), max(box[1], ly0 - pad), min(box[2], lx1 + pad), min(box[3], ly1 + pad)))
    return out or [box]


def test_ink_boxes_tests_components_and_lines_on_arrays_as_one_by_one() -> None:
    """The glyphs of ink in a box are tested on arrays of components, and a line of them is
    kept when a strong glyph lies inside it, tested for all pairs at once (a chest film's
    block cut into lines: thousands of components, hundreds of lines): the same glyphs and
    boxes as testing each in turn, on a film scan's lines and blocks of anatomy, in both
    polarities and at three scales, and a line of faint letters beside a strong one (its
    glyphs found but not strong: the line left out)."""
    from PIL import ImageFont

    from cxr_dask.testing.synth_text import available_fonts, draw_mask, film_scan

    arr, _ = film_scan(seed=1, size=768, glyph=12)
    font = ImageFont.truetype(available_fonts()[0], 14)
    low, high = np.percentile(arr, (1, 99.5))
    faint = 0.15 * (high - low)  # between the grow and the glyph contrast
    arr = draw_mask(arr, lambda d: d.text((60, 700), "faint 12 letters", fill=255, font=font), faint, True)
    arr = draw_mask(arr, lambda d: d.text((300, 700), "STRONG 99", fill=255, font=font), high)
    span = detection.stroke_span(arr)
    regions = detection.detect(arr, dense=True, big=[])
    assert len(regions) > 20
    rows, columns = arr.shape
    row = (40, 680, 700, 730)
    blocks = [(0, 0, columns // 2, rows // 2), (columns // 3, rows // 3, columns, rows), row]
    asks = [(r.box, r.line_height) for r in regions] + [(b, h) for b in blocks for h in (6, 12, 14, 30, 60)]
    checked = 0
    for box, height in asks:
        for bright in (True, False):
            for factor in (1, 2, 4):
                glyphs = detection._ink_glyphs(arr, box, height, bright, span, factor)
                assert glyphs == _ink_glyphs_one_by_one(arr, box, height, bright, span, factor)
            expected = _ink_boxes_line_by_line(arr, box, height, bright, span)
            assert detection.ink_boxes(arr, box, height, bright, None, span) == expected
            checked += len(expected)
    assert checked > 100
    found, strong = detection._ink_glyphs(arr, row, 14, True, span, 1) or ([], [])
    assert len(strong) < len(found)
    lines = detection.ink_boxes(arr, row, 14, True, None, span)
    assert any(x0 >= 290 and y0 >= 695 for x0, y0, _, _ in lines)  # the strong line
    assert not any(x0 < 290 and y0 >= 695 for x0, y0, _, _ in lines)  # not the faint one


def test_the_dense_look_cuts_no_line_taller_than_the_screens_tallest_glyph_out_of_a_block() -> None:
    """A block a little taller than ``DENSE_LINES`` lines is cut into its lines of ink; one
    taller than the screen's tallest glyph (``GLYPH_SHARE`` of the image's rows) is no line
    of text but anatomy (a bedside film's ribs: a 126-pixel "line" on 524 rows, boxed by the
    detector at 0.2x, chained 17 rib lines to it, ~0.5 s of reads). On a taller image the
    same ink is within a glyph's size and is cut out as before; the small line always is."""
    from cxr_dask.deid.pixels import cleaning
    from cxr_dask.deid.pixels.types import Region
    from tests.test_pixels_confirm import _text
    from tests.test_pixels_policy import HIGH

    block = Region(10, 10, 380, 190, bright=True, glyphs=12, line_height=30)
    heights = {}
    for rows in (200, 400):
        arr = np.full((rows, 400), 600, dtype=np.uint16)
        arr = _text(arr, (20, 20), "SMALL 1234", 14, HIGH)
        arr = _text(arr, (20, 80), "0808", 60, HIGH)  # ink 46 rows high
        heights[rows] = sorted(line.line_height for line in cleaning._split_blocks(arr, [block], None))
    assert heights[200] == [10]  # 46 > 0.2 * 200
    assert heights[400] == [10, 46]
