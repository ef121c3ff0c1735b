"""Burned-in text policy: black out text, never strokes; hard text still goes.

Synthetic chest-like films (smooth anatomy, noise, 12-bit) carry the structures chest
x-ray research studies (a guide wire, an ECG lead with its electrode, a catheter, rib
edges, a collimation border, a pacemaker): they must come out byte-identical. Text that
is dense, faint (a quarter of the range), dark on a bright label, letter-spaced or
beside a side marker must be unreadable afterwards, and the marker must stay.
"""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from cxr_dask.deid import pixels
from cxr_dask.deid.pixels import cleaning, detection, ocr, policy, textrec
from cxr_dask.deid.pixels.policy import redact_boxes
from cxr_dask.deid.pixels.types import Region, Word, clipped
from cxr_dask.deid.rules import PixelOptions
from cxr_dask.testing.synth_text import DECOYS, MARKER, PlantedText, available_fonts, draw_mask, film, film_scan

SIZE = 1024
HIGH = 4095  # twelve bits, as synth_text.film


def as_dataset(arr: np.ndarray, photometric: str = "MONOCHROME2", window: tuple[int, int] | None = None):
    """A minimal uncompressed secondary-capture dataset around ``arr`` (12 bits stored)."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = arr.astype("<u2").tobytes()
    return ds


@pytest.mark.parametrize("name", sorted(DECOYS))
def test_lines_tubes_bones_and_borders_survive_byte_identical(name):
    arr = DECOYS[name](film(seed=len(name)))
    result = pixels.clean(as_dataset(arr), PixelOptions())
    assert result.array is None, (name, result.report.regions)
    assert result.report.count("text") == 0
    assert all(r.kind in ("marker", "left") for r in result.report.regions)  # nothing for a human look


def test_all_decoys_on_one_film_survive_byte_identical():
    arr = film(seed=9)
    for paint in DECOYS.values():
        arr = paint(arr)
    result = pixels.clean(as_dataset(arr), PixelOptions())
    assert result.array is None, result.report.regions


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(available_fonts()[0], size)


def _text(arr, xy, text, size, value, blend=False):
    return draw_mask(arr, lambda d: d.text(xy, text, fill=255, font=_font(size)), value, blend)


def _display(arr: np.ndarray, photometric: str = "MONOCHROME2", window: tuple[int, int] | None = None):
    values = arr.astype(np.float64)
    if window is not None:
        center, width = window
        values = (values - (center - width / 2)) / width * HIGH
    values = values.clip(0, HIGH)
    return HIGH - values if photometric == "MONOCHROME1" else values


def readable_tokens(arr: np.ndarray, box, photometric="MONOCHROME2", window=None, joined=False) -> set[str]:
    """An independent reader: Tesseract on the box, both polarities, stretched, 2x."""
    x0, y0, x1, y1 = box
    crop = _display(arr, photometric, window)[max(0, y0 - 8) : y1 + 8, max(0, x0 - 8) : x1 + 8]
    low, high = np.percentile(crop, (1, 99.5))
    gray = ((crop - low) / max(high - low, 1.0)).clip(0, 1) * 255
    found: set[str] = set()
    for image in (gray, 255 - gray):
        big = Image.fromarray(image.astype(np.uint8)).resize((crop.shape[1] * 2, crop.shape[0] * 2), Image.BICUBIC)
        buffer = io.BytesIO()
        Image.fromarray(np.pad(np.asarray(big), 20, constant_values=int(np.median(image)))).save(buffer, "PNG")
        run = subprocess.run(
            ["tesseract", "stdin", "stdout", "--psm", "6"], input=buffer.getvalue(), capture_output=True, check=True
        )
        text = run.stdout.decode("utf-8", "replace").upper()
        text = re.sub(r"\s+", "", text) if joined else text
        found |= {t for t in re.split(r"[^A-Z0-9]+", text) if len(t) >= 3}
    return found


PHI = "HOLLOWAY AGATHA 12/03/1950"


def _cleaned(arr, **kwargs):
    result = pixels.clean(as_dataset(arr, **kwargs), PixelOptions())
    return result, (arr if result.array is None else result.array)


def _assert_gone(before, after, box, **kwargs):
    assert {"HOLLOWAY", "AGATHA"} & readable_tokens(before, box, **kwargs), "the reader must see the text first"
    left = readable_tokens(after, box, **kwargs)
    assert not ({"HOLLOWAY", "AGATHA", "1950"} & left), left


def test_plain_text_goes_and_blanking_hugs_the_words():
    arr = _text(film(1), (60, 880), PHI, 30, HIGH)
    _result, out = _cleaned(arr)
    _assert_gone(arr, out, (50, 870, 560, 920))
    changed = np.argwhere(out != arr)
    (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
    ink = np.argwhere(_text(np.zeros_like(arr), (60, 880), PHI, 30, HIGH) > 0)
    (iy0, ix0), (iy1, ix1) = ink.min(axis=0), ink.max(axis=0)
    assert iy0 - y0 <= 8 and y1 - iy1 <= 8 and ix0 - x0 <= 8 and x1 - ix1 <= 8, ((x0, y0, x1, y1), (ix0, iy0, ix1, iy1))


def test_low_contrast_text_goes():
    base = film(2)
    arr = _text(base, (60, 880), PHI, 30, HIGH // 4, blend=True)
    _, out = _cleaned(arr)
    _assert_gone(arr, out, (50, 870, 560, 920))


def test_dark_text_on_a_bright_label_goes():
    arr = draw_mask(film(3), lambda d: d.rectangle((40, 860, 600, 930), fill=255), 3600)
    arr = _text(arr, (60, 875), PHI, 30, 300)
    _, out = _cleaned(arr)
    _assert_gone(arr, out, (50, 865, 590, 925))


def test_dark_label_text_of_the_demo_corpus_is_read_in_the_other_polarity(tmp_path):
    """`make run`'s corpus: a 256-pixel film whose name sits in dark letters on a white
    label. The screen finds the label by its bright edges; read only as bright strokes,
    the name stayed readable (found by verify), so unread lines are read both ways."""
    from cxr_dask.testing.synth import synthesize

    synthesize(str(tmp_path / "raw"), patients=40, seed=7, burned_in_text=True)
    name = {"PRENDERGAST", "PERCIVAL"}
    raw = sorted((tmp_path / "raw").rglob("*.dcm"))
    files = [p for p in raw if "PRENDERGAST" in str(pydicom.dcmread(p).PatientName)]
    seen = 0
    for path in files:
        ds = pydicom.dcmread(path)
        arr = pixels.decode(ds)
        scale = HIGH / float(arr.max())  # the reader shows twelve bits
        whole = (0, 0, arr.shape[1], arr.shape[0])
        if not name & readable_tokens(arr * scale, whole):
            continue
        seen += 1
        result = pixels.clean(ds, PixelOptions())
        out = arr if result.array is None else result.array
        assert not name & readable_tokens(out * scale, whole), path.name
    assert seen, "the reader must see the name first"


def _watched(monkeypatch) -> tuple[list[list[Region]], dict[tuple[int, int, int, int], bool]]:
    """The regions of each Tesseract read ``cleaning`` asks for, in order, and the text
    detector's verdict (saw text or not) on each region it is shown."""
    reads: list[list[Region]] = []
    real_read = cleaning.read_regions

    def counted(image, regions, options, span=None):
        reads.append(list(regions))
        return real_read(image, regions, options, span)

    seen: dict[tuple[int, int, int, int], bool] = {}
    real_confirm = cleaning.confirm_text

    def detected(regions, image):
        found = real_confirm(regions, image)
        seen.update({r.box: bool(boxes) for r, boxes in zip(regions, found, strict=True)})
        return found

    monkeypatch.setattr(cleaning, "read_regions", counted)
    monkeypatch.setattr(cleaning, "confirm_text", detected)
    return reads, seen


