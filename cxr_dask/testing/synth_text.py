"""Burned-in annotations for the synthetic corpus: text where modalities put it, and decoys.

Real chest radiographs carry text burned into the pixels by the modality or a
secondary-capture step: a side marker (L/R) near the lung edge, the projection and
position (AP, PORTABLE, SUPINE), and sometimes the patient's name, MRN, birth date and
the acquisition date and time in a corner or along an edge. This module paints such
text into a synthetic image (several fonts and sizes, white on dark or black on bright,
sometimes on a backing box), plus text-like structures that are not text (a wire, an
ECG lead, a ruler), and returns every planted box so tests and benchmarks can score a
detector's recall and precision and check that no PHI token survives.

Deterministic for its ``random.Random``: the fonts are the Debian packages ``make
setup`` installs, found by fixed paths.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationMono-Regular.ttf",
)

PHI, MARKER, STRUCTURE = "phi", "marker", "structure"
SIDE_MARKERS = ("L", "R", "LT", "RT")
POSITION_MARKERS = ("AP", "PA", "PORTABLE", "UPRIGHT", "ERECT", "SUPINE", "SEMI-ERECT", "SITTING", "LAT", "INSP")


@dataclass(frozen=True)
class PlantedText:
    """One planted line: its text, ``phi``/``marker``/``structure``, and its pixel box.

    ``box`` is ``(x0, y0, x1, y1)``, end-exclusive, tight around the painted strokes.
    """

    text: str
    kind: str
    box: tuple[int, int, int, int]

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(self.text.split())


@lru_cache(maxsize=1)
def available_fonts() -> tuple[str, ...]:
    """The font files present (``make setup`` installs fonts-dejavu-core, fonts-liberation2)."""
    return tuple(path for path in FONT_PATHS if Path(path).is_file())


@lru_cache(maxsize=64)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _date_text(rng: random.Random, day: dt.date) -> str:
    formats = ("%m/%d/%Y", "%Y-%m-%d", "%d.%m.%Y", "%d-%b-%Y", "%Y%m%d", "%b %d %Y")
    return day.strftime(rng.choice(formats)).upper()


def _time_text(rng: random.Random) -> str:
    hour, minute, second = rng.randrange(7, 20), rng.randrange(60), rng.randrange(60)
    if rng.random() < 0.3:
        return f"{(hour - 1) % 12 + 1}:{minute:02d}{'PM' if hour >= 12 else 'AM'}"
    return f"{hour:02d}:{minute:02d}:{second:02d}" if rng.random() < 0.5 else f"{hour:02d}:{minute:02d}"


def phi_lines(
    rng: random.Random, name: str, patient_id: str, birth: dt.date, day: dt.date, accession: str
) -> list[str]:
    """One to three lines of identifying text in the formats modalities print."""
    surname, given = name.split("^")[:2]
    names = (f"{surname}, {given}", f"{given} {surname}", f"{surname}^{given}", f"{surname} {given[0]}")
    digits = patient_id.removeprefix("MRN")
    ids = (f"MRN: {digits}", f"ID {digits}", patient_id, f"#{digits}")
    candidates = [
        rng.choice(names),
        rng.choice(ids),
        f"DOB {_date_text(rng, birth)}",
        f"{_date_text(rng, day)} {_time_text(rng)}",
        f"ACC {accession.removeprefix('ACC')}",
    ]
    first = candidates[0] if rng.random() < 0.7 else candidates[1]
    rest = [c for c in candidates if c != first]
    return [first, *rng.sample(rest, rng.randint(0, 2))]


def _render(text: str, font: ImageFont.FreeTypeFont) -> np.ndarray:
    """The text's anti-aliased coverage (0..1), cropped to its strokes."""
    left, top, right, bottom = map(int, font.getbbox(text))  # ints for a FreeType font
    canvas = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), text, fill=255, font=font)
    mask = np.asarray(canvas, dtype=np.float32) / 255.0
    ys, xs = np.nonzero(mask > 0.05)
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


