"""The recogniser's veto (``textrec``, ``cleaning.confirm_reads``): a box is blanked only
when it reads as text that is not allow-listed, or a sure word backs it."""

from __future__ import annotations

import dataclasses

import numpy as np

from cxr_dask.deid.pixels import cleaning, textrec
from cxr_dask.deid.pixels.policy import Decision
from cxr_dask.deid.pixels.types import Region, Word
from cxr_dask.deid.rules import PixelOptions
from cxr_dask.testing.synth_text import DECOYS, available_fonts, draw_mask, film
from tests.test_pixels_policy import HIGH


def _text(arr, xy, text, size, value):
    from PIL import ImageFont

    font = ImageFont.truetype(available_fonts()[0], size)
    return draw_mask(arr, lambda d: d.text(xy, text, fill=255, font=font), value)


def _ink_box(xy, text, size, shape):
    mask = _text(np.zeros(shape, dtype=np.uint16), xy, text, size, HIGH) > 0
    (y0, x0), (y1, x1) = np.argwhere(mask).min(axis=0), np.argwhere(mask).max(axis=0) + 1
    return int(x0), int(y0), int(x1), int(y1)


def test_reading_keeps_counts_never_the_text():
    assert [f.name for f in dataclasses.fields(textrec.Reading)] == ["latin", "other", "score", "allowed"]


def test_text_reads_as_text_and_anatomy_does_not():
    arr = _text(film(3), (80, 200), "HOLLOWAY 1950", 30, HIGH)
    text = _ink_box((80, 200), "HOLLOWAY 1950", 30, arr.shape)
    edges = DECOYS["rib_edges"](film(4))
    rib = (300, 300, 620, 380)  # a stretch of rib edges and lung texture
    (on_text,) = textrec.read(arr, [text], PixelOptions().is_allowed)
    (on_rib,) = textrec.read(edges, [rib], PixelOptions().is_allowed)
    assert on_text.is_text and not on_text.is_marker
    assert not on_rib.is_text


def test_an_allow_listed_word_reads_as_a_marker():
    arr = _text(film(3), (80, 200), "ERECT", 30, HIGH)
    (reading,) = textrec.read(arr, [_ink_box((80, 200), "ERECT", 30, arr.shape)], PixelOptions().is_allowed)
    assert reading.is_marker


def test_a_text_decision_on_anatomy_alone_is_flagged_not_blanked():
    arr = DECOYS["rib_edges"](film(4))
    junk = Decision("text", "words read", ((300, 300, 620, 380), (340, 310, 420, 360)), lines=1)
    (decided,) = cleaning.confirm_reads(arr, [junk], PixelOptions())
    assert decided.kind == "left" and not decided.blank  # read surely as no text: not for review


def test_a_marker_in_a_text_line_is_not_blanked_and_a_sure_word_is():
    arr = _text(film(5), (80, 200), "MOBILE", 30, HIGH)
    arr = _text(arr, (80, 250), "ERECT", 30, HIGH)
    mobile = _ink_box((80, 200), "MOBILE", 30, arr.shape)
    erect = _ink_box((80, 250), "ERECT", 30, arr.shape)
    # Tesseract misread "ERECT" as "RECT" (a sure word box cut from the marker's line)
    piece = (erect[0] + 20, erect[1], erect[2], erect[3])
    decision = Decision("text", "words read", (mobile, erect, piece), lines=2, sure=(mobile, piece))
    (decided,) = cleaning.confirm_reads(arr, [decision], PixelOptions())
    assert decided.blank == (mobile,)


def test_the_detector_judges_a_line_by_its_core_not_its_grown_box():
    """A portable film's white "SEMI-SENTADO" with a dark drop shadow: the screen guessed
    a line height of 24 for 43-pixel letters. The detector's grown box was then "taller
    than two lines" and the word stayed; its core is the letters' height."""
    from cxr_dask.deid.pixels import textdet

    arr = _text(film(8), (300, 880), "SEMI-SENTADO", 56, HIGH)
    x0, y0, x1, y1 = _ink_box((300, 880), "SEMI-SENTADO", 56, arr.shape)
    region = (x0 - 10, y0 - 10, x1 + 10, y1 + 10)
    (boxes,) = textdet.text_boxes(arr, [region], [24])
    assert boxes and all(b[1] <= y0 + 5 and b[3] >= y1 - 5 for b in boxes), boxes


