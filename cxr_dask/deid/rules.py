"""What burned-in text may stay, and which rectangles are always blanked: the pixel options.

The allow-list names the annotations a chest radiograph carries that identify nobody
(side markers, projection, patient position, breathing phase); every other piece of
text found in the pixels is blacked out. Known-region rules follow CTP's pixel
anonymizer: a device that always burns its banner into the same rectangle gets that
rectangle blanked whatever OCR reads there (OCR can miss text; a rule cannot).

Everything here is hashable, so ``PixelOptions`` can sit inside the frozen
``ProfileOptions`` that travels with every pass-2 task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cxr_dask.errors import ConfigError
from cxr_dask.settings import doc

#: Annotations that stay in the pixels (compared upper-case, punctuation stripped).
DEFAULT_ALLOWED = frozenset(
    {
        "L",
        "R",
        "LT",
        "RT",
        "DX",  # Italian side markers (destra, sinistra), on the films of Italian hospitals
        "SX",
        "LEFT",
        "RIGHT",
        "AP",
        "PA",
        "LAT",
        "LATERAL",
        "PORTABLE",
        "UPRIGHT",
        "ERECT",
        "SUPINE",
        "SEMI-ERECT",
        "SEMI",
        "SITTING",
        "INSP",
        "EXP",
    }
)

#: Tokens made only of these characters are arrows or markers: no letter, no digit, so
#: nothing that could name or number a patient.
MARKER_CHARACTERS = frozenset("<>-=^*+|/\\~_.:•·→←↑↓▲▼◄►")

_MARKER_SYMBOLS = "".join(sorted(MARKER_CHARACTERS))

#: Longest symbol-only token still treated as a marker (an arrow reads as ``-->`` or ``<-``).
MAX_MARKER_LENGTH = 4

_STRIP = re.compile(r"^[^\w<>^*+→←↑↓•·▲▼◄►-]+|[^\w<>^*+→←↑↓•·▲▼◄►-]+$")


def normalize_token(token: str) -> str:
    """Upper-case, with surrounding punctuation that OCR adds (quotes, commas) removed."""
    return _STRIP.sub("", token.strip()).upper()


def _pattern_complaint(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error:
        return "not a valid regular expression"
    return None


@dataclass(frozen=True)
class RegionRule:
    """Blank ``regions`` (x, y, width, height in pixels) on images from one device.

    ``manufacturer`` and ``model`` are case-insensitive regular expressions searched in
    Manufacturer and ManufacturerModelName; ``rows``/``columns`` narrow the rule to one
    image size, as CTP's pixel-anonymizer scripts do. An empty pattern matches anything.
    """

    name: str = field(metadata=doc("the rule's name, in the audit's `rule` column"))
    regions: tuple[tuple[int, int, int, int], ...] = field(
        metadata=doc("rectangles to blank, each `[x, y, width, height]` in pixels")
    )
    manufacturer: str = field(
        default="", metadata=doc("regular expression searched in Manufacturer", check=_pattern_complaint)
    )
    model: str = field(
        default="", metadata=doc("regular expression searched in ManufacturerModelName", check=_pattern_complaint)
    )
    rows: int | None = field(default=None, metadata=doc("only images of this many rows", minimum=1))
    columns: int | None = field(default=None, metadata=doc("only images of this many columns", minimum=1))

    def __post_init__(self) -> None:
        if not self.regions:
            raise ConfigError("needs at least one region")
        if any(x < 0 or y < 0 or w < 1 or h < 1 for x, y, w, h in self.regions):
            raise ConfigError("regions: a negative offset or an empty region")

    def matches(self, manufacturer: str, model: str, rows: int, columns: int) -> bool:
        if self.manufacturer and not re.search(self.manufacturer, manufacturer, re.IGNORECASE):
            return False
        if self.model and not re.search(self.model, model, re.IGNORECASE):
            return False
        if self.rows is not None and self.rows != rows:
            return False
        return self.columns is None or self.columns == columns


@dataclass(frozen=True)
class PixelOptions:
    """How burned-in text is handled (``[pixels]`` in a run's config file).

    ``enabled=False`` carries every image's pixel bytes through untouched; ``strict``
    blanks every region the detector finds, markers included, without OCR.
    ``jpeg2000_preview`` screens large JPEG 2000 images at half resolution and skips the
    full decode when the screen finds no stroke: about 4x faster on images without text,
    but a faint one-pixel stroke loses contrast at half size, so it is off by default.
    """

    enabled: bool = field(default=True, metadata=doc("false: no text search (containers are still sanitised)"))
    strict: bool = field(default=False, metadata=doc("blank every detected text region, markers included, without OCR"))
    jpeg2000_preview: bool = field(
        default=False, metadata=doc("screen big JPEG 2000 images at half resolution first (faster, less sensitive)")
    )
    max_frames: int = field(
        default=16,
        metadata=doc(
            "frames a multi-frame image may have; more are quarantined (`unsupported_pixels`, NumberOfFrames)",
            minimum=1,
        ),
    )
    allowed: frozenset[str] = field(
        default=DEFAULT_ALLOWED,
        metadata=doc(
            "words that may stay in the pixels (replaces the default list)",
            shown=f"{len(DEFAULT_ALLOWED)} words: `L`, `R`, `AP`, `PA`, `PORTABLE`, `SUPINE`, ...",
        ),
    )
    rules: tuple[RegionRule, ...] = field(
        default_factory=tuple, metadata=doc("known regions blanked whatever OCR reads (CTP-style)")
    )

    def __post_init__(self) -> None:
        # Compared with normalised tokens, so stored normalised ("Portable" -> "PORTABLE").
        object.__setattr__(self, "allowed", frozenset(normalize_token(word) for word in self.allowed))

    def is_allowed(self, token: str) -> bool:
        """True for an allow-listed word or a short symbol-only marker such as an arrow."""
        word = normalize_token(token)
        if not word:
            return True  # OCR punctuation noise: nothing readable to protect
        if word in self.allowed or word.strip(_MARKER_SYMBOLS) in self.allowed:
            return True  # (a side marker read with its arrow or a dash beside it: "L-", "<R")
        if "-" in word.strip("-") and all(part in self.allowed for part in word.split("-") if part):
            return True  # a compound of allowed words (SEMI-UPRIGHT, AP-SUPINE)
        return len(word) <= MAX_MARKER_LENGTH and all(c in MARKER_CHARACTERS for c in word)

    def rule_for(self, manufacturer: str, model: str, rows: int, columns: int) -> RegionRule | None:
        """The first rule that matches the device and size, if any."""
        return next((r for r in self.rules if r.matches(manufacturer, model, rows, columns)), None)
