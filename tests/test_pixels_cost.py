"""Cost cuts in the pixel path give what the slower code gave: the same groups, the same readings."""

from __future__ import annotations

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


def _tesseract_calls() -> int:
    from cxr_dask import tools

    return tools.STATS["engine_reads"] + tools.STATS["command_runs"]


def test_ocr_skips_a_crop_of_texture_and_reads_text() -> None:
    """A pass whose crops hold no glyph (scan lines and grain, as on a scanned film) is
    not shown to Tesseract: no words, no call. A line with a name painted in is read
    (one call), and the name is evidence."""
    from cxr_dask.deid.pixels import ocr
    from cxr_dask.deid.pixels.policy import is_evidence
    from cxr_dask.deid.pixels.types import Region
    from cxr_dask.deid.rules import PixelOptions
    from cxr_dask.testing.synth_text import available_fonts, draw_mask, film

    arr = film(3).astype(np.float64)
    x0, y0, x1, y1 = 100, 600, 900, 800
    band = np.zeros((y1 - y0, x1 - x0))
    band[::2] += 500  # scan lines
    band += np.random.default_rng(1).normal(0, 250, band.shape)  # grain
    arr[y0:y1, x0:x1] += band
    arr = arr.clip(0, 4095).astype(np.uint16)
    span = detection.stroke_span(arr)
    texture = [Region(x0, y0, x1, y1, bright=bright, glyphs=20, line_height=24) for bright in (True, False)]
    before = _tesseract_calls()
    assert ocr.read_regions(arr, texture, PixelOptions(), span, glyphs_only=True) == [[], []]
    assert _tesseract_calls() == before  # nothing read: no call

    from PIL import ImageFont

    font = ImageFont.truetype(available_fonts()[0], 30)
    named = draw_mask(arr, lambda d: d.text((150, 300), "HOLLOWAY 1950", fill=255, font=font), 4095)
    line = Region(130, 290, 480, 345, bright=True, glyphs=12, line_height=24)
    words = ocr.read_regions(named, [line], PixelOptions(), span, glyphs_only=True)
    assert _tesseract_calls() == before + 1
    assert any(is_evidence(w) for w in words[0])