class _Canvas:
    """An image being annotated, with the boxes already taken (nothing overlaps)."""

    def __init__(self, image: np.ndarray, top: int, monochrome1: bool, rng: random.Random) -> None:
        self.image, self.top, self.monochrome1, self.rng = image, top, monochrome1, rng
        self.rows, self.columns = image.shape
        self.taken: list[tuple[int, int, int, int]] = []
        self.planted: list[PlantedText] = []

    def stored(self, bright: bool) -> int:
        """The stored value that displays as white (bright) or black on this photometric."""
        return (0 if bright else self.top) if self.monochrome1 else (self.top if bright else 0)

    def displayed_brightness(self, box: tuple[int, int, int, int]) -> float:
        x0, y0, x1, y1 = box
        mean = float(self.image[y0:y1, x0:x1].mean()) / self.top
        return 1.0 - mean if self.monochrome1 else mean

    def free(self, box: tuple[int, int, int, int], margin: int) -> bool:
        x0, y0, x1, y1 = box
        if x0 < 2 or y0 < 2 or x1 > self.columns - 2 or y1 > self.rows - 2:
            return False
        return all(
            x1 + margin <= a0 or b1 + margin <= x0 or y1 + margin <= b0 or c1 + margin <= y0
            for a0, b0, b1, c1 in self.taken
        )

    def paint(self, mask: np.ndarray, x: int, y: int, bright: bool) -> None:
        h, w = mask.shape
        region = self.image[y : y + h, x : x + w].astype(np.float32)
        value = self.stored(bright)
        self.image[y : y + h, x : x + w] = np.rint(region * (1.0 - mask) + value * mask).astype(self.image.dtype)

    def place_text(self, text: str, kind: str, size: int, anchor: tuple[float, float], backing: bool) -> bool:
        """Paint ``text`` near the fractional ``anchor``; False when no free spot was found."""
        font = _font(self.rng.choice(available_fonts()), size)
        mask = _render(text, font)
        h, w = mask.shape
        pad = max(2, size // 4) if backing else 0
        margin = max(4, size // 2)
        for _ in range(12):
            x = int(anchor[0] * (self.columns - w)) + self.rng.randint(-size, size)
            y = int(anchor[1] * (self.rows - h)) + self.rng.randint(-size // 2, size // 2)
            box = (x - pad, y - pad, x + w + pad, y + h + pad)
            if self.free(box, margin):
                break
        else:
            return False
        if backing:
            bright_box = self.displayed_brightness(box) > 0.5
            self.image[box[1] : box[3], box[0] : box[2]] = self.stored(bright_box)
            bright_text = not bright_box
        else:
            bright_text = self.displayed_brightness(box) < 0.5
        self.paint(mask, x, y, bright_text)
        self.taken.append(box)
        self.planted.append(PlantedText(text, kind, (x, y, x + w, y + h)))
        return True

    def wire(self) -> None:
        """A bright metal wire or ECG lead: a long smooth curve across the chest."""
        t = np.linspace(0.0, 1.0, 400)
        x0, x1 = self.rng.uniform(0.3, 0.7), self.rng.uniform(0.3, 0.7)
        bend = self.rng.uniform(-0.2, 0.2)
        xs = (x0 + (x1 - x0) * t + bend * np.sin(np.pi * t)) * (self.columns - 1)
        ys = (0.15 + 0.6 * t) * (self.rows - 1)
        width = max(2, self.rows // 250)
        canvas = Image.new("L", (self.columns, self.rows), 0)
        ImageDraw.Draw(canvas).line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=255, width=width)
        self._structure("wire", np.asarray(canvas, dtype=np.float32) / 255.0, reserve=False)

    def ruler(self) -> None:
        """A radiopaque ruler along the bottom edge: a bar with regular tick marks."""
        length = int(self.columns * self.rng.uniform(0.3, 0.5))
        tick = max(6, self.rows // 60)
        step = max(5, self.columns // 60)
        x = self.rng.randint(self.columns // 8, self.columns - length - self.columns // 8)
        y = int(self.rows * 0.96) - 2 * tick
        canvas = Image.new("L", (self.columns, self.rows), 0)
        draw = ImageDraw.Draw(canvas)
        width = max(1, self.rows // 300)
        draw.line([(x, y), (x + length, y)], fill=255, width=width)
        for i, tx in enumerate(range(x, x + length + 1, step)):
            draw.line([(tx, y), (tx, y + (tick if i % 5 == 0 else tick // 2))], fill=255, width=width)
        self._structure("ruler", np.asarray(canvas, dtype=np.float32) / 255.0)

    def _structure(self, name: str, mask: np.ndarray, reserve: bool = True) -> None:
        """Paint a decoy; a wire's box spans the chest, so only its strokes are kept clear."""
        ys, xs = np.nonzero(mask > 0.05)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        self.paint(mask[box[1] : box[3], box[0] : box[2]], box[0], box[1], bright=True)
        if reserve:
            self.taken.append(box)
        self.planted.append(PlantedText(name, STRUCTURE, box))


def burn_in(
    image: np.ndarray,
    bits: int,
    monochrome1: bool,
    rng: random.Random,
    *,
    phi: list[str] | None,
    markers: bool,
    structure: bool,
) -> tuple[PlantedText, ...]:
    """Paint markers, PHI lines (``phi``) and maybe a decoy structure into ``image`` in place.

    Font sizes scale with the image (about 1.5-3% of its height, at least 13 pixels so a
    256-pixel test image still carries legible text).
    """
    canvas = _Canvas(image, (1 << bits) - 1, monochrome1, rng)
    rows = canvas.rows

    def size(scale: float = 1.0) -> int:
        return max(13, int(rows * rng.uniform(0.015, 0.03) * scale))

    if structure:  # first, so text is placed clear of it
        canvas.wire() if rng.random() < 0.5 else canvas.ruler()
    if markers:
        side = rng.choice(SIDE_MARKERS)
        canvas.place_text(
            side, MARKER, size(1.8), (rng.choice((0.06, 0.94)), rng.uniform(0.08, 0.3)), rng.random() < 0.4
        )
        if rng.random() < 0.7:
            canvas.place_text(rng.choice(POSITION_MARKERS), MARKER, size(), (rng.uniform(0.3, 0.7), 0.03), False)
    if phi:
        corner = (rng.choice((0.02, 0.98)), rng.choice((0.02, 0.98)))
        backing = rng.random() < 0.3
        line_size = size()
        for offset, line in enumerate(phi):
            step = (line_size * 1.6 * offset) / max(1, rows - line_size)
            y = corner[1] + step if corner[1] < 0.5 else corner[1] - step
            canvas.place_text(line, PHI, line_size, (corner[0], y), backing)
        if markers and rng.random() < 0.5:  # a timestamp printed right under the position word
            canvas.place_text(phi[-1], PHI, size(), (rng.uniform(0.3, 0.7), 0.08), False)
    return tuple(canvas.planted)


# --------------------------------------------------------------------------- decoy films
#: What chest x-ray research studies and a text detector must never blank: a 12-bit
#: chest-like film with one structure each (tests/test_pixels_policy.py, bench/pixels_real.py).

FILM_HIGH = 4095


def film(seed: int = 0, size: int = 1024) -> np.ndarray:
    """A 12-bit chest-like film: bright mediastinum, dark lungs, soft tissue, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    body = 1800 + 900 * np.exp(-(((x - 0.5) / 0.12) ** 2))  # mediastinum
    lungs = 700 * (np.exp(-(((x - 0.3) / 0.13) ** 2 + ((y - 0.45) / 0.28) ** 2)))
    lungs += 700 * (np.exp(-(((x - 0.7) / 0.13) ** 2 + ((y - 0.45) / 0.28) ** 2)))
    arr = body - lungs + 400 * y + rng.normal(0, 25, size=(size, size))
    return arr.clip(0, FILM_HIGH).astype(np.uint16)


def draw_mask(arr: np.ndarray, paint, value: float, blend: bool = False) -> np.ndarray:
    """Paint with PIL on a mask and set (or add) ``value`` under it."""
    mask = Image.new("L", (arr.shape[1], arr.shape[0]), 0)
    paint(ImageDraw.Draw(mask))
    ink = np.asarray(mask).astype(np.float64) / 255.0
    out = arr.astype(np.float64)
    out = out + ink * value if blend else out * (1 - ink) + ink * value
    return out.clip(0, FILM_HIGH).astype(np.uint16)


def _curve(x0: float, y0: float, x1: float, y1: float, wiggle: float, waves: float = 1.5):
    t = np.linspace(0, 1, 200)
    xs = x0 + (x1 - x0) * t + wiggle * np.sin(t * np.pi * waves)
    ys = y0 + (y1 - y0) * t
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def with_wire(arr):
    return draw_mask(arr, lambda d: d.line(_curve(520, 80, 480, 900, 60), fill=255, width=2), FILM_HIGH)


def with_ecg_lead(arr):
    def paint(d):
        d.ellipse((700, 150, 736, 186), outline=255, width=3)
        d.ellipse((712, 162, 724, 174), fill=255)
        d.line(_curve(718, 186, 900, 600, 40), fill=255, width=2)

    return draw_mask(arr, paint, FILM_HIGH)


def with_catheter(arr):
    def paint(d):
        d.line(_curve(300, 0, 540, 620, -80, 1.0), fill=255, width=7)

    tube = draw_mask(arr, paint, 900, blend=True)
    return draw_mask(tube, lambda d: d.line(_curve(300, 0, 540, 620, -80, 1.0), fill=255, width=3), -500, blend=True)


def with_rib_edges(arr):
    def paint(d):
        for k in range(6):
            d.arc((120, 150 + 90 * k, 520, 330 + 90 * k), 190, 330, fill=255, width=14)

    return draw_mask(arr, paint, 700, blend=True)


def with_collimation(arr):
    out = arr.copy()
    out[:, :70] = 200
    out[:, -55:] = 200
    out[:60] = 200
    return out


def with_pacemaker(arr):
    def paint(d):
        d.rounded_rectangle((760, 120, 850, 180), radius=18, fill=255)
        d.line(_curve(780, 180, 560, 640, 70), fill=255, width=3)

    return draw_mask(arr, paint, FILM_HIGH)


DECOYS = {
    "wire": with_wire,
    "ecg_lead": with_ecg_lead,
    "catheter": with_catheter,
    "rib_edges": with_rib_edges,
    "collimation": with_collimation,
    "pacemaker": with_pacemaker,
}


# --------------------------------------------------------------------------- film scans
#: A printed film of several CT slices, each panel framed by dense annotation blocks (the
#: NEMA WG04 ``SC1`` class): small text beside skulls, bone fragments and rulers, where a
#: line-grouping that joins glyphs to bigger components strings text and anatomy together.

_SCAN_LEFT = ("GE ADVANTAGE", "Ex:{exam}", "AX {ax}.5", "Im:{image}", "DFOV 23cm")
_SCAN_RIGHT = ("{name}", "{mrn}", "{date}", "07:{minute}", "512x512")
_SCAN_BOTTOM = ("kV 120", "mA 200", "Tilt 6", "07:{minute}:{second}")
_SCAN_NAMES = ("HOLLOWAY", "PRENDERGAST", "WHITLOCK", "FAIRBANKS")


def film_scan(seed: int = 0, size: int = 1024, glyph: int = 14) -> tuple[np.ndarray, list[PlantedText]]:
    """A 12-bit film scan of 2x2 CT panels with dense annotations; the planted lines.

    Each panel has a bright skull (a thick rim with bone fragments of two to four glyph
    heights inside and on its edge), a scale ruler, side markers (R, L) and three
    annotation blocks touching the skull's bounding box; the right block's first lines
    hold a name and a record number (``phi``), the other lines settings and times.
    """
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    arr = 60 + noise.normal(0, 8, size=(size, size))
    font_path = next((p for p in available_fonts() if "Mono-Bold" in p), available_fonts()[0])
    font = _font(font_path, glyph)
    planted: list[PlantedText] = []
    panel = size // 2
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for row in range(2):
        for column in range(2):
            px, py = column * panel, row * panel
            cx, cy = px + panel // 2, py + panel // 2 + glyph
            rx, ry = int(panel * 0.16), int(panel * 0.19)
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=150)
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), outline=255, width=max(4, glyph // 2))
            for _ in range(14):  # bone fragments: pieces of two to four glyph heights inside the rim
                angle = rng.uniform(0, 2 * np.pi)
                reach = rng.uniform(0.4, 0.8)
                bx, by = cx + reach * rx * np.cos(angle), cy + reach * ry * np.sin(angle)
                half = rng.uniform(1.0, 2.0) * glyph
                draw.ellipse((bx - half, by - half / 2, bx + half, by + half / 2), fill=255)
            ruler_y = cy + ry + glyph // 2
            draw.line((cx - 3 * glyph, ruler_y, cx + 3 * glyph, ruler_y), fill=255, width=2)
            for k in range(7):
                tick = cx - 3 * glyph + k * glyph
                draw.line((tick, ruler_y - glyph // 2, tick, ruler_y), fill=255, width=2)
            values = {
                "name": _SCAN_NAMES[(2 * row + column) % len(_SCAN_NAMES)],
                "mrn": str(rng.randint(100000, 999999)),
                "date": f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/19{rng.randint(40, 99)}",
                "exam": f"{rng.randint(10000, 99999)}",
                "ax": str(rng.randint(5, 90)),
                "image": str(2 * row + column + 1),
                "minute": f"{rng.randint(10, 59)}",
                "second": f"{rng.randint(10, 59)}",
            }
            step = int(glyph * 1.5)
            blocks = (
                (_SCAN_LEFT, px + glyph, py + 2 * glyph, False),
                (_SCAN_RIGHT, cx + rx - 6 * glyph, cy - ry - 5 * glyph, True),
                (_SCAN_BOTTOM, cx - rx - 5 * glyph, cy + ry - 2 * step, False),
            )
            for lines, x, y, right in blocks:
                for k, template in enumerate(lines):
                    text = template.format(**values)
                    left, top, width, height = map(int, font.getbbox(text))
                    x0 = x + (9 * glyph - (width - left) if right else 0)
                    draw.text((x0 - left, y + k * step - top), text, fill=255, font=font)
                    kind = PHI if right and k < 3 else STRUCTURE
                    top_y = y + k * step
                    planted.append(PlantedText(text, kind, (x0, top_y, x0 + width - left, top_y + height - top)))
            for letter, x in (("R", px + glyph), ("L", cx + rx + 4 * glyph)):
                draw.text((x, cy), letter, fill=255, font=_font(font_path, int(glyph * 1.4)))
                planted.append(PlantedText(letter, MARKER, (x, cy, x + glyph, cy + int(glyph * 1.4))))
    ink = np.asarray(mask, dtype=np.float64) / 255.0
    arr = arr * (1 - ink) + ink * 3600 + noise.normal(0, 30, size=(size, size)) * (ink > 0.5) * (ink < 1.0)
    return arr.clip(0, FILM_HIGH).astype(np.uint16), planted