def test_a_region_holding_only_the_margin_of_a_line_beside_it_gets_no_detector_box():
    """COVID-00013a: a region starting just under "AP PORT UPR" (its letters' halo) got the
    bottom of the detector's grown box for the line above, a 286x8 sliver the recogniser
    read at 1160 columns (and its batch padded to them), as junk. The box's core, the
    text, lies outside that region: it is the neighbour's text, and no box of it."""
    from cxr_dask.deid.pixels import textdet

    arr = _text(film(3), (80, 200), "HOLLOWAY 1950", 30, HIGH)
    x0, y0, x1, y1 = _ink_box((80, 200), "HOLLOWAY 1950", 30, arr.shape)
    under = (x0 - 20, y1 - 3, x1 + 200, y1 + 120)  # the letters' last rows and the film below
    on_line = (x0 - 10, y0 - 10, x1 + 10, y1 + 10)
    (beside, found) = textdet.text_boxes(arr, [under, on_line], [30, 30])
    assert beside == []
    assert len(found) == 1 and found[0][1] <= y0 and found[0][3] >= y1


def test_a_box_inside_a_box_another_decision_blanks_whole_is_not_read(monkeypatch):
    """On a film scan the detector's lines and its boxes beside anatomy overlap the lines
    read as text: a box whose pixels go with another decision's confirmed box is
    confirmed without a read (the recogniser's cost is its columns); a box outside it,
    or inside a box whose decision restores a marker, is still read."""
    arr = _text(film(5), (80, 200), "HOLLOWAY AGATHA 1950", 30, HIGH)
    arr = _text(arr, (80, 300), "MOBILE", 30, HIGH)
    line = _ink_box((80, 200), "HOLLOWAY AGATHA 1950", 30, arr.shape)
    inner = (line[0] + 10, line[1], line[0] + 140, line[3])
    mobile = _ink_box((80, 300), "MOBILE", 30, arr.shape)
    sure = Decision("text", "words read on a dense page", (line,), sure=(line,))
    detected = Decision("text", "text detector on a dense page", (inner, mobile), lines=2)
    asked: list[tuple[int, int, int, int]] = []
    read = textrec.read

    def counted(image, boxes, is_allowed):
        asked.extend(boxes)
        return read(image, boxes, is_allowed)

    monkeypatch.setattr(textrec, "read", counted)
    first, second = cleaning.confirm_reads(arr, [sure, detected], PixelOptions())
    assert first.blank == (line,) and second.blank == (inner, mobile)
    assert asked == [mobile], "the box inside the sure line is not read"
    asked.clear()
    keeping = dataclasses.replace(sure, keep=(Word(*inner, allowed=True, confidence=90, characters=4),))
    cleaning.confirm_reads(arr, [keeping, detected], PixelOptions())
    assert inner in asked, "inside a line that restores a marker, the box is read"


def test_a_box_of_noise_is_not_shown_to_the_recogniser(monkeypatch):
    """Stretched to 8 bits, a noisy film's flat patch reads as letters now and then (0.85+
    on a heart shadow): a box whose strokes do not stand out of its noise is not read. A
    faint word (a tenth of the range) over the same noise still is."""
    rng = np.random.default_rng(7)
    noisy = (1800 + rng.normal(0, 60, (400, 600))).clip(0, 4095).astype(np.uint16)
    faint = _text(noisy.copy(), (60, 200), "HOLLOWAY 1950", 30, 1800 + 400)
    word = _ink_box((60, 200), "HOLLOWAY 1950", 30, faint.shape)
    shown: list[int] = []
    run = textrec._run

    def counted(pieces, best, is_allowed):
        shown.extend(k for k, _ in pieces)
        run(pieces, best, is_allowed)

    monkeypatch.setattr(textrec, "_run", counted)
    (patch,) = textrec.read(noisy, [(200, 100, 240, 130)], PixelOptions().is_allowed)
    assert not shown and not patch.is_text
    (reading,) = textrec.read(faint, [word], PixelOptions().is_allowed)
    assert shown and reading.is_text