@pytest.mark.parametrize("name", ["rib_edges", "ecg_lead"])
def test_a_line_the_detector_sees_no_text_in_is_not_read_in_the_other_polarity(name, monkeypatch):
    """The other polarity's read is for lines the text detector sees text in (and columns):
    on anatomy and devices it read only junk, and it was Tesseract's slowest read."""
    arr = DECOYS[name](film(5))
    reads, seen = _watched(monkeypatch)
    _cleaned(arr)
    first = {r.box: r.bright for r in reads[0]} if reads else {}
    assert seen, "the decoy must give lines nothing read"
    for regions in reads[1:]:
        for r in regions:
            if first.get(r.box) == (not r.bright):  # a read in the other polarity
                assert r.vertical or seen.get(r.box), r.box


def _specks(arr: np.ndarray, seed: int, count: int = 150) -> np.ndarray:
    """Short bright arcs of glyph size scattered over a band (vessels and clips seen end
    on, a scanned figure's texture): the screen chains them into blocks of several lines."""
    rng = np.random.default_rng(seed)

    def paint(d):
        for _ in range(count):
            x0, y0 = rng.uniform(150, 800), rng.uniform(300, 600)
            w, h = rng.uniform(8, 22), rng.uniform(8, 22)
            start = rng.uniform(0, 360)
            d.arc((x0, y0, x0 + w, y0 + h), start, start + rng.uniform(120, 360), fill=255, width=2)

    return draw_mask(arr, paint, 3000)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_block_the_detector_sees_no_text_in_is_not_read(seed, monkeypatch):
    """A candidate block of ``GATED_LINES`` lines or more goes to the text detector before
    Tesseract, and one it sees no text in is not read: anatomy cut into lines was
    Tesseract's slowest read (a film's grid texture, 0.7 s of junk words)."""
    arr = _specks(film(seed), seed)
    reads, seen = _watched(monkeypatch)
    _cleaned(arr)
    blocks = [
        r.box
        for r in cleaning.detect(arr, None)
        if not r.vertical and r.height >= cleaning.GATED_LINES * r.line_height and not seen[r.box]
    ]
    assert blocks, "the specks must give blocks the detector sees no text in"
    assert reads and not [r.box for r in reads[0] if r.box in blocks]
    assert [r for r in reads[0] if r.box not in blocks], "the other lines are still read"


def test_without_the_detector_every_block_is_read(monkeypatch):
    """The gate needs the detector's word: without its packages a block goes to Tesseract
    as every line does (fail closed: nothing is left unread for want of a reader)."""
    from cxr_dask.deid.pixels import textdet

    arr = _specks(film(0), 0)
    monkeypatch.setattr(textdet, "available", lambda: False)
    reads, _seen = _watched(monkeypatch)
    _cleaned(arr)
    blocks = {
        r.box
        for r in cleaning.detect(arr, None)
        if not policy.is_small(r) and not r.vertical and r.height >= cleaning.GATED_LINES * r.line_height
    }
    assert blocks and blocks <= {r.box for r in reads[0]}


def test_a_block_read_as_text_keeps_the_lines_the_detector_boxed():
    """Tesseract's read of a block depends on the rest of its montage: a line it read
    surely in one merged into junk in another (a real film's "Patient standing" chained
    into the clavicle's region). The detector's lines on a block read as text are blanked
    too (the recogniser confirms them as any text box); one inside a box already blanked
    adds nothing, and a block left in place gets none."""
    word = (100, 20, 160, 40)
    chained = policy.Decision("text", policy.CHAINED_WHY, (word,), lines=0, confirm=policy.CHAINED_CHARACTERS)
    line, within_word = (170, 22, 300, 40), (110, 22, 150, 38)
    decided = cleaning._with_detected(chained, [line, within_word])
    assert decided.blank == (word, line) and decided.confirm == policy.CHAINED_CHARACTERS
    assert cleaning._with_detected(chained, []) is chained
    left = policy.Decision("left", "no text read")
    assert cleaning._with_detected(left, [line]) is left


def test_monochrome1_text_goes():
    arr = _text(film(4), (60, 880), PHI, 30, 0)
    _, out = _cleaned(arr, photometric="MONOCHROME1")
    _assert_gone(arr, out, (50, 870, 560, 920), photometric="MONOCHROME1")


def test_letter_spaced_name_goes():
    arr = _text(film(5), (60, 880), "H O L L O W A Y", 30, HIGH)
    _, out = _cleaned(arr)
    ink = _text(np.zeros_like(arr), (60, 880), "H O L L O W A Y", 30, HIGH) > 0
    assert (out[ink] != arr[ink]).mean() > 0.9


def test_text_beside_a_side_marker_goes_and_the_marker_stays():
    arr = _text(film(6), (60, 880), "R", 60, HIGH)
    arr = _text(arr, (150, 895), "HOLLOWAY AGATHA", 30, HIGH)
    _result, out = _cleaned(arr)
    marker = _text(np.zeros_like(arr), (60, 880), "R", 60, HIGH) > 0
    assert np.array_equal(out[marker], arr[marker])
    assert not ({"HOLLOWAY", "AGATHA"} & readable_tokens(out, (140, 885, 560, 935)))


@pytest.mark.parametrize("seed", [0, 1])
def test_a_two_character_code_beside_a_side_marker_stays(seed):
    """A technologist's code ("TH" under "Left", "RS" beside "L" on real films) read surely
    as two characters was evidence of text, and its box took the code (labelled a marker:
    like a region with room for two characters, it identifies nobody). With allow-listed
    words only on its line, it is no evidence and stays (``policy.lone_code``)."""
    arr = _text(film(seed), (800, 60), "L", 70, HIGH)
    arr = _text(arr, (880, 80), "TH", 34, HIGH)
    _result, out = _cleaned(arr)
    code = _text(np.zeros_like(arr), (880, 80), "TH", 34, HIGH) > 0
    marker = _text(np.zeros_like(arr), (800, 60), "L", 70, HIGH) > 0
    assert np.array_equal(out[code], arr[code]) and np.array_equal(out[marker], arr[marker])


def test_two_codes_a_code_beside_a_word_or_alone_are_text():
    """Two two-character words read surely are text (a date or a time read in pieces), so
    is a code beside any other word read, and a code alone (on a film scan, a piece of a
    line the screen cut): only a code beside allow-listed words is kept."""
    region = Region(0, 0, 300, 40, bright=True, glyphs=6, line_height=20)
    day, month = (Word(10 + 40 * k, 10, 40 + 40 * k, 30, allowed=False, confidence=95, characters=2) for k in (0, 1))
    name = Word(100, 10, 200, 30, allowed=False, confidence=40, characters=6)
    marker = Word(220, 10, 240, 30, allowed=True, confidence=90, characters=1)
    for words in ([day, month], [day, name], [day], [day, month, marker], [day, name, marker]):
        assert policy.decide(region, words, PixelOptions(), (100, 400)).kind == "text"
    assert policy.decide(region, [day, marker], PixelOptions(), (100, 400)).kind != "text"


def test_a_word_far_smaller_than_its_regions_line_height_goes_by_its_box_not_the_region():
    """A dense-look region of anatomy's line height (134 pixels, 580x306 on a real film)
    held one word 31 pixels high read surely: the whole region was blanked as a line of
    text (4.7% of the film). Words far smaller than the line height (``WORD_HEIGHT_RATIO``)
    are no line of it: only their boxes go."""
    shape = (1000, 2000)
    region = Region(1314, 76, 1894, 382, bright=True, glyphs=5, line_height=134)
    word = Word(1504, 173, 1619, 204, allowed=False, confidence=96, characters=4)
    decision = policy.decide(region, [word], PixelOptions(), shape)
    assert decision.kind == "text"
    assert decision.blank == (policy.word_box(word, shape),) and decision.lines == 0
    assert decision.sure == decision.blank
    # of the line's height (and a few lines tall, not anatomy chained: ``is_chained``),
    # the region is a line of text and goes whole
    line = dataclasses.replace(region, y0=150, y1=230, line_height=31)
    assert policy.decide(line, [word], PixelOptions(), shape).blank[0] == line.box


def test_dense_annotation_page_goes():
    arr = film(7)
    lines = [f"ID {1000 + 37 * k} HOLLOWAY AGATHA 12/0{k % 9 + 1}/1950 14:{10 + k}" for k in range(8)]
    for k, line in enumerate(lines):
        arr = _text(arr, (30, 40 + 36 * k), line, 24, HIGH)
    _, out = _cleaned(arr)
    left = readable_tokens(out, (20, 30, 760, 340))
    assert not ({"HOLLOWAY", "AGATHA", "1950"} & left), left


