"""Dictionary and VR lookups, limits, and the element store the walk reads and writes
(``_key``, ``_delete``, ``_put``): pure, cached per tag."""

from __future__ import annotations

from functools import lru_cache
from typing import TypeGuard

from pydicom.datadict import (
    dictionary_has_tag,
    dictionary_keyword,
    dictionary_VR,
    repeater_has_tag,
)
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import PIXEL_KEYWORDS, Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import VR

from cxr_dask.deid.profile import (
    load_keep_list,
)
from cxr_dask.dicom import vrs
from cxr_dask.dicom.values import tag_name
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

#: Deeper nesting than this is not seen in real images: quarantine rather than recurse.
MAX_DEPTH = 32


#: A text or number value longer than this (an LO is at most 64 characters) is damage or an
#: attack; cleaning it would cost minutes and keep megabytes nobody can review.
MAX_VALUE_BYTES = 1 << 20
#: Top-level attributes replaced by the research ids after the walk.
_PATIENT_ID, _PATIENT_NAME, _ACCESSION, _STUDY_ID = 0x00100020, 0x00100010, 0x00080050, 0x00200010
_REPLACED = frozenset({_PATIENT_ID, _PATIENT_NAME, _ACCESSION, _STUDY_ID})
_SOP_INSTANCE_UID = 0x00080018
_PIXEL_REPRESENTATION = 0x00280103
_VALID_VRS = frozenset(VR.__members__)
#: What ``str.strip()`` drops from ASCII text (\x1c-\x1f too), and NUL padding.
_PADDING = "".join(c for c in map(chr, range(128)) if c.isspace()) + "\x00"


@lru_cache(maxsize=8192)
def _known(tag: int) -> bool:
    return dictionary_has_tag(tag) or repeater_has_tag(tag)


@lru_cache(maxsize=8192)
def _keyword(tag: int) -> str:
    return dictionary_keyword(tag) if dictionary_has_tag(tag) else ""


def _element_vr(tag: int, raw: DataElement | RawDataElement) -> str:
    """The element's VR: its own when explicit, else the dictionary's (first if ambiguous)."""
    vr = raw.VR
    if (vr is None or vr == "UN") and _known(tag):
        vr = dictionary_VR(tag)
    if not vr:
        return "UN"
    vr = vr.split(" or ")[0]
    if vr not in _VALID_VRS:  # damaged bytes: no rule can be chosen, nor the value written back
        raise QuarantineError(Reason.INVALID_VR, tag_name(tag))
    return vr


def _oversized(raw: DataElement | RawDataElement, vr: str) -> bool:
    """A text or number value (not pixels, blobs or sequences) beyond MAX_VALUE_BYTES."""
    if not isinstance(raw, RawDataElement) or vr in vrs.BINARY or vr == "SQ":
        return False
    return raw.length != 0xFFFFFFFF and raw.length > MAX_VALUE_BYTES


@lru_cache(maxsize=8192)
def _dictionary_vr(tag: int) -> str:
    return dictionary_VR(tag) if _known(tag) else ""


@lru_cache(maxsize=16384)
def _vr_contradicts_dictionary(tag: int, vr: str) -> bool:
    """An explicit VR the dictionary does not allow for this public tag (UN is allowed)."""
    if vr in ("UN", "SQ") or not _known(tag):
        return False
    return vr not in dictionary_VR(tag).split(" or ")


def _set_values(elem: DataElement, values: list[str]) -> None:
    elem.value = values[0] if len(values) == 1 else values


#: VRs whose conversion of a string only validates it (and warns), UI's making it a UID.
_ASSIGNED_VRS = frozenset({"DA", "DT", "UI"}) | vrs.TEXT


def _assign(elem: DataElement, values: list[str]) -> None:
    """``_set_values`` without pydicom's validation of each value, which warns at most
    (when pydicom is set up as ``_pydicom_defaults`` says): the same value stored."""
    if elem.VR in _ASSIGNED_VRS and all(value.__class__ is str and "\\" not in value for value in values):
        convert = UID if elem.VR == "UI" else str
        elem._value = convert(values[0]) if len(values) == 1 else MultiValue(convert, values)
    else:
        _set_values(elem, values)


#: String VRs whose conversion of '' only validates it.
_PLAIN_EMPTY_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UR"}) | vrs.TEXT


