"""The de-identification method codes this tool writes (PS3.16 CID 7050, scheme DCM), and
the DeidentificationMethod text it writes beside each."""

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

#: Written in DeidentificationMethod, beside the tool's first method text.
TOOL_NAME = "cxr-dask 0.1"

#: The DeidentificationMethod text (LO, at most 64 characters) written for each code.
METHOD_TEXT = {
    BASIC_PROFILE: f"{TOOL_NAME}: PS3.15 E basic profile",
    CLEAN_DESCRIPTORS: "clean descriptors",
    MODIFIED_DATES: "modified dates",
    CLEAN_PIXEL_DATA: "clean pixel data",
}

#: Every text of the method record this tool writes: fixed words, never an input's value.
OWN_TEXTS = frozenset(METHOD_TEXT.values()) | frozenset(code.meaning for code in METHOD_TEXT)