def _rotated_text(arr, xy, text, size, value, angle=90, mirrored=False):
    """Text turned a quarter (reading bottom to top; ``angle`` -90: top to bottom), as on a
    vertical label; ``mirrored`` left to right first (a film flipped)."""
    font = _font(size)
    box = font.getbbox(text)
    mask = Image.new("L", (box[2] + 4, box[3] + 4), 0)
    ImageDraw.Draw(mask).text((2, 2), text, fill=255, font=font)
    if mirrored:
        mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    mask = mask.rotate(angle, expand=True)
    ink = np.zeros(arr.shape, dtype=np.float64)
    x, y = xy
    ink[y : y + mask.height, x : x + mask.width] = np.asarray(mask) / 255.0
    return (arr * (1 - ink) + ink * value).clip(0, HIGH).astype(np.uint16), (x, y, x + mask.width, y + mask.height)


def test_vertical_text_goes():
    arr, (_x0, _y0, _x1, _y1) = _rotated_text(film(8), (960, 300), "HOLLOWAY AGATHA", 30, HIGH)
    result, out = _cleaned(arr)
    ink = arr != film(8)
    assert (out[ink] != arr[ink]).mean() > 0.9, [(r.kind, r.why) for r in result.report.regions]


def _changed_within(arr, out, ink, pad):
    """Whether every changed pixel lies within ``pad`` pixels of the ink's box."""
    (iy0, ix0), (iy1, ix1) = np.argwhere(ink).min(axis=0), np.argwhere(ink).max(axis=0)
    (y0, x0), (y1, x1) = np.argwhere(out != arr).min(axis=0), np.argwhere(out != arr).max(axis=0)
    return iy0 - y0 <= pad and y1 - iy1 <= pad and ix0 - x0 <= pad and x1 - ix1 <= pad


@pytest.mark.parametrize("angle", [90, -90])
def test_a_word_running_up_or_down_chained_to_a_side_marker_goes_and_the_marker_stays(angle):
    """A vertical "PORT" beside an "L" (a held-out NIH film) is grouped with it into one
    horizontal line that no reader reads upright, and was only flagged: read turned, it
    goes, its box hugging the word; the L stays."""
    base = _text(film(6), (60, 180), "L", 60, HIGH)
    arr, _ = _rotated_text(base, (130, 190), "PORT", 30, HIGH, angle=angle)
    result, out = _cleaned(arr)
    marker = _text(np.zeros_like(arr), (60, 180), "L", 60, HIGH) > 0
    assert np.array_equal(out[marker], arr[marker])
    ink = arr != base
    assert (out[ink] != arr[ink]).mean() > 0.9, [(r.kind, r.why) for r in result.report.regions]
    assert _changed_within(arr, out, ink, 6)


def test_a_mirrored_code_beside_a_mirrored_side_marker_goes_and_the_marker_stays():
    """A technologist's code on a film flipped left to right, beside the mirrored "R" (a
    held-out NIH film: flagged, never read): read mirrored, the code goes; the R stays."""
    base, _ = _rotated_text(film(6), (60, 180), "R", 60, HIGH, angle=0, mirrored=True)
    arr, _ = _rotated_text(base, (140, 190), "DMD", 30, HIGH, angle=0, mirrored=True)
    result, out = _cleaned(arr)
    marker = base != film(6)
    assert np.array_equal(out[marker], arr[marker])
    ink = arr != base
    assert (out[ink] != arr[ink]).mean() > 0.9, [(r.kind, r.why) for r in result.report.regions]
    assert _changed_within(arr, out, ink, 6)