def _empty_element(tag: int, vr: str, fast: bool) -> DataElement:
    """``DataElement(tag, vr, _empty_value(vr))``; with pydicom's defaults (``fast``), the
    string VRs' '' (UI's UID('')) stored as pydicom's conversion would store it."""
    if fast and vr in _PLAIN_EMPTY_VRS:
        return DataElement(tag, vr, "", already_converted=True)
    if fast and vr == "UI":
        return DataElement(tag, vr, UID(""), already_converted=True)
    return DataElement(tag, vr, _empty_value(vr))


#: One BaseTag object per tag number (``_key``), bounded.
_KEYS: dict[int, BaseTag] = {}
_MAX_KEYS = 65536


def _key(tag: int) -> BaseTag:
    """The BaseTag of ``tag``, the same object each time: the elements ``fast_read`` reads
    are stored under these, so looking one up finds it by identity, without calling
    BaseTag's ``__eq__`` (Python code) as a plain int or another BaseTag would."""
    key = _KEYS.get(tag)
    if key is None:
        if len(_KEYS) >= _MAX_KEYS:  # damaged input can make up any number of tags
            _KEYS.clear()
        key = _KEYS[tag] = BaseTag(tag)
    return key


def _stored(ds: Dataset, tag: int) -> DataElement | RawDataElement | None:
    """``ds.get_item(tag)``: the element as stored (a deferred value read by pydicom)."""
    element = ds._dict.get(_key(tag))
    if element.__class__ is RawDataElement and element.value is None and element.length:
        return ds.get_item(tag)
    return element


def _delete(ds: Dataset, tag: int) -> None:
    """``del ds[tag]``, its steps without converting ``tag`` to a pydicom tag first."""
    del ds._dict[_key(tag)]
    if ds._private_blocks and (tag >> 16) & 1 and 0x0010 <= (tag & 0xFFFF) < 0x0100:
        ds._private_blocks = {}  # a private creator: its blocks are found afresh
    if tag in PIXEL_KEYWORDS:
        ds._pixel_array = None
        ds._pixel_id = {}


def _put(ds: Dataset, elem: DataElement) -> None:
    """``ds[elem.tag] = elem``: for a public element other than a sequence or pixel data,
    all pydicom's ``__setitem__`` does is store it."""
    tag = elem.tag
    if elem.VR == "SQ" or (tag >> 16) & 1 or tag in PIXEL_KEYWORDS:
        ds[tag] = elem
    else:
        ds._dict[tag] = elem


def _empty_value(vr: str) -> object:
    if vr == "SQ":
        return Sequence()
    if vr in vrs.STRING:
        return ""
    if vr in vrs.BINARY:
        return b""
    return None


_CODE_VALUES = (0x00080100, 0x00080119, 0x00080120)  # CodeValue, LongCodeValue, URNCodeValue


@lru_cache(maxsize=1)
def _verbatim_tags() -> frozenset[int]:
    """The keep-list's coded values (kept verbatim, not cleaned): CodeValue and its kin,
    CodingSchemeDesignator, CodingSchemeVersion, ContextIdentifier, MappingResource."""
    return frozenset(tag for tag, kept in load_keep_list().items() if kept.verbatim)


_CODING_SCHEME = 0x00080102
_CODE_TAGS = frozenset({*_CODE_VALUES, _CODING_SCHEME})


def _present(item: Dataset, tag: int) -> bool:
    """The element is there and holds more than padding (checked without decoding it)."""
    element = item._dict.get(_key(tag))
    if element is None:
        return False
    value = element.value
    if isinstance(value, bytes):
        return bool(value.strip(b" \x00"))
    return bool(str(value or "").strip(_PADDING))


def _has_code(item: Dataset) -> bool:
    """A Code Sequence macro item with its coded value and scheme (PS3.3 8.8)."""
    if _present(item, 0x00080120):
        return True
    return _present(item, _CODING_SCHEME) and any(_present(item, tag) for tag in _CODE_VALUES[:2])


def _plain_ascii(value: object) -> TypeGuard[bytes]:
    """Bytes that decode to the same characters in every DICOM character set: ASCII
    without ESC (which switches ISO 2022 code sets)."""
    return isinstance(value, bytes) and value.isascii() and b"\x1b" not in value


@lru_cache(maxsize=16384)
def _stored_vr(tag: int, vr: str | None) -> str:
    """``_element_vr`` for an element read by ``_raw_elements`` (VR None: implicit)."""
    return _element_vr(tag, RawDataElement(BaseTag(tag), vr, 0, b"", 0, vr is None, True))


_UNDEFINED = 0xFFFFFFFF
