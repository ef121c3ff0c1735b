"""Burned-in text (PS3.15 Clean Pixel Data): one concern per module.

- ``checks``: is there pixel data, is it an image this step reads (one place, ``process`` too)
- ``decoding``: stored values (a view of native bytes, the fastest plugin, dcmtk), JPEG 2000 previews,
  colour as RGB and palettes
- ``colour``: a colour image's greyscale planes (luminance, then channels' departures from it)
- ``morphology``: square min/max filters (OpenCV when installed)
- ``detection``: the cheap stroke screen, glyph components, lines of text
- ``ocr``: Tesseract on the candidate lines, fail closed
- ``textdet``: the second stage, a text detector (PP-OCR det on onnxruntime)
- ``policy``: what is blanked (text, not strokes; markers kept), and the blanking
- ``reencode``: a cleaned image written back losslessly, marked with code 113101
- ``cleaning``: ``clean``, one image through all of the above
- ``types``: ``Box`` (x0, y0, x1, y1, end-exclusive), regions, words, reports

Nothing here logs or returns recognised text: reports hold counts, a rule's name and
seconds. The types are imported here; every other name is loaded from its module on
first use, so the client (audit tables, review page) never loads OpenCV or scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cxr_dask.deid.pixels.types import (
    BLANKING_CLASSES,
    REGION_CLASSES,
    Box,
    PixelReport,
    PixelResult,
    Region,
    RegionRecord,
    Word,
    box_from_xywh,
)

if TYPE_CHECKING:
    from cxr_dask.deid.pixels.checks import check_supported, require_pixel_data
    from cxr_dask.deid.pixels.cleaning import clean, confirm_text, dense_lines
    from cxr_dask.deid.pixels.decoding import (
        NATIVE_LITTLE_ENDIAN,
        decode,
        j2k_preview,
        native_view,
        photometric_black,
    )
    from cxr_dask.deid.pixels.detection import DETECTION_SIDE, PREVIEW_SENSITIVITY, detect, preview_has_candidates
    from cxr_dask.deid.pixels.ocr import read_regions, tesseract_tsv
    from cxr_dask.deid.pixels.policy import Decision, decide, is_evidence, is_small, redact_boxes, word_box
    from cxr_dask.deid.pixels.reencode import REENCODE_IN_PLACE, mark_cleaned, store

#: Public names and the module that defines each (loaded on first use).
_LAZY = {
    **dict.fromkeys(("check_supported", "require_pixel_data"), "checks"),
    **dict.fromkeys(("clean", "confirm_text", "dense_lines"), "cleaning"),
    **dict.fromkeys(("NATIVE_LITTLE_ENDIAN", "decode", "j2k_preview", "native_view", "photometric_black"), "decoding"),
    **dict.fromkeys(("DETECTION_SIDE", "PREVIEW_SENSITIVITY", "detect", "preview_has_candidates"), "detection"),
    **dict.fromkeys(("read_regions", "tesseract_tsv"), "ocr"),
    **dict.fromkeys(("Decision", "decide", "is_evidence", "is_small", "redact_boxes", "word_box"), "policy"),
    **dict.fromkeys(("REENCODE_IN_PLACE", "mark_cleaned", "store"), "reencode"),
}

__all__ = [
    "BLANKING_CLASSES",
    "DETECTION_SIDE",
    "NATIVE_LITTLE_ENDIAN",
    "PREVIEW_SENSITIVITY",
    "REENCODE_IN_PLACE",
    "REGION_CLASSES",
    "Box",
    "Decision",
    "PixelReport",
    "PixelResult",
    "Region",
    "RegionRecord",
    "Word",
    "box_from_xywh",
    "check_supported",
    "clean",
    "confirm_text",
    "decide",
    "decode",
    "dense_lines",
    "detect",
    "is_evidence",
    "is_small",
    "j2k_preview",
    "mark_cleaned",
    "native_view",
    "photometric_black",
    "preview_has_candidates",
    "read_regions",
    "redact_boxes",
    "require_pixel_data",
    "store",
    "tesseract_tsv",
    "word_box",
]


def __getattr__(name: str) -> Any:
    """A public name from its module, imported on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