def test_a_detector_line_whose_strokes_are_found_in_part_is_blanked_whole():
    """White letters outlined in black over a noisy ground, half tissue and half the dark
    border: in a third of the noise draws the glyph search finds a third of the word;
    the detector's line is the word, so it goes whole (on a real film the rest stayed
    readable: "...hme")."""
    from PIL import Image, ImageDraw, ImageFont

    from cxr_dask.deid.pixels.types import Region

    font = ImageFont.truetype(available_fonts()[0], 12)
    for seed in range(6):
        ground = np.full((120, 240), 40.0)
        ground[:, :110] = 150
        ground += np.random.default_rng(seed).normal(0, 6, ground.shape)
        image = Image.fromarray(ground.clip(0, 255).astype(np.uint8))
        ImageDraw.Draw(image).text((60, 50), "Bettaufnahme", fill=255, font=font, stroke_width=1, stroke_fill=0)
        arr = np.asarray(image)
        ys, xs = np.nonzero(arr == 255)
        line = (int(xs.min()) - 2, int(ys.min()) - 2, int(xs.max()) + 3, int(ys.max()) + 3)
        region = Region(*line, bright=True, glyphs=12, line_height=8, vertical=False)
        decided = cleaning._hug(arr, region, Decision("text", "text detector", (line,), lines=1), None)
        assert decided.blank == (line,), seed


def test_a_marker_one_decision_keeps_is_kept_by_the_others_that_cover_it():
    """A circled "L" beside "liegend": the first pass's text detector box took the word
    and the ring together; the dense look read the ring as a marker on its own line and
    kept it, but the first pass's box blanked it anyway (a real bedside film lost its
    ring). A marker read with confidence is kept by every decision whose line covers it
    (``cleaning._keep_across``), never over a word box read as text, and a junk read is
    not."""
    from cxr_dask.deid.pixels.policy import redact_boxes

    arr = np.full((100, 200), 100, dtype=np.uint16)
    ring = Word(120, 20, 150, 50, allowed=True, confidence=86.0, characters=0, symbols=1)
    junk = Word(60, 20, 90, 50, allowed=True, confidence=20.0, characters=0, symbols=1)
    detector = Decision("text", "text detector", ((40, 18, 146, 52),), lines=1)
    dense = Decision("text", "words read on a dense page", ((40, 18, 154, 52), (40, 24, 100, 46)), keep=(ring, junk))
    word_over = Decision("text", "words read", ((40, 18, 154, 52), (115, 20, 152, 50)), lines=1)
    decided = cleaning._keep_across([detector, dense, word_over])
    assert decided[0].keep == (ring,)
    assert decided[1] == dense and decided[2] == word_over  # its own words; a word box read as text there
    work = arr.copy()
    for d in decided[:2]:
        redact_boxes(work, d.blank, d.keep, 0, d.lines)
    assert (work[24:46, 40:100] == 0).all()  # the word goes
    assert (work[22:48, 122:146] == 100).all()  # the ring stays


def test_a_dense_line_of_unsure_evidence_is_left_to_the_recogniser(monkeypatch):
    """The second look's lines read as text skip the recogniser when they are sure; one
    word of three characters at 60 (Tesseract's junk on an MR's vertebra) made its line
    sure and blanked it, anatomy and all. A line is as sure as its surest word."""
    arr = _text(film(5), (80, 200), "HOLLOWAY AGATHA 1950", 30, HIGH)

    def reads(confidence, characters):
        def read_in_chunks(image, regions, options, span):
            return [[Word(*r.box, allowed=False, confidence=confidence, characters=characters)] for r in regions]

        return read_in_chunks

    for confidence, characters, sure in ((65.0, 3, False), (90.0, 5, True)):
        monkeypatch.setattr(cleaning, "_read_in_chunks", reads(confidence, characters))
        found = [d for _, d in cleaning.dense_lines(arr, None, PixelOptions(), [], [])]
        assert found and all(d.why == "words read on a dense page" for d in found)
        assert all(bool(d.sure) == sure for d in found), [d.sure for d in found]


def test_a_dense_block_is_cut_into_its_lines_not_its_specks():
    """A block a little over ``DENSE_LINES`` lines is cut into its lines of ink; ink lower
    than the screen's smallest glyph (a chest film's anatomy cut into a block left ~50
    one-pixel "lines" to read and show the detector) is no line."""
    arr = np.zeros((400, 600), dtype=np.uint16)
    arr = _text(arr, (80, 180), "HOLLOWAY 1950", 30, HIGH)
    for x in range(100, 500, 60):  # specks of noise, apart from each other and the text
        arr[300:302, x : x + 2] = HIGH
    block = Region(60, 150, 520, 330, bright=True, glyphs=13, line_height=30)
    assert block.height > cleaning.DENSE_LINES * block.line_height + 8  # cut, not read whole
    lines = cleaning._split_blocks(arr, [block], None)
    assert [line.y1 <= 240 for line in lines] == [True], [line.box for line in lines]


