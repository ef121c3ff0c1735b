"""The de-identification method codes this tool writes (PS3.16 CID 7050, scheme DCM)."""

from __future__ import annotations

from typing import NamedTuple


class Code(NamedTuple):
    """One coded concept: what a Code Sequence item holds (PS3.3 8.8)."""

    value: str  # CodeValue
    scheme: str  # CodingSchemeDesignator
    meaning: str  # CodeMeaning


BASIC_PROFILE = Code("113100", "DCM", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_DATA = Code("113101", "DCM", "Clean Pixel Data Option")
CLEAN_DESCRIPTORS = Code("113105", "DCM", "Clean Descriptors Option")
MODIFIED_DATES = Code("113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option")
