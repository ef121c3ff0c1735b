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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cxr_dask.errors import ConfigError

#: Annotations that stay in the pixels (compared upper-case, punctuation stripped).
DEFAULT_ALLOWED = frozenset(
    {
        "L",
        "R",
        "LT",
        "RT",
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

#: Longest symbol-only token still treated as a marker (an arrow reads as ``-->`` or ``<-``).
MAX_MARKER_LENGTH = 4

_STRIP = re.compile(r"^[^\w<>^*+→←↑↓•·▲▼◄►-]+|[^\w<>^*+→←↑↓•·▲▼◄►-]+$")


def normalize_token(token: str) -> str:
    """Upper-case, with surrounding punctuation that OCR adds (quotes, commas) removed."""
    return _STRIP.sub("", token.strip()).upper()


@dataclass(frozen=True)
class RegionRule:
    """Blank ``regions`` (x, y, width, height in pixels) on images from one device.

    ``manufacturer`` and ``model`` are case-insensitive regular expressions searched in
    Manufacturer and ManufacturerModelName; ``rows``/``columns`` narrow the rule to one
    image size, as CTP's pixel-anonymizer scripts do. An empty pattern matches anything.
    """

    name: str
    regions: tuple[tuple[int, int, int, int], ...]
    manufacturer: str = ""
    model: str = ""
    rows: int | None = None
    columns: int | None = None

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

    enabled: bool = True
    strict: bool = False
    jpeg2000_preview: bool = False
    allowed: frozenset[str] = DEFAULT_ALLOWED
    rules: tuple[RegionRule, ...] = field(default_factory=tuple)

    def is_allowed(self, token: str) -> bool:
        """True for an allow-listed word or a short symbol-only marker such as an arrow."""
        word = normalize_token(token)
        if not word:
            return True  # OCR punctuation noise: nothing readable to protect
        if word in self.allowed:
            return True
        return len(word) <= MAX_MARKER_LENGTH and all(c in MARKER_CHARACTERS for c in word)

    def rule_for(self, manufacturer: str, model: str, rows: int, columns: int) -> RegionRule | None:
        """The first rule that matches the device and size, if any."""
        return next((r for r in self.rules if r.matches(manufacturer, model, rows, columns)), None)


_OPTION_KEYS = {"enabled", "strict", "jpeg2000_preview", "allowed", "rules"}
_RULE_KEYS = {"name", "regions", "manufacturer", "model", "rows", "columns"}


def _rule_from(entry: Mapping[str, Any], index: int) -> RegionRule:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"pixels.rules[{index}] must be a table")
    unknown = sorted(set(entry) - _RULE_KEYS)
    if unknown:
        raise ConfigError(f"unknown keys in pixels.rules[{index}]: {', '.join(unknown)}")
    regions = []
    for region in entry.get("regions") or []:
        if not (isinstance(region, list | tuple) and len(region) == 4 and all(isinstance(v, int) for v in region)):
            raise ConfigError(f"pixels.rules[{index}].regions: each region is [x, y, width, height] in pixels")
        x, y, w, h = region
        if x < 0 or y < 0 or w < 1 or h < 1:
            raise ConfigError(f"pixels.rules[{index}].regions: negative offset or empty region")
        regions.append((x, y, w, h))
    if not regions:
        raise ConfigError(f"pixels.rules[{index}] needs at least one region")
    for key in ("manufacturer", "model"):
        try:
            re.compile(str(entry.get(key, "")))
        except re.error:
            raise ConfigError(f"pixels.rules[{index}].{key} is not a valid regular expression") from None
    return RegionRule(
        name=str(entry.get("name") or f"rule{index}"),
        regions=tuple(regions),
        manufacturer=str(entry.get("manufacturer", "")),
        model=str(entry.get("model", "")),
        rows=entry.get("rows"),
        columns=entry.get("columns"),
    )


def pixel_options_from(settings: Mapping[str, Any]) -> PixelOptions:
    """``PixelOptions`` from a config file's ``[pixels]`` table; unknown keys are an error."""
    if not isinstance(settings, Mapping):
        raise ConfigError("pixels must be a table")
    unknown = sorted(set(settings) - _OPTION_KEYS)
    if unknown:
        raise ConfigError(f"unknown keys in pixels: {', '.join(unknown)}")
    allowed: Iterable[str] = settings.get("allowed", DEFAULT_ALLOWED)
    if isinstance(allowed, str) or not all(isinstance(word, str) for word in allowed):
        raise ConfigError("pixels.allowed must be a list of words")
    return PixelOptions(
        enabled=bool(settings.get("enabled", True)),
        strict=bool(settings.get("strict", False)),
        jpeg2000_preview=bool(settings.get("jpeg2000_preview", False)),
        allowed=frozenset(normalize_token(word) for word in allowed),
        rules=tuple(_rule_from(entry, i) for i, entry in enumerate(settings.get("rules") or [])),
    )