def test_a_block_of_lines_read_surely_is_no_anatomy_beside_text(monkeypatch):
    """The dense look shows the text detector the surround of each component too tall for
    a glyph (anatomy a label may touch). A block of text lines whose strokes joined into
    one such component, its lines read surely as text, is not shown again (a film scan's
    20 annotation blocks, each line found and read by OCR once more); read unsure (the
    recogniser may yet veto them), it is."""
    arr = np.zeros((400, 600), dtype=np.uint16)
    block, anatomy = (60, 100, 400, 250), (420, 50, 580, 350)
    lines = [Region(60, 100 + 40 * i, 400, 130 + 40 * i, bright=True, glyphs=8, line_height=24) for i in range(4)]

    def detect(image, window, dense=False, big=None, **kwargs):
        big.extend([block, anatomy])
        return list(lines)

    def reads(confidence):
        def read_in_chunks(image, regions, options, span):
            return [[Word(*r.box, allowed=False, confidence=confidence, characters=8)] for r in regions]

        return read_in_chunks

    monkeypatch.setattr(cleaning, "detect", detect)
    for confidence, shown_expected in ((95.0, [anatomy]), (65.0, [block, anatomy])):
        shown: list = []
        monkeypatch.setattr(cleaning, "_read_in_chunks", reads(confidence))
        monkeypatch.setattr(cleaning, "_beside_anatomy", lambda image, big, *rest, shown=shown: shown.extend(big) or [])
        found = [d for _, d in cleaning.dense_lines(arr, None, PixelOptions(), [], [])]
        assert [d.why for d in found] == ["words read on a dense page"] * 4
        assert shown == shown_expected


def test_a_line_of_a_text_block_sits_beside_text_not_beside_another_such_line(monkeypatch):
    """An unread dense line right under a line found to be text is a line of its block
    (left to the recogniser); the unread line under that one is not: chained from line to
    line, the block walked down into the anatomy under a label (a clavicle under "MOBILE",
    each piece read, flagged and read turned)."""
    arr = np.zeros((400, 600), dtype=np.uint16)
    text = Region(60, 40, 400, 70, bright=True, glyphs=8, line_height=24)
    below = [Region(60, 72 + 32 * i, 400, 102 + 32 * i, bright=True, glyphs=8, line_height=24) for i in range(3)]
    monkeypatch.setattr(cleaning, "detect", lambda image, window, dense=False, big=None, **kwargs: list(below))
    monkeypatch.setattr(cleaning, "_read_in_chunks", lambda image, regions, options, span: [[] for _ in regions])
    monkeypatch.setattr(cleaning, "confirm_text", lambda regions, image: [[] for _ in regions])
    monkeypatch.setattr(cleaning, "_beside_anatomy", lambda *args: [])
    read = Decision("text", "words read", (text.box,))
    found = cleaning.dense_lines(arr, None, PixelOptions(), [text], [read])
    assert [(r.box, d.why) for r, d in found] == [(below[0].box, "line of a text block")]


def test_the_detector_s_stretch_through_a_table_is_the_stretch_of_every_pixel():
    """Stored values of at most 16 bits are stretched through a table of their range
    (``textdet._display8``): bit for bit what the stretch of each pixel in float32 gives,
    for unsigned and signed values, 8-bit ones, a flat crop and one of two values."""
    from cxr_dask.deid.pixels import textdet

    def per_pixel(crop: np.ndarray) -> np.ndarray:
        values = crop.astype(np.float32)
        low, high = np.percentile(values, (0.5, 99.5))
        high = high if high > low else low + 1.0
        return (np.clip((values - low) / (high - low), 0.0, 1.0) * 255.0).astype(np.uint8)

    rng = np.random.default_rng(7)
    crops = [film(3)[100:400, 200:700], np.full((40, 90), 812, dtype=np.uint16)]
    crops += [rng.integers(-1024, 3071, size=(120, 333)).astype(np.int16)]
    crops += [rng.integers(0, 2, size=(64, 64)).astype(np.uint8) * 255]
    crops += [rng.integers(-32768, 32767, size=(50, 70)).astype(np.int16)]
    crops += [rng.integers(0, 256, size=(200, 300)).astype(np.uint8)[5:190, 7:280]]  # (OpenCV's count)
    for crop in crops:
        assert np.array_equal(textdet._display8(crop), per_pixel(crop)), crop.dtype
    big = film(4).astype(np.float32)[:64, :64]  # other types take the per-pixel way
    assert np.array_equal(textdet._display8(big), per_pixel(big))