def test_a_mirrored_code_whose_word_box_took_in_part_of_the_marker_is_read_less_that_glyph():
    """Tesseract's mirrored box over a code took in half the mirrored "L" tile beside it (a
    held-out NIH film: the recogniser unsure of that box, 0.73): read again less its last
    glyph, the code is text, and what is blanked holds the code and stops short of the L."""
    code_only, _ = _rotated_text(film(6), (140, 190), "DMD", 30, HIGH, angle=0, mirrored=True)
    (cy0, cx0), (cy1, cx1) = (
        np.argwhere(code_only != film(6)).min(axis=0),
        np.argwhere(code_only != film(6)).max(axis=0),
    )
    arr, _ = _rotated_text(code_only, (cx1 + 4, 180), "L", 40, HIGH, angle=0, mirrored=True)
    marker = arr != code_only
    mx0, mx1 = np.argwhere(marker)[:, 1].min(), np.argwhere(marker)[:, 1].max()
    word = Word(int(cx0), int(cy0), int((mx0 + mx1) // 2), int(cy1) + 1, allowed=False, characters=3)
    (less_last, (_, limit)), _less_first = cleaning._less_one_glyph(arr, word, bright=True, upright=True)
    (reading,) = textrec.read(arr, [less_last.box], PixelOptions().is_allowed, (0, True))
    assert cleaning._turned_text(reading), reading
    x0, y0, x1, y1 = clipped(policy.word_box(less_last, arr.shape), limit)
    blanked = np.zeros(arr.shape, dtype=bool)
    blanked[y0:y1, x0:x1] = True
    assert blanked[code_only != film(6)].all() and not blanked[marker].any()


def test_a_flagged_line_is_read_turned_with_a_columns_rest_above_it_not_a_neighbour_at_its_side(monkeypatch):
    """A flagged line's turned and mirrored look takes in the region a column chained
    into it left above it (the rest of a vertical "PORT", too small to read), not one
    that touches it at a side (a shoulder beside an Actualmed film's "AP": read turned,
    its edges were 79 junk words, 0.3 s of Tesseract)."""
    arr = film(6)
    line = Region(400, 400, 600, 460, bright=True, glyphs=4, line_height=30)
    rest = Region(450, 360, 480, 410, bright=True, glyphs=2, line_height=15)
    beside = Region(560, 380, 700, 440, bright=True, glyphs=2, line_height=30)
    decisions = [
        policy.Decision("flagged", "unread glyphs of ink"),
        policy.Decision("marker", "too small to identify"),
        policy.Decision("left", "no text read"),
    ]
    looks: list[tuple[int, int, int, int]] = []
    real = ocr.read_views

    def watched(arr, regions, views, options, span=None):
        looks.extend(r.box for r in regions)
        return real(arr, regions, views, options, span)

    monkeypatch.setattr(ocr, "read_views", watched)
    cleaning._read_turned(arr, [line, rest, beside], decisions, detection.stroke_span(arr), PixelOptions())
    assert looks == [(400, 360, 600, 460)]


def _mirrored(arr, xy, text, size, font, spacing=0, angle=0):
    """``text`` mirrored (letter-spaced by ``spacing`` pixels), turned by ``angle``."""
    face = ImageFont.truetype(font, size)
    widths = [face.getbbox(c)[2] for c in text]
    width = sum(widths) + spacing * (len(text) - 1) if spacing else face.getbbox(text)[2]
    mask = Image.new("L", (width + 8, face.getbbox(text)[3] + 8), 0)
    draw = ImageDraw.Draw(mask)
    if spacing:
        x = 2
        for c, step in zip(text, widths, strict=True):
            draw.text((x, 2), c, fill=255, font=face)
            x += step + spacing
    else:
        draw.text((2, 2), text, fill=255, font=face)
    mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(angle, expand=True)
    ink = np.zeros(arr.shape, dtype=np.float64)
    ink[xy[1] : xy[1] + mask.height, xy[0] : xy[0] + mask.width] = np.asarray(mask) / 255.0
    return (arr * (1 - ink) + ink * HIGH).clip(0, HIGH).astype(np.uint16)


@pytest.mark.parametrize(
    ("bold", "spacing", "gap", "marker_size", "angle"),
    [
        (True, 0, 0, 40, 0),
        (False, 3, 0, 40, 0),
        (False, 0, 0, 34, 90),
        (True, 3, 0, 40, 90),
        (False, 8, 1, 50, 0),
        (True, 0, 0, 40, -90),
    ],
)
def test_a_code_whose_word_box_takes_in_a_whole_marker_goes_and_the_marker_stays(
    bold, spacing, gap, marker_size, angle
):
    """A bold or letter-spaced mirrored code (turned, or not) right beside a mirrored "L":
    Tesseract's word box takes in the whole L and still reads as text (read mirrored or
    turned, and upright, where the L was read as a marker but the code's box, or junk
    read over the column, took it in). The code goes; the L stays byte-identical."""
    font = "/usr/share/fonts/truetype/dejavu/DejaVuSans" + ("-Bold" if bold else "") + ".ttf"
    code = _mirrored(film(6), (140, 190), "DMD", 30, font, spacing, angle)
    ys, xs = np.nonzero(code != film(6))
    at = (int(xs.max()) + gap, 182) if angle == 0 else (140, int(ys.max()) + gap)
    arr = _mirrored(code, at, "L", marker_size, font)
    result, out = _cleaned(arr)
    marker = arr != code
    assert np.array_equal(out[marker], arr[marker]), [(r.kind, r.why) for r in result.report.regions]
    ink = code != film(6)
    assert (out[ink] != arr[ink]).mean() > 0.9, [(r.kind, r.why) for r in result.report.regions]


@pytest.mark.parametrize(
    ("bold", "spacing", "gap", "marker_size"),
    [(True, 0, 1, 40), (True, 3, 0, 50), (False, 0, 0, 34)],
)
def test_a_column_whose_line_box_takes_in_a_marker_under_it_goes_and_the_marker_stays(bold, spacing, gap, marker_size):
    """A mirrored code written top-down with the mirrored "L" stacked right under it: the
    column is read as a word that takes in the L, and its line boxes (``_hug``) blank the
    whole column. The line stops in the gap before the L, read alone as a marker while
    the code above still reads as text; the L stays byte-identical, the code goes."""
    font = "/usr/share/fonts/truetype/dejavu/DejaVuSans" + ("-Bold" if bold else "") + ".ttf"
    code = _mirrored(film(6), (140, 190), "DMD", 30, font, spacing, -90)
    ys, _ = np.nonzero(code != film(6))
    arr = _mirrored(code, (140, int(ys.max()) + gap), "L", marker_size, font)
    result, out = _cleaned(arr)
    marker = arr != code
    assert np.array_equal(out[marker], arr[marker]), [(r.kind, r.why) for r in result.report.regions]
    ink = code != film(6)
    assert (out[ink] != arr[ink]).mean() > 0.9, [(r.kind, r.why) for r in result.report.regions]


def _a_line_cut_by_the_box_below(above_text: str):
    """A film with ``above_text`` over an id line, and a "words read" decision whose box
    covers the id line and runs through the middle of the line above: (image, the upper
    line's ink, the id line's ink, the region, the decision)."""
    base = film(6)
    above = _text(base, (100, 300), above_text, 30, HIGH)
    arr = _text(above, (100, 338), "ID 1037 12/03/1950", 30, HIGH)
    cut, below = above != base, arr != above
    (cy0, cx0), (cy1, cx1) = np.argwhere(cut).min(axis=0), np.argwhere(cut).max(axis=0)
    (by0, bx0), (by1, bx1) = np.argwhere(below).min(axis=0), np.argwhere(below).max(axis=0)
    box = (int(min(bx0, cx0)) - 2, int(cy0 + cy1) // 2, int(max(bx1, cx1)) + 3, int(by1) + 3)
    region = dataclasses.replace(detection._region(arr, box, 2, int(by1 - by0)), bright=True)
    return arr, cut, below, region, policy.Decision("text", "words read", (box,))


def test_the_letters_a_blanked_box_cuts_through_go_whole_and_no_more():
    """A box blanked over one line whose edge runs through the letters of the line above
    (the top halves of "SMPTE" above a blanked block stayed readable): the glyphs it cuts
    are blanked whole, and nothing further than a word box's pad from their ink."""
    arr, cut, below, region, decision = _a_line_cut_by_the_box_below("HOLLOWAY AGATHA")
    (cy0, _), (cy1, _) = np.argwhere(cut).min(axis=0), np.argwhere(cut).max(axis=0)
    (grown,) = cleaning._grow_over_cut_glyphs(arr, [region], [decision], detection.stroke_span(arr), PixelOptions())
    out = arr.copy()
    redact_boxes(out, grown.blank, grown.keep, 0, grown.lines)
    assert (out[cut] == 0).all()
    assert _changed_within(arr, out, cut | below, 2 + int(cy1 - cy0 + 1) // 10)


def test_a_cut_glyph_another_decision_blanks_anyway_is_not_read(monkeypatch):
    """A lone letter cut by a blanked box's edge is read by the recogniser (a side marker
    stays), then grown over. When another text decision blanks it whole anyway (on a film
    scan most cut glyphs lie in the block's next line), the read changes no pixel: it is
    not read, and the letter goes all the same."""
    arr, cut, _, region, decision = _a_line_cut_by_the_box_below("X")
    (cy0, cx0), (cy1, cx1) = np.argwhere(cut).min(axis=0), np.argwhere(cut).max(axis=0)
    read: list[list[tuple[int, int, int, int]]] = []
    real = textrec.read

    def counted(arr, boxes, is_allowed, view=(0, False)):
        read.append(list(boxes))
        return real(arr, boxes, is_allowed, view)

    monkeypatch.setattr(textrec, "read", counted)
    span = detection.stroke_span(arr)
    (alone,) = cleaning._grow_over_cut_glyphs(arr, [region], [decision], span, PixelOptions())
    assert len(alone.blank) > 1 and read  # read alone (no marker), then grown over
    read.clear()
    line = (int(cx0) - 20, int(cy0) - 20, int(cx1) + 20, int(cy1) + 20)  # the line above, whole
    other = policy.Decision("text", "words read", (line,))
    both = cleaning._grow_over_cut_glyphs(arr, [region, region], [decision, other], span, PixelOptions())
    assert not read
    out = arr.copy()
    for d in both:
        redact_boxes(out, d.blank, d.keep, 0, d.lines)
    assert (out[cut] == 0).all()


@pytest.mark.parametrize("decoy", ["wire", "rib_edges"])
def test_a_word_a_wire_or_a_rib_edge_runs_through_does_not_grow_into_it(decoy):
    """A name with a guide wire or rib edges running through and beside it: it goes, and
    what is blanked stays within a few pixels of its letters (the wire and the bone edge
    cut by its box are no glyphs to grow over)."""
    base = DECOYS[decoy](film(3))
    arr = _text(base, (330, 470), "HOLLOWAY AGATHA", 30, HIGH)
    _result, out = _cleaned(arr)
    assert not ({"HOLLOWAY", "AGATHA"} & readable_tokens(out, (320, 460, 660, 520)))
    assert _changed_within(arr, out, arr != base, 8)


def _ridged(arr, seed=4, count=900):
    """A film hatched by short faint ridges (a shoulder's, ribs' texture at glyph size)."""
    rng = np.random.default_rng(seed)

    def ridges(d):
        for _ in range(count):
            x, y = rng.uniform(0, SIZE), rng.uniform(0, SIZE)
            d.line([(x, y), (x + rng.uniform(-9, 9), y + rng.uniform(4, 12))], fill=255, width=2)

    return draw_mask(arr, ridges, 450, blend=True)


@pytest.mark.parametrize("name", ["ecg_lead", "rib_edges", "pacemaker", "all", "ridges"])
def test_a_flagged_device_or_bone_edge_read_turned_and_mirrored_stays(name):
    """The turned and mirrored reads judge by the rules of every read: an ECG lead, rib
    edges, a pacemaker, every decoy at once and a film's ridge texture, each of their
    candidates taken as flagged, read as no text."""
    arr = film(seed=len(name))
    if name == "ridges":
        arr = _ridged(arr)
    for paint in DECOYS.values() if name == "all" else [DECOYS[name]] if name in DECOYS else []:
        arr = paint(arr)
    regions = detection.detect(arr)
    assert regions
    flagged = [policy.Decision("flagged", "low-confidence read")] * len(regions)
    span = detection.stroke_span(arr)
    assert cleaning._read_turned(arr, regions, flagged, span, PixelOptions()) == flagged


def test_text_visible_only_in_the_viewer_window_goes():
    """A 12-bit image whose range is set by a bright implant; the window shows the text."""
    arr = (film(10) // 4 + 600).astype(np.uint16)  # anatomy in 600..1600
    arr = draw_mask(arr, lambda d: d.rectangle((900, 40, 960, 200), fill=255), HIGH)  # metal: full range
    arr = _text(arr, (60, 880), PHI, 30, 220, blend=True)
    window = (1100, 1000)
    _result, out = _cleaned(arr, window=window)
    _assert_gone(arr, out, (50, 870, 560, 920), window=window)


@pytest.mark.parametrize("windowed", [False, True])
def test_small_faint_text_goes(windowed):
    """12-pixel glyphs at a quarter of the range (or 0.22 of the viewer's window): thin
    anti-aliased strokes are where a glyph is weakest, and a line, like a word read on
    it, needs one glyph whose stroke reaches glyph contrast along its length."""
    window = (1100, 1000) if windowed else None
    if windowed:
        base = (film(10) // 4 + 600).astype(np.uint16)
        base = draw_mask(base, lambda d: d.rectangle((900, 40, 960, 200), fill=255), HIGH)
        arr = _text(base, (60, 880), PHI, 12, 220, blend=True)
    else:
        arr = _text(film(5), (60, 880), PHI, 12, HIGH // 4, blend=True)
    result, out = _cleaned(arr, window=window)
    assert result.report.count("text"), result.report.regions
    _assert_gone(arr, out, (50, 870, 300, 900), window=window)


@pytest.mark.parametrize("size", [10, 16, 60, 110])
def test_glyphs_from_small_to_huge_go(size):
    text = "HOLLOWAY" if size > 60 else PHI
    arr = _text(film(11), (40, 600), text, size, HIGH)
    _, out = _cleaned(arr)
    ink = _text(np.zeros_like(arr), (40, 600), text, size, HIGH) > 0
    assert (out[ink] != arr[ink]).mean() > 0.9


@pytest.mark.parametrize("size", [80, 150])
def test_big_bold_words_go(size):
    """A bold 80-150 pixel word on a 1024-pixel film: its stems (14-25 pixels) are wider
    than the top-hat window, which saw its thin parts only (none of a bold 150-pixel
    HOLLOWAY, 15% of an 80-pixel one, the rest readable). The coarse screen sees it."""
    font = ImageFont.truetype(next(f for f in available_fonts() if f.endswith("DejaVuSans-Bold.ttf")), size)
    paint = lambda d: d.text((40, 600), "HOLLOWAY", fill=255, font=font)  # noqa: E731
    arr = draw_mask(film(11), paint, HIGH)
    ink = draw_mask(np.zeros_like(arr), paint, HIGH) > 0
    ys, xs = np.nonzero(ink)
    box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert "HOLLOWAY" in readable_tokens(arr, box), "the reader must see the word first"
    _, out = _cleaned(arr)
    assert (out[ink] != arr[ink]).mean() > 0.99
    assert not readable_tokens(out, box)


def test_wide_bright_structures_survive_byte_identical():
    """What the coarse screen sees at its scale: a thick bright collimation border, a big
    pacemaker, three ECG electrodes in a row, a thick tube and broad ribs, all flat and
    strong, none of them text. The electrodes are a row of big "glyphs" there: a
    candidate line that nothing reads, left in place."""

    def paint(d):
        d.rectangle((0, 0, 1023, 90), fill=255)
        d.rectangle((0, 0, 110, 1023), fill=255)
        d.rounded_rectangle((620, 160, 860, 330), radius=40, fill=255)
        for k in range(3):
            d.ellipse((200 + 110 * k, 820, 252 + 110 * k, 872), fill=255)  # 52 px: glyph-sized there
        d.line([(560, 330), (470, 700), (520, 1000)], fill=255, width=30)

    arr = draw_mask(film(14), paint, HIGH)
    arr = draw_mask(
        arr,
        lambda d: [d.arc((150, 200 + 110 * k, 560, 420 + 110 * k), 190, 330, fill=255, width=40) for k in range(4)],
        900,
        blend=True,
    )
    result = pixels.clean(as_dataset(arr), PixelOptions())
    assert result.array is None, [(r.kind, r.why, r.box) for r in result.report.regions]
    assert result.report.count("text") == 0
    # a candidate nothing reads, without letters of ink: left in place, not for review
    assert any(r.kind == "left" and r.box[1] <= 820 and r.box[3] >= 872 for r in result.report.regions)
    assert result.report.count("flagged") == 0


def test_markers_touching_anatomy_stay_and_a_label_there_goes():
    """On a page known to hold text, labels that touch anatomy (a skull's rim) go to the
    text detector with the anatomy's surround; its boxes were blanked whatever they held.
    A marker there (PORTABLE, R) is judged by the policy as anywhere: it stays."""
    arr = draw_mask(film(21), lambda d: d.ellipse((300, 320, 620, 640), outline=255, width=8), 3600)
    planted = {"PORTABLE": (380, 632), "HOLLOWAY": (400, 296), "R": (283, 450)}
    ink = {}
    for word, xy in planted.items():
        arr = _text(arr, xy, word, 28, HIGH)
        ink[word] = _text(np.zeros_like(arr), xy, word, 28, HIGH) > 0
    big: list = []
    detection.detect(arr, None, dense=True, big=big)
    assert big, "the labels join the rim into one component too tall for a glyph"
    out = arr.copy()
    for _region, decision in cleaning._beside_anatomy(arr, big, [20]):
        redact_boxes(out, decision.blank, decision.keep, 0, decision.lines)
    assert (out[ink["HOLLOWAY"]] != arr[ink["HOLLOWAY"]]).mean() > 0.9
    assert np.array_equal(out[ink["PORTABLE"]], arr[ink["PORTABLE"]])
    assert np.array_equal(out[ink["R"]], arr[ink["R"]])


@pytest.mark.parametrize("pitch", [8, 12])
def test_a_ruler_beside_text_stays_and_the_text_goes(pitch):
    """A scale ruler's tick marks are glyph-sized strokes in a row: OCR reads junk there
    (no sure word), and the text detector boxed them as a word, so a ruler above a name
    was blanked with it. Boxes of evenly spaced thin bars alone are no text."""

    def ruler(d):
        d.line((200, 300, 200 + 20 * pitch, 300), fill=255, width=2)
        for k in range(21):
            d.line((200 + k * pitch, 300, 200 + k * pitch, 300 - (16 if k % 5 == 0 else 8)), fill=255, width=2)

    arr = _text(draw_mask(film(5), ruler, HIGH), (200, 320), "HOLLOWAY AGATHA", 24, HIGH)
    _, out = _cleaned(arr)
    assert np.array_equal(out[270:303, 195 : 205 + 20 * pitch], arr[270:303, 195 : 205 + 20 * pitch])
    _assert_gone(arr, out, (190, 315, 460, 350))


def test_an_icon_letter_far_from_the_text_stays_and_unsure_letters_beside_it_go():
    """A region read as text blanks every word of its glyph height, however unsure. The
    ultrasound's probe icon, a "P" in a disc three line heights right of its settings
    column, was read as a one-letter word there and blanked with a corner of the image
    (the marker kept 31 of 32 on the real set). The recogniser has the last word
    (``cleaning.confirm_reads``): a glyph's box goes only within a line height of text
    of its decision, so the letters beside the name go and the far icon stays; a far
    unsure word goes when it reads as text."""
    shape = (200, 400)
    arr = _text(np.zeros(shape, dtype=np.uint16), (10, 8), "HOLL", 17, HIGH)
    arr = _text(arr, (76, 8), "A G A T", 17, HIGH)
    arr = _text(arr, (200, 8), "P", 17, HIGH)
    arr = _text(arr, (300, 8), "AGATHA", 17, HIGH)
    region = Region(0, 0, 400, 60, bright=True, glyphs=8, line_height=17)
    sure = Word(10, 10, 70, 27, allowed=False, confidence=95, characters=4)
    chain = [Word(76 + 14 * k, 10, 86 + 14 * k, 27, allowed=False, confidence=30, characters=1) for k in range(4)]
    icon = Word(200, 10, 214, 27, allowed=False, confidence=30, characters=1)
    far_word = Word(300, 10, 370, 27, allowed=False, confidence=20, characters=3)
    decision = policy.decide(region, [sure, *chain, icon, far_word], PixelOptions(), shape)
    assert decision.kind == "text"
    words = decision.blank[decision.lines :]
    (confirmed,) = cleaning.confirm_reads(arr, [dataclasses.replace(decision, blank=words, lines=0)], PixelOptions())
    assert policy.word_box(icon, shape) not in confirmed.blank
    assert {policy.word_box(w, shape) for w in (sure, *chain, far_word)} <= set(confirmed.blank)
    # the region's unread lines of glyphs are blanked only near the words read
    assert policy.beside_words((90, 8, 140, 30), words, 17)
    assert not policy.beside_words((196, 8, 218, 30), tuple(b for b in words if b[0] < 150), 17)


def test_text_over_a_bone_band_chained_to_ridges_goes_and_a_marker_beside_it_stays():
    """White words over a bright clavicle-like band, and a bone rim hatched by short faint
    ridges running down from the words: the screen's grouping chains the ridges (each
    overlapping the next in height) and the words into one group 27 line heights tall,
    which is no line, and the region was dropped with the words in it (real films:
    "RESUS" and "MOBILE" beside a shoulder, never a candidate). The words' letters are
    ink (most pixels at 0.4 of the range, the ridges none): they are a line again."""
    arr = draw_mask(film(3), lambda d: d.line([(0, 150), (1024, 60)], fill=255, width=70), 400, blend=True)
    arr = draw_mask(
        arr,
        lambda d: [
            d.line([(560 - 5 * k, 95 + 4 * k), (560 - 5 * k, 105 + 4 * k)], fill=255, width=2) for k in range(150)
        ],
        400,
        blend=True,
    )
    arr = _text(arr, (580, 80), "HOLLOWAY AGATHA", 30, HIGH)
    arr = _text(arr, (900, 180), "L", 50, HIGH)
    _result, out = _cleaned(arr)
    _assert_gone(arr, out, (570, 70, 900, 125))
    marker = _text(np.zeros_like(arr), (900, 180), "L", 50, HIGH) > 0
    assert np.array_equal(out[marker], arr[marker])
    ys, xs = np.nonzero(out != arr)
    assert ys.min() >= 70 and ys.max() < 125 and xs.min() >= 570, "only the words' line is blanked, not the ridges"


def _bone_band_with_ridges(seed: int = 3) -> np.ndarray:
    """A bright clavicle-like band and a bone rim hatched by short faint ridges running
    down from its middle (as in the test above)."""
    arr = draw_mask(film(seed), lambda d: d.line([(0, 150), (1024, 60)], fill=255, width=70), 400, blend=True)
    return draw_mask(
        arr,
        lambda d: [
            d.line([(560 - 5 * k, 95 + 4 * k), (560 - 5 * k, 105 + 4 * k)], fill=255, width=2) for k in range(150)
        ],
        300,
        blend=True,
    )


@pytest.mark.parametrize("level", [0.24, 0.33])
def test_faint_text_chained_to_ridges_goes(level):
    """Words burned in at a quarter of the range over the bone band: chained with the
    ridges into a region the size of the film, dropped as no line, and no letter of ink
    (0.4 of the range) to rescue. The letters share one stroke level, width and baseline
    and are shaped as letters; the ridges step down the rim: the words are a line."""
    base = _bone_band_with_ridges()
    arr = _text(base, (580, 80), "HOLLOWAY AGATHA", 30, level * detection.stroke_span(base), blend=True)
    _result, out = _cleaned(arr)
    _assert_gone(arr, out, (570, 70, 900, 125))
    ys, xs = np.nonzero(out != arr)
    assert ys.min() >= 75 and ys.max() < 120 and xs.min() >= 570, "the words' line, not the ridges"


@pytest.mark.parametrize("slant", [0, 8])
def test_faint_bars_in_a_row_over_ridges_are_no_candidate(slant):
    """Bars or slanted streaks at a quarter of the range on one baseline over the bone
    band (a ladder of ribs' edges, a row of streaks on a knee's MR): rows of one stroke
    level and width, chained to the ridges and dropped with them. Single strokes, and
    the gaps between them blobs: no line of faint letters, no candidate, byte-identical."""
    base = _bone_band_with_ridges()
    bars = [[(580 + 12 * k, 108), (580 + slant + 12 * k, 86)] for k in range(20)]
    arr = draw_mask(
        base, lambda d: [d.line(bar, fill=255, width=3) for bar in bars], 0.27 * detection.stroke_span(base), blend=True
    )
    result, _out = _cleaned(arr)
    assert result.array is None
    assert all(r.kind == "marker" for r in result.report.regions), result.report.regions


def test_the_second_look_reads_lines_of_ink_not_a_films_ridge_texture():
    """On a film known to hold text, the second look cut ribs and a shoulder's ridge
    texture into ~700 lines of one height, each read by OCR and shown to the detector
    (80 s, loaded, on a real film with one word found). Only lines holding a letter of
    ink are looked at: the name's line, not the ridges."""
    arr = _text(_ridged(film(5)), (600, 60), "HOLLOWAY AGATHA", 26, HIGH)
    lines = detection.detect(arr, None, dense=True)
    assert len(lines) < 20, len(lines)
    ink = np.argwhere(_text(np.zeros_like(arr), (600, 60), "HOLLOWAY AGATHA", 26, HIGH) > 0)
    (iy0, ix0), (iy1, ix1) = ink.min(axis=0), ink.max(axis=0)
    assert any(r.x0 <= ix0 and r.y0 <= iy0 and ix1 < r.x1 and iy1 < r.y1 for r in lines), [r.box for r in lines]


def test_bold_text_goes():
    arr = draw_mask(film(12), lambda d: d.text((60, 860), PHI, fill=255, font=_font(40), stroke_width=3), HIGH)
    _, out = _cleaned(arr)
    assert not ({"HOLLOWAY", "AGATHA", "1950"} & readable_tokens(out, (50, 850, 800, 920)))


def test_markers_stay_byte_identical():
    arr = _text(film(13), (60, 100), "R", 60, HIGH)
    arr = _text(arr, (900, 100), "L", 60, HIGH)
    arr = _text(arr, (400, 60), "PORTABLE", 36, HIGH)
    result = pixels.clean(as_dataset(arr), PixelOptions())
    assert result.array is None, [(r.kind, r.why) for r in result.report.regions]
    assert result.report.count("marker") >= 2


def _blocks(lines: list[PlantedText]) -> list[tuple[int, int, int, int]]:
    """Planted lines joined into their blocks (consecutive lines one under the other)."""
    boxes: list[list[int]] = []
    for line in lines:
        x0, y0, x1, y1 = line.box
        last = boxes[-1] if boxes else None
        if last and 0 <= y0 - last[3] <= 2 * (y1 - y0) and x0 < last[2] and last[0] < x1:
            last[:] = [min(last[0], x0), last[1], max(last[2], x1), y1]
        else:
            boxes.append([x0, y0, x1, y1])
    return [tuple(b) for b in boxes]


def test_dense_film_scan_annotations_go_and_side_markers_stay():
    """The NEMA WG04 ``SC1`` class: a film of CT panels, each framed by blocks of small
    text beside a skull with bone fragments and a ruler. The screen strung text and
    anatomy into regions with the skull's line height, so most lines were never read
    (168 tokens stayed readable on SC1); the second look at lines grouped by glyph
    height must leave no token of three characters readable."""
    arr, planted = film_scan(seed=0)
    result, out = _cleaned(arr)
    lines = [p for p in planted if p.kind != MARKER]
    tokens = {t for p in lines for t in re.split(r"[^A-Z0-9]+", p.text.upper()) if len(t) >= 3}
    blocks = _blocks(lines)
    seen: set[str] = set()
    for box in blocks[1::3]:  # the reader sees the names, ids and dates (right blocks) first
        seen |= readable_tokens(arr, box)
    assert {"HOLLOWAY", "PRENDERGAST", "WHITLOCK", "FAIRBANKS"} <= seen, "the reader must see the names first"
    left: set[str] = set()
    for box in blocks:
        left |= readable_tokens(out, box)
    assert not (tokens & left), (sorted(tokens & left), [(r.kind, r.why) for r in result.report.regions])
    assert result.report.count("text") >= 20
    for marker in (p for p in planted if p.kind == MARKER):  # R and L beside each skull
        x0, y0, x1, y1 = marker.box
        assert np.array_equal(out[y0:y1, x0:x1], arr[y0:y1, x0:x1]), marker


def test_a_two_line_banner_is_blanked_line_by_line_not_as_one_rectangle():
    """A name over a shorter date line (the presidio/TCIA films): the candidate region is
    one rectangle, and blanking it whole took the empty end of the short line and the
    padding below it (1.6% of a real chest film); each blanked line now hugs its glyphs."""
    lines = (((20, 0), PHI), ((40, 44), "DOB 1950"))  # at the top edge, 2048 pixels: pooled 2x
    arr = film(14, size=2048)
    for xy, text in lines:
        arr = _text(arr, xy, text, 44, HIGH)
    result, out = _cleaned(arr)
    assert result.report.count("text"), result.report.regions
    _assert_gone(arr, out, (0, 0, 900, 110))
    allowed = np.zeros(arr.shape, dtype=bool)
    for xy, text in lines:
        ink = np.argwhere(_text(np.zeros_like(arr), xy, text, 44, HIGH) > 0)
        (y0, x0), (y1, x1) = ink.min(axis=0), ink.max(axis=0)
        allowed[max(0, y0 - 8) : y1 + 9, max(0, x0 - 8) : x1 + 9] = True
    assert not ((out != arr) & ~allowed).any(), np.argwhere((out != arr) & ~allowed)[[0, -1]]


def test_a_side_marker_read_with_a_dash_or_an_arrow_is_the_marker():
    """On a real film the lead marker "L" was read as "L-" (its edge taken for a dash): no
    allow-listed word, so the technologist's code beside it ("RS") was no lone code
    (``policy.lone_code``) and both were blanked. Marker symbols around an allow-listed
    word identify nobody; around anything else they hide nothing either."""
    options = PixelOptions()
    for word in ("L-", "<R", "R->", "-L-", "'L-'"):
        assert options.is_allowed(word), word
    for word in ("L-7", "-DOE", "R2-", "<-X", "7-L"):
        assert not options.is_allowed(word), word


def test_compounds_of_allowed_words_stay_and_other_compounds_do_not():
    options = PixelOptions()
    assert options.is_allowed("Semi-Upright") and options.is_allowed("SEMI-ERECT")
    assert not options.is_allowed("JOHN-SMITH") and not options.is_allowed("L-7")


def test_a_film_scan_block_over_four_lines_beside_bone_goes():
    """``SC1``'s CEREBRAL-INFARCT block: five lines beside a skull whose rim reaches its
    first line. The dense look's block, bone included, was just over four lines high and
    was never read; blocks up to twice that are cut into their lines and read."""
    arr, _planted = film_scan(seed=1)
    font = ImageFont.truetype(next(p for p in available_fonts() if "Mono-Bold" in p), 14)
    arr = draw_mask(arr, lambda d: d.ellipse((60, 560, 260, 760), outline=255, width=9), 3600)
    for k, text in enumerate(["CEREBRAL-INFARCT", "616205", "7/5/1995", "07:32", "512x512"]):
        width = font.getbbox(text)[2]
        arr = draw_mask(
            arr, lambda d, t=text, w=width, k=k: d.text((380 - w, 600 + 21 * k), t, fill=255, font=font), 3600
        )
    result, out = _cleaned(arr)
    box = (230, 595, 390, 715)
    tokens = {"CEREBRAL", "INFARCT", "616205", "1995", "512X512"}
    assert len(tokens & readable_tokens(arr, box)) >= 2, "the reader must see the block first"
    assert not (tokens & readable_tokens(out, box)), [(r.kind, r.why) for r in result.report.regions]


def _bold(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(next(p for p in available_fonts() if "Mono-Bold" in p), size)


def _covers(boxes, target) -> bool:
    x0, y0, x1, y1 = target
    return any(b[0] <= x0 + 3 and b[1] <= y0 + 3 and x1 - 3 <= b[2] and y1 - 3 <= b[3] for b in boxes)


def test_the_text_detector_boxes_a_short_label_under_a_ruler():
    """``SC1``'s "P114" under a ruler's ticks: the detector's box for a four-letter word,
    unclipped, is nearly as high as wide, and the shape test on it threw the word away."""
    from cxr_dask.deid.pixels import textdet

    image = Image.new("L", (160, 110), 0)
    draw = ImageDraw.Draw(image)
    draw.line((20, 30, 140, 30), fill=255, width=3)
    for k in range(6):
        draw.line((20 + 24 * k, 18, 20 + 24 * k, 30), fill=255, width=3)
    left, top, right, bottom = _bold(36).getbbox("P114")
    draw.text((30, 40), "P114", fill=255, font=_bold(36))
    arr = np.asarray(image).astype(np.uint16) * 14
    (boxes,) = textdet.text_boxes(arr, [(6, 6, 154, 96)], [39])
    assert _covers(boxes, (30 + left, 40 + top, 30 + right, 40 + bottom)), boxes


def test_a_label_whose_foot_touches_a_skull_is_found_beside_the_anatomy():
    """``SC1``'s "A114" labels sit on a skull's rim: their strokes join the bone into one
    component too tall for a glyph, and no candidate line held them. The dense look hands
    such components, grown by a line height, to the text detector."""
    from cxr_dask.deid.pixels import cleaning, detection

    image = Image.new("L", (1000, 1000), 0)
    draw = ImageDraw.Draw(image)
    draw.ellipse((300, 300, 600, 650), outline=255, width=6)
    left, top, right, bottom = _bold(36).getbbox("K4471")
    x, y = 450 - (right - left) // 2, 300 - (bottom - top) + 1
    draw.text((x - left, y - top), "K4471", fill=255, font=_bold(36))
    arr = np.asarray(image).astype(np.uint16) * 14 + 60
    big: list = []
    detection.detect(arr, None, dense=True, big=big)
    found = cleaning._beside_anatomy(arr, big, [36])
    assert [d.why for _, d in found] == ["text detector beside anatomy"], found
    assert _covers(found[0][1].blank, (x, y, x + right - left, y + bottom - top)), found
    assert not cleaning._beside_anatomy(arr, big, []), "only on a page known to hold text"


def test_a_dense_page_goes_through_the_text_detector_in_a_few_runs(monkeypatch):
    """``SC1``'s ~210 detector crops were ~210 model runs (issue 11). Crops of one padded
    size now share a run, stacked in the batch axis, and each gets the boxes it gets alone
    (the model pools over its whole input: crops tiled into one canvas would not).
    Counts, not times; Tesseract reads the page's lines in a few montages."""
    from cxr_dask.deid.pixels import ocr, textdet

    counts = {"runs": 0, "crops": 0, "tesseract": 0}
    session = textdet._get_session()

    class Counting:
        def get_inputs(self):
            return session.get_inputs()

        def run(self, names, feeds):
            counts["runs"] += 1
            counts["crops"] += len(next(iter(feeds.values())))
            return session.run(names, feeds)

    asked: list[tuple] = []
    text_boxes, tesseract_tsv = textdet.text_boxes, ocr.tesseract_tsv

    def recording(arr, regions, line_heights=None, margins=None):
        asked.append((arr, regions, line_heights, margins))
        return text_boxes(arr, regions, line_heights, margins)

    def reading(*args, **kwargs):
        counts["tesseract"] += 1
        return tesseract_tsv(*args, **kwargs)

    monkeypatch.setattr(textdet, "_session", Counting())
    monkeypatch.setattr(textdet, "text_boxes", recording)
    monkeypatch.setattr(ocr, "tesseract_tsv", reading)
    arr, _planted = film_scan(seed=0)
    result = pixels.clean(as_dataset(arr), PixelOptions())
    assert result.report.count("text") >= 20
    assert counts["crops"] >= 40, counts  # a dense page: many crops nothing else could decide
    assert counts["runs"] * 3 <= counts["crops"], counts
    assert counts["tesseract"] <= 4, counts
    # together or alone, a crop's boxes are the same
    page, regions, heights, margins = max(asked, key=lambda call: len(call[1]))
    some = range(0, len(regions), max(1, len(regions) // 8))

    def pick(values, ks):
        return None if values is None else [values[k] for k in ks]

    together = text_boxes(page, pick(regions, some), pick(heights, some), pick(margins, some))
    alone = [text_boxes(page, [regions[k]], pick(heights, [k]), pick(margins, [k]))[0] for k in some]
    assert together == alone


def test_white_letters_outlined_in_black_are_ink_and_no_device_or_bone_is():
    """Bedside films print "liegend" and "Bettaufnahme" in the image's white with a black
    rim, over the shoulder: the screen chained them with the bone into one region the
    film's size and they were never read. Letters in the range's top tenth within two
    pixels of its bottom tenth are found alone (``detection._outlined_letters``); no
    wire, lead, catheter, rib edge or collimation border makes a line of them."""
    from PIL import ImageFont

    from cxr_dask.deid.pixels import detection
    from cxr_dask.deid.pixels.detection import _inside

    font = ImageFont.truetype(next(f for f in available_fonts() if "Bold" in f), 20)
    arr = draw_mask(film(3), lambda d: d.text((600, 300), "liegend", fill=255, font=font, stroke_width=1), 0)
    arr = draw_mask(arr, lambda d: d.text((600, 300), "liegend", fill=255, font=font), HIGH)
    letters = detection._outlined_letters(arr, arr)  # pooled by 1: the image is its block max and min
    assert len(letters) >= 5 and all(_inside(box, (595, 295, 700, 330)) for box in letters)
    assert detection._rescued([(0, 0, 1024, 1024)], letters), "they make a line"
    for name, decoy in DECOYS.items():  # an ECG clip may have such a pixel; never a line of them
        assert detection._rescued([(0, 0, 1024, 1024)], detection._outlined_letters(*[decoy(film(4))] * 2)) == [], name


def test_a_label_merged_with_a_taller_ruler_bracket_is_read_at_its_own_scale():
    """A ruler's "100 mm" under its bracket: the padded lines overlap and merge into one
    region of the bracket's line height (121 pixels), with room for two glyphs of that
    height: kept as a marker, never read (a real film's label was left whole). Its letters
    are ink and, inside a region too small at its own scale, a line of their own
    (``detection._finer_lines``): the dense look reads it at its height, and it is
    blanked. The bracket stays."""
    font = ImageFont.truetype(next(f for f in available_fonts() if "Bold" in f), 22)

    def bracket(d):
        d.rectangle((730, 300, 735, 420), fill=255)
        for y in (300, 360, 415):
            d.rectangle((712, y, 735, y + 5), fill=255)

    arr = draw_mask(film(3), bracket, HIGH)
    arr = draw_mask(arr, lambda d: d.text((690, 430), "100 mm", fill=255, font=font), 3400)
    finer: list[tuple[int, int, int, int]] = []
    regions = detection.detect(arr, finer=finer)
    assert any(r.line_height > 100 and policy.is_small(r) for r in regions), "the bracket's region, a marker"
    assert [box for box in finer if box[0] <= 692 and box[2] >= 780 and box[3] - box[1] < 30], finer
    result = pixels.clean(as_dataset(arr), PixelOptions())
    assert result.array is not None
    changed = result.array != arr
    assert changed[435:451, 692:789].mean() > 0.95
    assert not changed[300:421, 712:736].any()


def test_italian_side_markers_stay_byte_identical():
    """DX and SX (destra, sinistra) are the side markers of Italian films: two letters
    a little wider than a marker's room, read by Tesseract at 96, they were blanked."""
    arr = _text(film(14), (880, 120), "SX", 34, HIGH)
    arr = _text(arr, (80, 120), "DX", 34, HIGH)
    result = pixels.clean(as_dataset(arr), PixelOptions())
    assert result.array is None, [(r.kind, r.why, r.box) for r in result.report.regions]


def test_a_word_read_in_anatomy_chained_over_the_film_is_text_alone():
    """A region many line heights tall is anatomy the screen chained together (a whole
    chest at a rib's height): one word read there with confidence blanked the region's
    every other word box of its height (ribs read as junk) and, through the recogniser,
    a clavicle and the "L" tile its box took in. Such a word is evidence for its own box
    only, and the recogniser confirms it with three characters."""
    shape = (524, 572)
    region = Region(0, 0, 572, 524, bright=True, glyphs=200, line_height=43)
    word = Word(457, 3, 567, 48, allowed=False, confidence=63.0, characters=3)
    junk = [
        Word(360, 41, 406, 79, allowed=False, confidence=15.0, characters=3),
        Word(12, 377, 96, 421, allowed=False, confidence=30.0),
    ]
    decision = policy.decide(region, [word, *junk], PixelOptions(), shape)
    assert decision.kind == "text" and decision.blank == (policy.word_box(word, shape),), decision.blank
    assert decision.lines == 0 and decision.confirm == policy.CHAINED_CHARACTERS
    line = Region(0, 0, 572, 60, bright=True, glyphs=10, line_height=43)  # a line: as before
    assert policy.decide(line, [word, *junk], PixelOptions(), shape).blank[0] == line.box


@pytest.mark.parametrize(("text", "blanked"), [("XK", False), ("HOLLOWAY", True)])
def test_the_recogniser_confirms_a_word_in_chained_anatomy_with_three_characters(text, blanked):
    arr = _text(film(15), (300, 200), text, 30, HIGH)
    ink = np.argwhere(_text(np.zeros_like(arr), (300, 200), text, 30, HIGH) > 0)
    (y0, x0), (y1, x1) = ink.min(axis=0), ink.max(axis=0) + 1
    word = Word(int(x0), int(y0), int(x1), int(y1), allowed=False, confidence=90.0, characters=len(text))
    region = Region(0, 0, SIZE, SIZE, bright=True, glyphs=300, line_height=int(y1 - y0))
    decision = policy.decide(region, [word], PixelOptions(), arr.shape)
    (confirmed,) = cleaning.confirm_reads(arr, [decision], PixelOptions())
    assert (confirmed.kind == "text") == blanked, confirmed
    if not blanked:
        assert confirmed.kind == "flagged"  # the recogniser read text there: a human looks


def test_a_small_line_chained_to_a_big_shape_and_read_as_nothing_is_read_at_its_own_scale(monkeypatch):
    """A small line of text whose padded box merged with a shape five times its height
    (a panel letter, a ring and a bracket here) is read at the shape's line height. On a
    COVID-19 film (a "PRT" cut by the top edge beside a panel letter "B") Tesseract read
    nothing at that scale, the text detector found nothing, and the line stayed. A region
    nothing read that holds a line of ink under half its line height
    (``detection._finer_lines``) gets the dense look, which reads the line at its own
    height. The first pass here reads nothing at the shape's scale, as there; the ring
    and the bracket stay."""
    font = ImageFont.truetype(available_fonts()[0], 14)

    def shapes(d):
        d.ellipse((200, 140, 250, 210), outline=255, width=6)
        d.rectangle((275, 140, 281, 210), fill=255)
        d.rectangle((275, 140, 300, 146), fill=255)
        d.rectangle((275, 204, 300, 210), fill=255)

    arr = draw_mask(film(0), shapes, HIGH)
    arr = draw_mask(arr, lambda d: d.text((212, 122), "KDW 4471", fill=255, font=font), HIGH)
    inner: list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] = []
    regions = detection.detect(arr, inner=inner)
    (region,) = [r for r in regions if r.x0 < 400 and r.y0 < 300]
    assert region.line_height > 60 and not policy.is_small(region)
    assert [line for box, line in inner if box == region.box and line[3] - line[1] < 20], inner
    real = cleaning.read_regions

    def at_the_shapes_scale_nothing(image, regions, options, span=None):
        return [
            [] if r.line_height > 60 else w for r, w in zip(regions, real(image, regions, options, span), strict=True)
        ]

    monkeypatch.setattr(cleaning, "read_regions", at_the_shapes_scale_nothing)
    _, out = _cleaned(arr)
    assert {"KDW", "4471"} <= readable_tokens(arr, (200, 108, 300, 128))
    assert not ({"KDW", "4471"} & readable_tokens(out, (200, 108, 300, 128)))
    assert (out[141:211, 200:301] == arr[141:211, 200:301]).all()
