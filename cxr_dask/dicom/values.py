"""Reading an element's value as text, and naming a tag safely: the header walk and
verify read values the same way, so what one removes is what the other looks for."""

from __future__ import annotations

from pydicom.datadict import dictionary_has_tag, dictionary_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue


def value_strings(value: object) -> list[str]:
    """An element's values as strings ([] when empty); bytes (an undecoded or UN value)
    read as latin-1 without their padding, never as ``b'...'``."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v) for v in value]
    if isinstance(value, bytes):
        return [value.decode("latin-1").rstrip("\0 ")]
    return [str(value)]


def keyword_text(ds: Dataset, keyword: str) -> str:
    """``ds``'s value for ``keyword`` as stripped text; '' when absent or undecodable."""
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    return str(value).strip() if value is not None else ""


def tag_name(tag: int) -> str:
    """A keyword or ``(gggg,eeee)``: safe to put in a quarantine detail or a finding."""
    if dictionary_has_tag(tag):
        return dictionary_keyword(tag)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