def test_a_big_crop_fills_one_detector_run_and_its_label_is_still_found(monkeypatch):
    """The look beside anatomy grows a figure's big component into a crop of a megapixel
    or more at its text's scale; it is shown at most ``BATCH_PIXELS`` (its text no lower
    than ``SMALLEST_TEXT_HEIGHT``) and the label on it is still boxed."""
    from cxr_dask.deid.pixels import textdet

    arr = _text(film(9, size=1200), (600, 900), "SEMI-SENTADO", 40, HIGH)
    x0, y0, x1, y1 = _ink_box((600, 900), "SEMI-SENTADO", 40, arr.shape)
    shown: list[int] = []
    probabilities = textdet.probabilities

    def recording(images):
        shown.extend(image.size for image in images)
        return probabilities(images)

    monkeypatch.setattr(textdet, "probabilities", recording)
    (boxes,) = textdet.text_boxes(arr, [(50, 50, 1150, 1150)], [40], [40])
    assert shown and max(shown) <= textdet.BATCH_PIXELS * 1.01, shown
    assert any(b[0] <= x0 + 10 and b[2] >= x1 - 10 and b[1] <= y0 + 5 and b[3] >= y1 - 5 for b in boxes), boxes
    # smaller text is not shrunk below the floor: 24-pixel lines shown at half their size
    shown.clear()
    textdet.text_boxes(arr, [(50, 50, 1150, 1150)], [24], [24])
    side = 1100 + 2 * 24
    assert shown and shown[0] >= (side * textdet.SMALLEST_TEXT_HEIGHT / 24) ** 2 * 0.99 > textdet.BATCH_PIXELS, shown


def test_a_detector_box_the_recogniser_reads_as_no_text_sets_off_no_dense_look(monkeypatch):
    """The dense look is a second look at an image known to hold text. A first pass whose
    only text is a detector box on anatomy (read as no text by the recogniser: a chest
    film's edge, whose dense look cut the film into ~130 lines for Tesseract and the
    detector) knows none; the same box on a line of text does."""
    from cxr_dask.deid.pixels.types import PixelReport

    line = Region(80, 190, 420, 240, bright=True, glyphs=12, line_height=30)
    box = (80, 195, 400, 235)
    monkeypatch.setattr(cleaning, "detect", lambda image, window, **kw: [line])
    monkeypatch.setattr(cleaning, "read_regions", lambda image, regions, *rest: [[] for _ in regions])
    monkeypatch.setattr(cleaning, "confirm_text", lambda regions, image: [[box] for _ in regions])
    for arr, looked in (
        (DECOYS["rib_edges"](film(4)), False),
        (_text(film(5), (84, 200), "HOLLOWAY 1950", 30, HIGH), True),
    ):
        calls: list[int] = []
        monkeypatch.setattr(cleaning, "dense_lines", lambda *args, calls=calls: calls.append(1) or [])
        judged = cleaning._judge(arr, None, PixelOptions(), PixelReport())
        assert judged and bool(calls) == looked


def _a_page_of_lines(count: int) -> list[Region]:
    """``count`` lines of a film scan's annotation blocks, 24 pixels high, in two columns."""
    return [
        Region(40 + 300 * (i % 2), 20 + 30 * (i // 2), 300 + 300 * (i % 2), 44 + 30 * (i // 2), True, 8, 24)
        for i in range(count)
    ]


def _read_surely_but(unread: list[Region]):
    """Tesseract as the dense look's reader: each line read as a sure word but ``unread``."""

    def read_in_chunks(image, regions, options, span, seen=None):
        if seen is not None:
            seen.extend(regions)
        return [[] if r in unread else [Word(*r.box, allowed=False, confidence=95.0, characters=8)] for r in regions]

    return read_in_chunks


def test_a_dense_line_found_twice_is_read_once(monkeypatch):
    """A line the dense look finds twice (one box in two groups of line heights, or cut
    out of a block and found on its own too: SC1 read 10 of its 275 lines twice) goes to
    Tesseract once."""
    arr = np.zeros((800, 700), dtype=np.uint16)
    lines = _a_page_of_lines(4)
    twice = dataclasses.replace(lines[1], line_height=20)
    monkeypatch.setattr(cleaning, "detect", lambda image, window, dense=False, big=None, **kwargs: [*lines, twice])
    read: list[Region] = []
    reader = _read_surely_but([])
    monkeypatch.setattr(cleaning, "_read_in_chunks", lambda *args: reader(*args, seen=read))
    monkeypatch.setattr(cleaning, "_beside_anatomy", lambda *args: [])
    found = cleaning.dense_lines(arr, None, PixelOptions(), [], [])
    assert read == lines
    assert [r.box for r, _ in found] == [r.box for r in lines]


def test_on_a_dense_page_a_line_seen_beside_anatomy_is_not_shown_to_the_detector_again(monkeypatch):
    """On a page of ``DENSE_PAGE`` lines read as text or more (a film scan's annotation),
    an unread line inside a crop the text detector saw beside anatomy is not shown to it
    again at its own scale (SC1: 30 such lines, one boxed); with fewer lines read (a chest
    film, a figure), it is, as every unread line is."""
    arr = np.zeros((800, 700), dtype=np.uint16)
    skull = (380, 600, 640, 780)
    on_the_skull = Region(400, 700, 560, 724, bright=True, glyphs=6, line_height=24)
    elsewhere = Region(40, 700, 200, 724, bright=True, glyphs=6, line_height=24)
    monkeypatch.setattr(cleaning, "holds_strokes", lambda *args: True)
    for count, shown_expected in ((cleaning.DENSE_PAGE, [elsewhere]), (2, [on_the_skull, elsewhere])):
        lines = [*_a_page_of_lines(count), on_the_skull, elsewhere]

        def detect(image, window, dense=False, big=None, lines=lines, **kwargs):
            big.append(skull)
            return list(lines)

        shown: list[Region] = []
        monkeypatch.setattr(cleaning, "detect", detect)
        monkeypatch.setattr(cleaning, "_read_in_chunks", _read_surely_but([on_the_skull, elsewhere]))
        monkeypatch.setattr(
            cleaning, "confirm_text", lambda regions, image, shown=shown: shown.extend(regions) or [[] for _ in regions]
        )
        monkeypatch.setattr(
            cleaning,
            "_beside_anatomy",
            lambda image, big, heights, options, span, crops, *rest: crops.extend(big) or [],
        )
        cleaning.dense_lines(arr, None, PixelOptions(), [], [])
        assert shown == shown_expected, count


def test_a_box_beside_anatomy_that_sure_lines_cover_is_not_read_again(monkeypatch):
    """The text detector's box beside anatomy that words read surely on the page's lines
    cover (``READ_ALREADY``) is not read by Tesseract once more: those words back it, and
    the recogniser need not read it either; a box they do not cover is read."""
    arr = _text(np.zeros((300, 600), dtype=np.uint16), (60, 100), "HOLLOWAY 1950", 24, HIGH)
    covered, apart = (56, 160, 260, 194), (300, 200, 420, 230)  # (no strokes: the recogniser reads nothing)
    sure_word = (50, 154, 270, 200)
    read: list[Region] = []

    def read_regions(image, regions, options, span):
        read.extend(regions)
        return [[] for _ in regions]

    monkeypatch.setattr(cleaning, "read_regions", read_regions)
    kept, sure = cleaning._markers_beside(arr, [covered, apart], 24, PixelOptions(), 1.0, (sure_word,))
    assert len(read) == 1 and read[0].x0 >= apart[0] - 12, [r.box for r in read]
    assert sure == {covered: (sure_word,)} and not kept
    for backing, blanked in ((sure[covered], (covered,)), ((), ())):
        decision = Decision("text", "text detector beside anatomy", (covered,), sure=backing)
        assert cleaning.confirm_reads(arr, [decision], PixelOptions())[0].blank == blanked
