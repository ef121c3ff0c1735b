"""Per-file DICOM header de-identification (PS3.15 Annex E basic profile + options).

One walk over the dataset, recursing into every sequence item: each element gets the
action the resolved table (``profile``) or the fallback rules below give it. Elements
whose value does not matter to the decision are never decoded (they stay raw and are
written back byte for byte), and PixelData is never touched. Values and sequences that
are decoded are, in the common cases, decoded here from their bytes into the very
elements pydicom's conversion makes (``_fast_element``, ``_fast_sequence``; small files
are read the same way, ``fast_read``), pydicom's generic machinery being most of a small
file's cost; anything else is left to pydicom (tests/test_header_fast.py). A removed
sequence's phrases are noted from its bytes (``collect_light``) and a kept empty one stays
as read (``empty_sequence``): neither becomes Datasets.

Nothing here puts a header value into an exception message or a log: a
``QuarantineError`` carries a reason class and at most a keyword or tag.

Damage fails closed (each case found by fuzzing, see tests/test_fuzz_header.py): a VR
that is no VR at all quarantines (``invalid_vr``); an element whose VR contradicts the
data dictionary (a name written into StudyTime) is not judged by the attribute's rule
but removed, or emptied when the IOD requires it; a text or number value over
MAX_VALUE_BYTES quarantines (``oversized_element``).

Clean Descriptors rule (option 113105), two layers. First the archive's vocabulary
(``deid.freetext``): every token of a kept descriptor or free-text string that is not
known safe becomes ``___``. Then, as an extra layer: while walking, the values of the identifying
attributes being removed or replaced (name components, IDs, accession, institution,
addresses, original dates in several renderings) are collected as phrases. After the
walk, every kept descriptor (the option's set) and every kept free-text string that
the table does not list has each case-insensitive whole-token occurrence of a phrase
deleted, and runs of spaces collapsed. Deleting (rather than inserting a marker) can
only shorten a value, so the VR length limit always holds.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import struct
from collections.abc import Callable, Iterable, MutableSequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import IO, Any

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import (
    dictionary_has_tag,
    dictionary_keyword,
    dictionary_VR,
    repeater_has_tag,
    tag_for_keyword,
)
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import PIXEL_KEYWORDS, Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import ENCODED_VR
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import _LUT_DESCRIPTOR_TAGS, BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, UID_dictionary
from pydicom.valuerep import VR
from pydicom.values import convert_string

from cxr_dask import encode
from cxr_dask.deid import freetext
from cxr_dask.deid.freetext import Vocabulary
from cxr_dask.deid.profile import (
    Action,
    Profile,
    ProfileOptions,
    get_profile,
    load_defined_terms,
    load_keep_list,
    load_type2_requirements,
    required_type,
)
from cxr_dask.dicom import vrs
from cxr_dask.dicom.codes import BASIC_PROFILE, CLEAN_DESCRIPTORS, MODIFIED_DATES, Code
from cxr_dask.dicom.dates import date_digits, date_renderings, within_shifted_years
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

TOOL_NAME = "cxr-dask 0.1"
IMPLEMENTATION_CLASS_UID = encode.IMPLEMENTATION_CLASS_UID
IMPLEMENTATION_VERSION_NAME = encode.IMPLEMENTATION_VERSION_NAME

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

#: Non-PN attributes whose removed values are phrases to clean out of descriptors.
_PHRASE_KEYWORDS = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "AccessionNumber",
        "StudyID",
        "AdmissionID",
        "ServiceEpisodeID",
        "MedicalRecordLocator",
        "RequestedProcedureID",
        "ScheduledProcedureStepID",
        "PerformedProcedureStepID",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "RegionOfResidence",
        "StationName",
    }
)
#: Words never treated as identifying on their own (descriptor vocabulary, honorifics).
_STOP_WORDS = frozenset(
    {
        "and",
        "the",
        "for",
        "with",
        "without",
        "of",
        "in",
        "on",
        "at",
        "to",
        "from",
        "by",
        "per",
        "not",
        "none",
        "unknown",
        "chest",
        "thorax",
        "lung",
        "lungs",
        "rib",
        "ribs",
        "abdomen",
        "pelvis",
        "spine",
        "hand",
        "foot",
        "knee",
        "hip",
        "pa",
        "ap",
        "lat",
        "lateral",
        "frontal",
        "portable",
        "port",
        "view",
        "views",
        "upright",
        "supine",
        "erect",
        "decubitus",
        "left",
        "right",
        "bilateral",
        "single",
        "two",
        "three",
        "dx",
        "cr",
        "xray",
        "x-ray",
        "radiograph",
        "radiography",
        "exam",
        "study",
        "series",
        "image",
        "images",
        "routine",
        "stat",
        "anonymized",
        "anonymous",
        "patient",
        "mr",
        "mrs",
        "ms",
        "miss",
        "dr",
        "prof",
        "jr",
        "sr",
        "md",
        "phd",
        "rn",
        "ii",
        "iii",
    }
)
#: Public name for other modules (verify searches for exactly what the cleaner removes).
STOP_WORDS = _STOP_WORDS
_MIN_PHRASE = 3
_VALID_VRS = frozenset(VR.__members__)
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY_BY_VR: dict[str, object] = {
    "AE": _DUMMY_TEXT,
    "AS": "000D",
    "CS": _DUMMY_TEXT,
    "DS": "0",
    "IS": "0",
    "LO": _DUMMY_TEXT,
    "LT": _DUMMY_TEXT,
    "PN": _DUMMY_TEXT,
    "SH": _DUMMY_TEXT,
    "ST": _DUMMY_TEXT,
    "TM": "000000",
    "UC": _DUMMY_TEXT,
    "UT": _DUMMY_TEXT,
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
}
_DT = re.compile(
    r"^(?P<y>\d{4})(?:(?P<m>\d{2})(?:(?P<d>\d{2})"
    r"(?P<time>\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?(?P<tz>[+-]\d{4})?$"
)
_PN_SPLIT = re.compile(r"[\^=\s]+")
_TWO_DIGITS = re.compile(r"\d\d")
#: How the raw bytes of a removed value split into runs that each phrase contains one of.
#: NUL counts as a separator everywhere: devices pad (and sometimes lead) values with it.
_VALUE_RUNS = re.compile(r"[\\\x00]")
_NAME_RUNS = re.compile(r"[\\^=\s\x00]+")
#: What ``str.strip()`` drops from ASCII text (\x1c-\x1f too), and NUL padding.
_PADDING = "".join(c for c in map(chr, range(128)) if c.isspace()) + "\x00"


@dataclass(frozen=True)
class FileIdentity:
    """The research ids of one file, minted by the client from the inventory."""

    subject_id: int  # 10_000_000..19_999_999
    study_id: int  # 50_000_000..59_999_999
    dicom_id: str  # '02aa804e-bde0afdd-112c0b34-7bc16630-4e384014'
    shift_days: int  # multiple of 7, added to every DA/DT


@dataclass
class HeaderReport:
    """How many elements each action touched (one audit column each, no values)."""

    removed: int = 0
    emptied: int = 0
    dummied: int = 0
    dates_shifted: int = 0
    uids_remapped: int = 0
    private_removed: int = 0
    descriptors_cleaned: int = 0
    dates_out_of_range: int = 0
    #: kept CS, IS, DS, TM or UI values that broke their VR's syntax or defined terms
    invalid_values: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# --------------------------------------------------------------------------- decisions


def _tag_name(tag: int) -> str:
    """A keyword or ``(gggg,eeee)``: safe to put in a quarantine detail."""
    if dictionary_has_tag(tag):
        return dictionary_keyword(tag)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


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
        raise QuarantineError(Reason.INVALID_VR, _tag_name(tag))
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


_MAX_DECISIONS = 65536


@lru_cache(maxsize=16)
def _decisions(profile: Profile) -> dict[tuple[int, str | None], tuple[str, Action]]:
    """The walk's (VR, action) per (tag, stored VR), filled as tags are met; one per profile."""
    return {}


@lru_cache(maxsize=16384)
def _decide(profile: Profile, tag: int, vr: str) -> Action:
    """The action for a public (even group) element; cached per (profile, tag, VR)."""
    group = tag >> 16
    if (tag & 0xFFFF) == 0 or group in (0x0000, 0x0002) or group >= 0xFFFA:
        return Action.REMOVE  # group lengths, command/meta elements inside a dataset
    if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
        return Action.REMOVE  # curves and overlays, every element of the group
    action = profile.action_for(tag)
    if action in (Action.KEEP, Action.CLEAN) and _vr_contradicts_dictionary(tag, vr):
        # a value whose VR contradicts the attribute cannot be judged by the attribute's
        # rule (a name written into StudyTime): it goes, emptied when the IOD needs it
        return Action.EMPTY if required_type(_keyword(tag)) else Action.REMOVE
    if action is not None:
        return action
    kept = load_keep_list().get(tag)
    if kept is None:  # outside the table and not kept on purpose: retired, unknown, free text
        return Action.EMPTY if required_type(_keyword(tag)) else Action.REMOVE
    options = profile.options
    if vr == "PN" or _vr_contradicts_dictionary(tag, vr):
        return Action.EMPTY if required_type(_keyword(tag)) else Action.REMOVE
    if vr in ("DA", "DT"):
        if options.retain_modified_dates:
            return Action.SHIFT_DATE
        return Action.EMPTY if required_type(_keyword(tag)) else Action.REMOVE
    if vr == "UI":
        return Action.UID
    if vr in vrs.TEXT and options.clean_descriptors and not kept.verbatim:
        return Action.CLEAN
    return Action.KEEP


#: VRs whose values have a syntax (PS3.5 6.2) that a kept value must match.
_SYNTAX_VRS = frozenset({"CS", "IS", "DS", "TM", "DA", "DT", "UI"})
_VALUE_SYNTAX = {
    "CS": re.compile(r"[A-Z0-9 _]{0,16}"),
    "IS": re.compile(r"[+-]?\d{1,11}"),
    "DS": re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"),
    "TM": re.compile(r"(?:[01]\d|2[0-3])(?:[0-5]\d(?:(?:[0-5]\d|60)(?:\.\d{1,6})?)?)?"),
    "UI": re.compile(r"(?=.{1,64}$)\d+(?:\.\d+)*"),
}
#: An IS value with more digits than this is no count or index a device writes (an
#: MRN or a date typed into SeriesNumber is): it is not kept.
MAX_INTEGER_DIGITS = 6
#: Multi-valued coded attributes whose values are positional: the values before the
#: first one that is not a defined term are kept (ImageType's "ORIGINAL\\PRIMARY").
_PREFIX_KEPT = frozenset({0x00080008, 0x00089007})  # ImageType, FrameType
#: Attributes read by the pixel step: a VR that contradicts the dictionary there cannot be
#: re-read by the dictionary's VR (numbers stored as text) and quarantines the file.
_PIXEL_MODULE = frozenset(
    {0x00280002, 0x00280006, 0x00280010, 0x00280011, 0x00280100, 0x00280101, 0x00280102, 0x00280103}
)


@lru_cache(maxsize=16384)
def _read_as(tag: int, stored_vr: str) -> str:
    """The VR an element is read and judged by.

    Its own VR, unless that contradicts the dictionary and the dictionary's VR has a
    syntax that can judge the same bytes (SOPInstanceUID written as LO, a number written
    as text): then the dictionary's VR, whose syntax check keeps or drops it. A value
    stored as a name or a date (``vrs.IDENTIFYING``) is never judged by another VR's
    syntax (a date is a valid DS number): it keeps its VR, so the contradiction removes it.
    Raises ``vr_mismatch`` for a pixel-module attribute that cannot be read that way.
    """
    if not _vr_contradicts_dictionary(tag, stored_vr):
        return stored_vr
    if stored_vr in vrs.IDENTIFYING and tag not in _PIXEL_MODULE:
        return stored_vr  # a name or a date under another attribute's VR: it goes (``_decide``)
    wanted = _dictionary_vr(tag).split(" or ")[0]
    if wanted in _SYNTAX_VRS and stored_vr not in ("SQ",):
        return wanted
    if tag in _PIXEL_MODULE:
        raise QuarantineError(Reason.VR_MISMATCH, _tag_name(tag))
    return stored_vr


def _valid_value(tag: int, vr: str, value: str) -> bool:
    """One value (padding stripped) matches its VR's syntax and the attribute's terms."""
    if not value:
        return True
    syntax = _VALUE_SYNTAX.get(vr)
    if syntax is not None and not syntax.fullmatch(value):
        return False
    if vr == "IS" and len(value.lstrip("+-").lstrip("0")) > MAX_INTEGER_DIGITS:
        return False
    if vr == "DS" and len(value) > 16:
        return False
    if vr == "CS":
        terms = load_defined_terms().get(tag)
        return terms is None or terms.allows(value)
    return True


@lru_cache(maxsize=65536)
def _kept_values(tag: int, vr: str, values: tuple[str, ...]) -> tuple[str, ...] | None:
    """None when every value is valid, else the values to keep (possibly none)."""
    stripped = [value.strip(_PADDING) for value in values]
    valid = [_valid_value(tag, vr, value) for value in stripped]
    if all(valid):
        return None
    if tag in _PREFIX_KEPT:
        return tuple(stripped[: valid.index(False)])
    return ()


@lru_cache(maxsize=65536)
def _kept_raw(tag: int, vr: str, value: bytes) -> tuple[str, ...] | None:
    """``_kept_values`` of an undecoded value: these VRs hold ASCII only (PS3.5 6.2)."""
    if not value.isascii():
        return ()
    return _kept_values(tag, vr, tuple(value.decode("ascii").split("\\")))


# ------------------------------------------------------------------------------- dates


@lru_cache(maxsize=16384)  # a file holds the same date many times, a study's files too
def shift_da(text: str, days: int) -> str:
    """Shift one DA value ('YYYYMMDD', legacy 'YYYY.MM.DD', or a range 'A-B').

    Raises ValueError when the value is not a date.
    """
    text = text.strip()
    if "-" in text:
        parts = text.split("-")
        if len(parts) != 2:
            raise ValueError("bad range")
        return "-".join(shift_da(part, days) if part.strip() else "" for part in parts)
    if len(text) == 10 and text[4] == "." and text[7] == ".":
        text = text[:4] + text[5:7] + text[8:]
    if len(text) != 8 or not text.isdigit():
        raise ValueError("not a DA")
    day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    return (day + dt.timedelta(days=days)).strftime("%Y%m%d")


@lru_cache(maxsize=16384)
def shift_dt(text: str, days: int) -> str:
    """Shift the date part of one DT value of any precision; time and offset are kept.

    A value with year or month precision is shifted from the first day of its period and
    written back at the same precision. Raises ValueError when the value is not a DT.
    """
    match = _DT.match(text.strip())
    if match is None:
        raise ValueError("not a DT")
    year, month, day = match.group("y"), match.group("m"), match.group("d")
    start = dt.date(int(year), int(month or 1), int(day or 1))
    shifted = start + dt.timedelta(days=days)
    date_part = f"{shifted.year:04d}"
    if month:
        date_part += f"{shifted.month:02d}"
    if day:
        date_part += f"{shifted.day:02d}"
    return date_part + (match.group("time") or "") + (match.group("tz") or "")


@lru_cache(maxsize=4096)
def _date_phrases(yyyymmdd: str) -> tuple[str, ...]:
    """A date's renderings as phrases (lower-cased), made once per date."""
    return tuple(rendering.lower() for rendering in date_renderings(yyyymmdd))


# ------------------------------------------------------------------------------ values


def _values(value: object) -> list[str]:
    """The element's values as strings ([] when empty)."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v) for v in value]
    return [str(value)]


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


# ------------------------------------------------------------- decoding without pydicom

#: VRs whose values pydicom decodes with its default encoding whatever the character
#: set, as ``multi_string`` does (``convert_string``, ``convert_UI``): trailing spaces and
#: NULs dropped, split at backslashes. Date and time conversion stays off (pydicom's
#: default), so DA, DT and TM values are plain strings too.
_FAST_VRS = vrs.DEFAULT_CHARSET_STRINGS - {"AE"}  # pydicom strips an AE at both ends
#: The VRs pydicom's reader knows, by their bytes, and those with a 32-bit length.
_ENCODED_VRS = {vr: vr.decode() for vr in ENCODED_VR if len(vr) == 2}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


def _pydicom_defaults() -> bool:
    """pydicom decodes as the fast paths assume: no callback or hook of its own replaced,
    no date/time objects, empty text as ''. Anything else takes pydicom's conversion."""
    from pydicom import config, hooks

    return (
        config.data_element_callback is None
        and not config.datetime_conversion
        and not config.use_none_as_empty_text_VR_value
        and config.replace_un_with_known_vr
        and hooks.hooks.raw_element_vr is hooks.raw_element_vr
        and hooks.hooks.raw_element_value is hooks.raw_element_value
        and not hooks.hooks.raw_element_kwargs
        and config.settings.reading_validation_mode != config.RAISE
    )


def _fast_element(tag: int, raw: RawDataElement, ds: Dataset) -> DataElement | None:
    """The element ``convert_raw_data_element`` makes of a plain ASCII value (no ESC) of
    a ``_FAST_VRS`` or ``vrs.TEXT`` VR, or of a little-endian US value, or None for
    anything else (pydicom converts it).

    Text VRs are decoded with the character set's first encoding when no ESC is present,
    as pydicom's ``decode_bytes`` does; ``_ascii_safe`` checks that it reads ASCII as
    itself. Multi-valued text is split at backslashes (LO, SH, UC) or not (ST, LT, UT),
    and each value loses trailing spaces and NULs, as ``convert_text`` and
    ``convert_single_string`` do.
    """
    value = raw.value
    if value.__class__ is not bytes or not value or raw.length != len(value):
        return None
    vr = raw.VR
    if vr is None:  # implicit: the dictionary's VR, as pydicom's lookup
        vr = _dictionary_vr(tag)
    if vr != "US" and not value.isascii():
        return None
    if vr in _FAST_VRS:
        items = value.decode("ascii").rstrip(" \x00").split("\\")
        if vr == "UI":
            converted: object = UID(items[0]) if len(items) == 1 else MultiValue(UID, items)
        else:
            converted = items[0] if len(items) == 1 else MultiValue(str, items)
    elif vr == "US":
        if len(value) % 2 or not raw.is_little_endian or tag in _LUT_DESCRIPTOR_TAGS:
            return None  # pydicom's own handling (a wrong length, a LUT descriptor's sign)
        numbers = struct.unpack(f"<{len(value) // 2}H", value)
        converted = numbers[0] if len(numbers) == 1 else list(numbers)
    elif vr in vrs.TEXT:
        if b"\x1b" in value:
            return None
        encodings = ds.original_character_set or ds._character_set
        first = encodings if isinstance(encodings, str) else (encodings or [pydicom.charset.default_encoding])[0]
        if not _ascii_safe(first):
            return None
        text = value.decode("ascii")
        if vr in ("ST", "LT", "UT"):
            converted = text.rstrip("\x00 ")
        else:
            items = [item.rstrip("\x00 ") for item in text.split("\\")]
            converted = items[0] if len(items) == 1 else MultiValue(str, items)
    else:
        return None
    return DataElement(raw.tag, vr, converted, raw.value_tell, False, already_converted=True)


def get_value(ds: Dataset, keyword: str, default: object = None) -> Any:
    """``ds.get(keyword, default)`` for a data set's own element: the same value, and the
    same decoded element left in ``ds``, decoded by ``_fast_element`` where it can be."""
    tag = _keyword_tag(keyword)
    raw = ds._dict.get(_key(tag)) if tag is not None else None
    if raw.__class__ is RawDataElement and raw.VR != "SQ" and not (tag >> 16) & 1 and _pydicom_defaults():
        elem = _fast_element(tag, raw, ds)
        if elem is not None:
            ds._dict[raw.tag] = elem  # all ``ds[tag]`` does for a public non-SQ element
            return elem.value
    return ds.get(keyword, default)


@lru_cache(maxsize=1024)
def _keyword_tag(keyword: str) -> int | None:
    return tag_for_keyword(keyword)


@lru_cache(maxsize=64)
def _ascii_safe(encoding: str) -> bool:
    """Python's codec ``encoding`` reads every ASCII byte but ESC as that character."""
    ascii_bytes = bytes(c for c in range(128) if c != 0x1B)
    try:
        return ascii_bytes.decode(encoding) == ascii_bytes.decode("ascii")
    except (LookupError, UnicodeError):
        return False


def _item_encodings(ds: Dataset) -> list[str]:
    """The encodings the items of ``ds``'s sequences are read with (``_fast_sequence``)."""
    encodings = ds.original_character_set or ds._character_set or [pydicom.charset.default_encoding]
    return [encodings] if isinstance(encodings, str) else encodings


class _ItemCharset:
    """An item's character set, all ``collect_pending`` reads of the item (``collect_light``)."""

    __slots__ = ("_character_set", "original_character_set")

    def __init__(self, encodings: list[str]) -> None:
        self.original_character_set = self._character_set = encodings


def _light_notes(items: list[dict], encodings: list[str], depth: int, notes: list) -> bool:
    """What ``collect_dataset`` notes of ``items`` read by ``_fast_items(light=True)``:
    (tag, VR, kind, element) of each plain ASCII value to collect, in its order. False
    where it would do more: decode a value now (not plain ASCII), read a nested sequence
    other than by ``_fast_sequence``, meet PixelRepresentation (pydicom decodes it when
    a sequence is stored beside it) or nesting past MAX_DEPTH (it quarantines)."""
    for elements in items:
        if depth > MAX_DEPTH:
            return False
        for key, raw in elements.items():
            tag = int(key)
            if (tag >> 16) & 1:
                continue
            if raw.__class__ is list:  # a sequence of undefined length, read with its item
                if not _light_notes(raw, encodings, depth + 1, notes):
                    return False
                continue
            if tag == _PIXEL_REPRESENTATION:
                return False
            vr = _element_vr(tag, raw)
            if vr == "SQ":
                if not _light_nested(raw, encodings, depth, notes):
                    return False
                continue
            kind = _collect_kind(tag, vr)
            if kind is None:
                continue
            if not _plain_ascii(raw.value):
                return False
            notes.append((tag, vr, kind, raw))
    return True


def _light_nested(raw: RawDataElement, encodings: list[str], depth: int, notes: list) -> bool:
    """``_light_notes`` of a sequence of defined length inside an item (as ``element``
    reads it: ``_fast_sequence``, an empty value holding no items)."""
    value = raw.value
    if not value:
        return True
    if value.__class__ is not bytes or raw.length != len(value):
        return False
    try:
        items, _ = _fast_items(value, 0, len(value), encodings, raw.value_tell, light=True)
    except (ValueError, struct.error):
        return False
    return _light_notes(items, encodings, depth + 1, notes)


def _note_pixel_representation(ds: Dataset) -> None:
    """What storing a sequence in ``ds`` does to ``ds`` itself (``_set_pixel_representation``):
    its pixel representation noted, for pydicom's later reading of ambiguous VRs."""
    if _key(_PIXEL_REPRESENTATION) in ds._dict:
        value = ds[_PIXEL_REPRESENTATION].value
        if value is not None:
            ds._pixel_rep = int(b"\x01" in value) if isinstance(value, bytes) else value


def _fast_sequence(ds: Dataset, raw: RawDataElement) -> DataElement | None:
    """The SQ element ``convert_raw_data_element`` makes of an explicit VR little-endian
    sequence, its items read from the bytes without pydicom's file reader; None for
    anything its reader would treat specially (an empty item, a delimiter inside a
    defined length, an undefined-length value other than a sequence, an item's own
    character set, an unknown VR): pydicom then reads it."""
    value = raw.value
    if raw.is_implicit_VR or not raw.is_little_endian or value.__class__ is not bytes:
        return None
    if not value or raw.length != len(value):
        return None  # pydicom makes an empty list of an empty value
    charset = ds.original_character_set or ds._character_set
    encodings = charset or [pydicom.charset.default_encoding]
    if isinstance(encodings, str):
        encodings = [encodings]
    try:
        items, _ = _fast_items(value, 0, len(value), encodings, raw.value_tell)
    except (ValueError, struct.error):
        return None
    sequence = Sequence(items)
    sequence.is_undefined_length = False
    return DataElement(raw.tag, "SQ", sequence, raw.value_tell, False, already_converted=True)


def _fast_items(
    data: bytes, pos: int, end: int | None, encodings: list[str], offset: int, light: bool = False
) -> tuple[list, int]:
    """A sequence's items as pydicom's ``read_sequence`` builds them (``end`` None:
    undefined length, up to its delimiter); raises ValueError where it would differ.

    ``light``: each item is only its elements (the dict ``_fast_elements`` reads), a
    sequence of undefined length inside it a list of such items: what a removed
    sequence's phrases are collected from (``_Walker.collect_light``) without a Dataset
    per item."""
    items = []
    unpack = struct.unpack_from
    while end is None or pos < end:
        group, element, length = unpack("<HHI", data, pos)
        tag, start = group << 16 | element, pos
        pos += 8
        if tag == _SEQUENCE_END:
            if end is not None:
                raise ValueError("a delimiter inside a defined length")
            return items, pos
        if tag != _ITEM or length == 0:
            raise ValueError("not an item, or an empty one")
        if length == _UNDEFINED:
            elements, pos = _fast_elements(data, pos, None, encodings, light)
        else:
            elements, after = _fast_elements(data, pos, pos + length, encodings, light)
            pos = after
        if light:
            items.append(elements)
            continue
        items.append(_new_item(elements, encodings, length == _UNDEFINED, start + offset))
    if pos != end:
        raise ValueError("an item overruns its sequence")
    return items, pos


@lru_cache(maxsize=1)
def _new_dataset_state() -> dict[str, object]:
    """The attributes ``Dataset()`` gives a new data set (this pydicom's own)."""
    return dict(vars(Dataset()))


def _new_item(elements: dict, encodings: list[str], undefined: bool, tell: int) -> Dataset:
    """``Dataset(elements, parent_encoding=encodings)`` with the original encoding and the
    item's attributes pydicom's ``read_sequence_item`` sets, made from a new data set's
    attributes (fresh copies of its dicts) without running ``__init__``'s ``__setattr__``
    for each (tests/test_header_fast.py compares both)."""
    item = Dataset.__new__(Dataset)
    state = item.__dict__
    for name, value in _new_dataset_state().items():
        state[name] = value.copy() if value.__class__ is dict else value
    state["_dict"] = elements
    state["_parent_encoding"] = encodings
    state["_read_implicit"], state["_read_little"], state["_read_charset"] = False, True, encodings
    state["is_undefined_length_sequence_item"] = undefined
    state["seq_item_tell"] = state["file_tell"] = tell
    return item


def _fast_elements(
    data: bytes, pos: int, end: int | None, encodings: list[str], light: bool = False
) -> tuple[dict, int]:
    """One item's elements (see ``_fast_items``): raw, as pydicom's reader yields them."""
    elements: dict = {}
    unpack = struct.unpack_from
    size = len(data)
    first = True
    while end is None or pos < end:
        group, element = unpack("<HH", data, pos)
        tag = group << 16 | element
        if tag == _ITEM_END:
            if end is not None or first:
                raise ValueError("a delimiter inside a defined length, or an empty item")
            return elements, pos + 8
        if group == 0xFFFE or tag == 0x00080005:
            raise ValueError("an item or delimiter tag, or the item's own character set")
        vr, length, pos = _vr_and_length(data, pos)
        first = False
        key = _key(tag)
        if length == _UNDEFINED:
            if vr != "SQ":
                raise ValueError("an undefined length that is not a sequence")
            value_tell = pos
            items, pos = _fast_items(data, pos, None, encodings, 0, light)
            if light:
                elements[key] = items
                continue
            sequence = Sequence(items)
            sequence.is_undefined_length = True
            elements[key] = DataElement(key, vr, sequence, value_tell, is_undefined_length=True)
            continue
        if pos + length > size or vr == "UN":
            raise ValueError("a value past the end, or an unknown one")
        value = data[pos : pos + length] if length else empty_value_for_VR(vr, raw=True)
        elements[key] = RawDataElement(key, vr, length, value, pos, False, True)
        pos += length
    if pos != end:
        raise ValueError("an element overruns its item")
    return elements, pos


_EXPLICIT_HEADER = struct.Struct("<HH2sH")
_LONG_LENGTH = struct.Struct("<I")
#: Makes a RawDataElement from all its fields (``is_raw``, ``is_buffered``: the defaults)
#: without the Python-level ``__new__`` of a named tuple (tests/test_header_fast.py).
_new_tuple = tuple.__new__


def _vr_and_length(data: bytes, pos: int) -> tuple[str, int, int]:
    """The VR and value length of the explicit VR little-endian element at ``pos``, and
    where its value starts; ValueError for bytes that are no VR."""
    vr = _ENCODED_VRS.get(data[pos + 4 : pos + 6])
    if vr is None:
        raise ValueError("no known VR")
    if vr in vrs.LONG_LENGTH:
        return vr, struct.unpack_from("<I", data, pos + 8)[0], pos + 12
    return vr, struct.unpack_from("<H", data, pos + 6)[0], pos + 8


#: Files up to this size may be read by ``fast_read`` (read whole, then sliced: a large
#: file keeps pydicom's reader, which reads its pixel data into one buffer).
FAST_READ_MAX_BYTES = 4 << 20


def fast_read(fileobj: IO[bytes]) -> FileDataset | None:
    """``dcmread(fileobj)`` of a small explicit VR little-endian Part 10 file: the same
    FileDataset, its preamble, file meta and command set read by pydicom's own functions
    and its body by ``_fast_dataset``; None (``fileobj`` back where it was) for anything
    else, or anything the body's reader would treat specially, or a customized pydicom."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    start = fileobj.tell()
    if not _pydicom_defaults():
        return None
    try:
        preamble = read_preamble(fileobj, False)
        file_meta = _file_meta(fileobj)
        if file_meta is None:
            file_meta = _read_file_meta_info(fileobj)
        command_set = _command_set(fileobj)
        if command_set or file_meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian:
            raise ValueError("not the common case")
        base = fileobj.tell()
        end = fileobj.seek(0, io.SEEK_END)
        fileobj.seek(base)
        if not base < end <= base + FAST_READ_MAX_BYTES:
            raise ValueError("empty or large")
        data = fileobj.read(end - base)  # sized: a read of more allocates that much
        if len(data) != end - base:
            raise ValueError("the file changed")
        elements, encoding = _fast_dataset(data, base)
    except Exception:
        fileobj.seek(start)
        return None
    dataset = Dataset(elements)
    dataset.set_original_encoding(False, True, encoding)
    ds = FileDataset(fileobj, dataset, preamble, file_meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds


#: (0002,0000) UL, length 4: how a file meta starts.
_META_GROUP_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"


def _file_meta(fileobj: IO[bytes]) -> FileMetaDataset | None:
    """pydicom's ``_read_file_meta_info`` of a file meta led by its group length, whose
    elements fill that length exactly (explicit VR little endian, known VRs, defined
    lengths) and are followed by a whole element of another group: the same elements
    read, the same one decoded, the file left at the next element. None, the file where
    it was, for any other."""
    start = fileobj.tell()
    end = fileobj.seek(0, io.SEEK_END)
    fileobj.seek(start)
    head = fileobj.read(12)
    size = _LONG_LENGTH.unpack_from(head, 8)[0] if len(head) == 12 and head[:8] == _META_GROUP_LENGTH else None
    if size is not None and start + 12 + size + 12 <= end:  # sized: a read of more allocates that much
        data = fileobj.read(size + 12)  # and the header of the element after
        elements = _meta_elements(data, size, start + 12) if len(data) == size + 12 else None
        if elements is not None:
            group_length = _key(0x00020000)
            raw = {
                group_length: _new_tuple(
                    RawDataElement, (group_length, "UL", 4, head[8:], start + 8, False, True, True, False)
                )
            }
            raw.update(elements)
            dataset = Dataset(raw)
            dataset.set_original_encoding(False, True, pydicom.charset.default_encoding)
            meta = FileMetaDataset(dataset)
            meta.set_original_encoding(False, True, pydicom.charset.default_encoding)
            _ = meta[group_length]  # decoded, as pydicom's check of the meta does
            fileobj.seek(start + 12 + size)
            return meta
    fileobj.seek(start)
    return None


def _meta_elements(data: bytes, size: int, base: int) -> dict | None:
    """The elements after the group length (``_file_meta``), as pydicom's reader makes them;
    None for anything unusual, or when the element after them is not of another group."""
    elements: dict = {}
    pos = 0
    while pos < size:
        group, element, code, length = _EXPLICIT_HEADER.unpack_from(data, pos)
        vr = _ENCODED_VRS.get(code)
        if group != 2 or vr is None:
            return None
        if vr in vrs.LONG_LENGTH:
            length, pos = _LONG_LENGTH.unpack_from(data, pos + 8)[0], pos + 12
        else:
            pos += 8
        if length == _UNDEFINED or pos + length > size:
            return None
        key = _key(group << 16 | element)
        value = data[pos : pos + length] if length else empty_value_for_VR(vr, raw=True)
        elements[key] = _new_tuple(RawDataElement, (key, vr, length, value, base + pos, False, True, True, False))
        pos += length
    group, element = struct.unpack_from("<HH", data, size)
    if pos != size or group == 2 or group == 0xFFFE or 0x00020000 in elements:
        return None
    return elements


def _command_set(fileobj: IO[bytes]) -> Dataset | None:
    """pydicom's ``_read_command_set_elements``, which stops at the first element outside
    group 0000 and rewinds to it: None, the file where it was, when that is the first."""
    from pydicom.filereader import _read_command_set_elements

    head = fileobj.read(8)
    fileobj.seek(-len(head), io.SEEK_CUR)
    if len(head) == 8 and head[:2] != b"\x00\x00":
        return None
    return _read_command_set_elements(fileobj)


def _fast_dataset(data: bytes, base: int) -> tuple[dict, str | list[str]]:
    """A data set's elements as pydicom's ``read_dataset`` reads them from ``data`` (which
    starts at file position ``base``) and its encoding; ValueError where it would differ."""
    elements: dict = {}
    header, long_length, encoded = _EXPLICIT_HEADER.unpack_from, _LONG_LENGTH.unpack_from, _ENCODED_VRS
    size, pos = len(data), 0
    encoding: str | list[str] = pydicom.charset.default_encoding
    while size - pos >= 8:
        group, element, code, length = header(data, pos)  # as ``_vr_and_length``, inline
        if group == 0xFFFE:
            raise ValueError("an item or delimiter tag")
        vr = encoded.get(code)
        if vr is None:
            raise ValueError("no known VR")
        if vr in vrs.LONG_LENGTH:
            length, pos = long_length(data, pos + 8)[0], pos + 12
        else:
            pos += 8
        tag = group << 16 | element
        key = _key(tag)
        if length == _UNDEFINED:
            if vr != "SQ":
                raise ValueError("an undefined length that is not a sequence")
            value_tell = base + pos
            items, pos = _fast_items(data, pos, None, encoding, base)
            sequence = Sequence(items)
            sequence.is_undefined_length = True
            elements[key] = DataElement(key, vr, sequence, value_tell, is_undefined_length=True)
            continue
        if pos + length > size:
            raise ValueError("a value past the end")
        value = data[pos : pos + length] if length else empty_value_for_VR(vr, raw=True)
        if tag == 0x00080005:
            encoding = convert_encodings(convert_string(value or b"", True))
        # RawDataElement(key, vr, length, value, base + pos, False, True), without its __new__
        elements[key] = _new_tuple(RawDataElement, (key, vr, length, value, base + pos, False, True, True, False))
        pos += length
    if pos != size:
        raise ValueError("bytes after the last element")  # pydicom ignores them: not here
    charset = elements.get(0x00080005)
    final: str | list[str] = pydicom.charset.default_encoding
    if charset is not None:
        final = convert_encodings(convert_raw_data_element(charset).value)
    return elements, final


# ---------------------------------------------------------------------------- the walk


class _Walker:
    """One file's walk: applies actions, counts them, gathers phrases for cleaning."""

    def __init__(
        self,
        profile: Profile,
        identity: FileIdentity,
        remap_uid: Callable[[str], str],
        vocabulary: Vocabulary | None = None,
    ) -> None:
        self.profile = profile
        self.vocabulary = vocabulary
        self.shift_days = identity.shift_days
        self.remap_uid = remap_uid
        self.report = HeaderReport()
        self.phrases: set[str] = set()
        self.to_clean: list[tuple[Dataset, int]] = []
        #: removed values not decoded yet: (dataset, tag, VR, kind, raw element)
        self.pending: list[tuple[Dataset, int, str, str, RawDataElement]] = []
        #: ids of the items where the walk removed, emptied or cut a coded value
        self.code_changed: set[int] = set()
        #: kept coded values (dataset id, tag), looked at by Clean Descriptors as a whole
        self.codes: set[tuple[int, int]] = set()
        #: the items list each walked sequence item sits in, by the item's id
        self.parents: dict[int, MutableSequence[Dataset]] = {}
        #: pydicom is set up as ``_fast_element`` and ``_fast_sequence`` assume (per file:
        #: callers and tests may change pydicom's settings)
        self.fast = _pydicom_defaults()

    # -- reading values, fail closed
    def element(self, ds: Dataset, tag: int) -> DataElement:
        """The decoded element; anything pydicom cannot convert quarantines the file.

        A raw element of the common kinds (``_fast_element``, ``_fast_sequence``) is
        decoded here to the same element ``ds[tag]`` stores, without pydicom's generic
        conversion; any other takes ``ds[tag]``.
        """
        raw = ds._dict.get(_key(tag))
        if raw.__class__ is DataElement:
            return raw  # all ``ds[tag]`` does for an element already decoded
        if raw.__class__ is RawDataElement and self.fast and not (tag >> 16) & 1:
            if raw.VR == "SQ":
                elem = _fast_sequence(ds, raw)
                if elem is not None:
                    ds[raw.tag] = elem  # as ``ds[tag]`` stores a converted sequence (and
                    return elem  # sets the pixel representation, ``_set_pixel_representation``)
            else:
                elem = _fast_element(tag, raw, ds)
                if elem is not None:
                    ds._dict[raw.tag] = elem  # all ``ds[tag]`` does for a public non-SQ element
                    return elem
        try:
            return ds[tag]
        except Exception:
            raise QuarantineError(Reason.UNDECODABLE_VALUE, _tag_name(tag)) from None

    def assign(self, elem: DataElement, values: list[str]) -> None:
        (_assign if self.fast else _set_values)(elem, values)

    def values(self, ds: Dataset, tag: int) -> list[str]:
        return _values(self.element(ds, tag).value)

    # -- phrase collection
    def collect(self, ds: Dataset, tag: int, vr: str) -> None:
        """Remember the identifying text of an element that is about to go.

        A plain ASCII value still raw is only noted (``pending``): ``clean_all`` decodes it
        when a kept descriptor could hold one of its phrases, which is rare, and decoding
        is most of what a removal costs.
        """
        kind = _collect_kind(tag, vr)
        if kind is None:
            return
        if kind != "sequence":
            raw = ds._dict.get(_key(tag))
            if raw.__class__ is RawDataElement and _plain_ascii(raw.value):
                self.pending.append((ds, tag, vr, kind, raw))
                return
            self.collect_values(kind, vr, self.values(ds, tag))
            return
        if self.collect_light(ds, tag):
            return
        for item in self.element(ds, tag).value or ():
            self.collect_dataset(item)

    def collect_light(self, ds: Dataset, tag: int) -> bool:
        """``collect`` of a removed sequence read from its bytes (``_fast_items(light=True)``)
        rather than as a Dataset per item: the same values noted, in the same order.

        False, with nothing noted, wherever ``element`` would not read the sequence by
        ``_fast_sequence`` or ``collect_dataset`` would do more than note plain ASCII
        values (``_light_notes``): the full path then runs.
        """
        raw = ds._dict.get(_key(tag))
        if raw.__class__ is not RawDataElement or not self.fast or (tag >> 16) & 1 or raw.VR != "SQ":
            return False
        value = raw.value
        if raw.is_implicit_VR or not raw.is_little_endian or value.__class__ is not bytes:
            return False
        if not value or raw.length != len(value):
            return False
        encodings = _item_encodings(ds)
        try:
            items, _ = _fast_items(value, 0, len(value), encodings, raw.value_tell, light=True)
        except (ValueError, struct.error):
            return False
        notes: list[tuple[int, str, str, RawDataElement]] = []
        if not _light_notes(items, encodings, 0, notes):
            return False
        charset = _ItemCharset(encodings)
        self.pending.extend((charset, tag, vr, kind, element) for tag, vr, kind, element in notes)
        _note_pixel_representation(ds)
        return True

    def collect_values(self, kind: str, vr: str, values: list[str]) -> None:
        if kind == "name":
            for value in values:
                self.add_phrase(value)
                for token in _PN_SPLIT.split(value.replace("\x00", " ")):
                    self.add_phrase(token)
        elif kind == "date":
            for value in values:
                self.add_date(value)
        else:
            for value in values:
                self.add_phrase(value)

    def collect_pending(self, descriptor_texts: list[str] | None) -> None:
        """Decode the noted values whose phrases could occur in ``descriptor_texts``.

        A phrase of a plain ASCII value is its text (each value of a multi-valued one) or,
        for a name, one of its tokens, with NUL read as a space, stripped and lower-cased;
        pydicom's decoding only drops padding (spaces, NULs) at the ends. So each phrase
        contains the fully
        stripped core of one of the runs the raw bytes split into (at backslashes, and for
        names at name separators too): when no such core occurs in any descriptor, no
        phrase can. A date's phrases are renderings of the first 8 digits of a value,
        which are 8 adjacent digits of its bytes once dots and dashes are dropped
        (``dates.date_digits``): when no rendering of any such run occurs, none of the
        date's can. None: decode them all.
        """
        joined = "\n".join(descriptor_texts or ())
        for ds, tag, vr, kind, raw in self.pending:
            if descriptor_texts is not None:
                lowered = raw.value.decode("latin-1").lower()
                if kind == "date":
                    if not _TWO_DIGITS.search(joined) or not _date_could_occur(lowered, joined):
                        continue
                else:
                    runs = (_NAME_RUNS if kind == "name" else _VALUE_RUNS).split(lowered)
                    cores = [core for core in (run.strip(_PADDING) for run in runs) if core]
                    if cores and not any(core in joined for core in cores):
                        continue
            try:
                charset = ds.original_character_set or ds._character_set  # as Dataset.__getitem__
                value = convert_raw_data_element(raw, encoding=charset, ds=ds).value
            except Exception:
                raise QuarantineError(Reason.UNDECODABLE_VALUE, _tag_name(tag)) from None
            self.collect_values(kind, vr, _values(value))
        self.pending.clear()

    def collect_dataset(self, item: Dataset, depth: int = 0) -> None:
        """Collect phrases from an item that is removed as a whole."""
        if depth > MAX_DEPTH:
            raise QuarantineError(Reason.SEQUENCE_TOO_DEEP)
        for tag, raw in [(int(tag), raw) for tag, raw in item._dict.items()]:
            if (tag >> 16) & 1:
                continue
            vr = _element_vr(tag, raw)
            if vr == "SQ":
                for sub in self.element(item, tag).value or ():
                    self.collect_dataset(sub, depth + 1)
            else:
                self.collect(item, tag, vr)

    def add_phrase(self, text: str) -> None:
        phrase = text.replace("\x00", " ").strip().lower()
        if len(phrase) >= _MIN_PHRASE and phrase not in _STOP_WORDS:
            self.phrases.add(phrase)

    def add_date(self, text: str) -> None:
        date = date_digits(text)
        if date:
            self.phrases.update(_date_phrases(date))

    # -- the walk
    def walk(self, ds: Dataset, depth: int) -> None:
        """Apply the profile to every element of ``ds`` and, recursively, its items."""
        if depth > MAX_DEPTH:
            raise QuarantineError(Reason.SEQUENCE_TOO_DEEP)
        if _key(_PIXEL_REPRESENTATION) in ds._dict:
            # pydicom decodes it by itself whenever a sequence is set in this dataset:
            # decode it here first, so a damaged value quarantines instead of crashing
            self.element(ds, _PIXEL_REPRESENTATION)
        decide, profile, report = _decide, self.profile, self.report
        decisions = _decisions(profile)
        # the elements as stored (raw or decoded), tags as plain ints: pydicom's BaseTag
        # compares in Python, and every set or cache lookup below compares tags
        for tag, raw in [(int(tag), raw) for tag, raw in ds._dict.items()]:
            if (tag >> 16) & 1:
                _delete(ds, tag)
                report.private_removed += 1
                continue
            # (VR, action) depend on the tag and the stored VR only: resolved once per process
            decision = decisions.get((tag, raw.VR))
            if decision is None:
                # raise for a VR that is no VR, or one that cannot be read: never stored
                vr = _read_as(tag, _element_vr(tag, raw))
                decision = (vr, decide(profile, tag, vr))
                if len(decisions) > _MAX_DECISIONS:
                    decisions.clear()  # fuzzed or damaged input can make up any number of tags
                decisions[(tag, raw.VR)] = decision
            vr, action = decision
            if raw.__class__ is RawDataElement and raw.length > MAX_VALUE_BYTES and _oversized(raw, vr):
                raise QuarantineError(Reason.OVERSIZED_ELEMENT, _tag_name(tag))
            if depth == 0 and tag in _REPLACED:
                self.collect(ds, tag, vr)
                _delete(ds, tag)  # set afresh after the walk, whatever VR the input gave it
                report.dummied += 1
                continue
            if vr in _SYNTAX_VRS and raw.VR not in (None, "UN") and vr != raw.VR:
                raw = self.reread(ds, tag, raw, vr)  # read by the dictionary's VR
            if action is Action.KEEP and vr != "SQ":
                if vr in _SYNTAX_VRS:
                    self.check_kept(ds, tag, vr, raw)
                elif vr in vrs.TEXT and profile.options.clean_descriptors and tag in _verbatim_tags():
                    self.to_clean.append((ds, tag))  # a coded value: looked at whole (``drop_code``)
                    self.codes.add((id(ds), tag))
                continue  # the common case, without a call
            self.apply(ds, tag, vr, action, depth)

    def empty_sequence(self, ds: Dataset, tag: int) -> bool:
        """A kept explicit VR sequence of length 0 stays as read: it has no item to walk,
        and its 12 bytes are those pydicom's empty Sequence is written as. What reading
        it would do to ``ds`` (its pixel representation noted) is done."""
        raw = ds._dict.get(_key(tag))
        if raw.__class__ is not RawDataElement or not self.fast or raw.VR != "SQ" or raw.length != 0:
            return False
        if raw.is_implicit_VR or not raw.is_little_endian or raw.value != b"":
            return False
        _note_pixel_representation(ds)
        return True

    def reread(self, ds: Dataset, tag: int, raw: DataElement | RawDataElement, vr: str) -> DataElement | RawDataElement:
        """The element stored again with the VR it is read by (``_read_as``): the same
        bytes, judged and written under the dictionary's VR."""
        if raw.__class__ is RawDataElement:
            element: DataElement | RawDataElement = raw._replace(VR=vr)
        else:
            value = raw.value
            if not isinstance(value, (str, bytes)):
                raise QuarantineError(Reason.VR_MISMATCH, _tag_name(tag))
            element = DataElement(tag, vr, value.decode("latin-1") if isinstance(value, bytes) else value)
        ds._dict[_key(tag)] = element
        return element

    def check_kept(self, ds: Dataset, tag: int, vr: str, raw: DataElement | RawDataElement) -> None:
        """A kept value must match its VR's syntax and, when coded, its defined terms;
        otherwise only its valid values stay (or none: emptied when the IOD needs it)."""
        value = raw.value
        if raw.__class__ is RawDataElement and isinstance(value, bytes):
            kept = _kept_raw(tag, vr, value)
        else:
            kept = _kept_values(tag, vr, tuple(self.values(ds, tag)))
        if kept is None:
            return
        self.report.invalid_values += 1
        if tag in _CODE_TAGS:
            self.code_changed.add(id(ds))
        if kept:
            ds[tag] = DataElement(tag, vr, list(kept) if len(kept) > 1 else kept[0])
        elif required_type(_keyword(tag)):
            _put(ds, _empty_element(tag, vr, self.fast))
            self.report.emptied += 1
        else:
            _delete(ds, tag)
            self.report.removed += 1

    def apply(self, ds: Dataset, tag: int, vr: str, action: Action, depth: int) -> None:
        """Carry out one element's action."""
        if vr == "SQ" and action in (Action.KEEP, Action.CLEAN, Action.DUMMY, Action.UID):
            if self.empty_sequence(ds, tag):
                return
            items = self.element(ds, tag).value or ()
            for item in items:
                self.parents[id(item)] = items
                self.walk(item, depth + 1)
            if self.code_changed:
                # a code item whose code the walk took out breaks the IOD: the item goes
                lost = [i for i, item in enumerate(items) if id(item) in self.code_changed and not _has_code(item)]
                for index in reversed(lost):
                    del items[index]
                    self.report.removed += 1
        elif action is Action.KEEP:
            return
        elif action is Action.REMOVE:
            self.collect(ds, tag, vr)
            _delete(ds, tag)
            self.report.removed += 1
            if tag in _CODE_TAGS:
                self.code_changed.add(id(ds))
        elif action is Action.EMPTY:
            if tag in _CODE_TAGS:
                self.code_changed.add(id(ds))
            self.collect(ds, tag, vr)
            _put(ds, _empty_element(tag, vr, self.fast))
            self.report.emptied += 1
        elif action is Action.SHIFT_DATE:
            self.shift(ds, tag, vr)
        elif action is Action.UID:
            self.uid(ds, tag, vr)
        elif action is Action.DUMMY:
            self.dummy(ds, tag, vr)
        elif action is Action.CLEAN:
            if vr in vrs.TEXT:
                self.to_clean.append((ds, tag))
        else:  # pragma: no cover - every Action is handled above
            raise QuarantineError(Reason.UNHANDLED_ACTION, _tag_name(tag))

    def shift(self, ds: Dataset, tag: int, vr: str) -> None:
        """Shift every value; an unparseable one takes the whole element out."""
        if vr not in ("DA", "DT"):
            self.apply(ds, tag, vr, Action.REMOVE, 0)
            return
        elem = self.element(ds, tag)
        values = _values(elem.value)
        if not values:
            return
        shifted = self.shifted(values, vr)
        for value in values:
            self.add_date(value)
        if shifted is None:
            self.drop_unparseable(ds, tag, vr)
            return
        self.assign(elem, shifted)
        self.report.dates_shifted += 1

    def shifted(self, values: Iterable[str], vr: str) -> list[str] | None:
        """The shifted values, or None when one is not a date or lands outside 2100-2200.

        A shifted date outside the dataset's years (a placeholder such as 19000101, an
        old study of a patient whose shift was minted from a later one) would break the
        promise every date makes, so it is treated like an unparseable one.
        """
        shift = shift_da if vr == "DA" else shift_dt
        try:
            shifted = [shift(value, self.shift_days) if value.strip() else "" for value in values]
        except (ValueError, OverflowError):
            return None
        if not all(within_shifted_years(value, vr) for value in shifted):
            self.report.dates_out_of_range += 1
            return None
        return shifted

    def drop_unparseable(self, ds: Dataset, tag: int, vr: str) -> None:
        """An unparseable date is never kept: emptied when the IOD needs it, else removed."""
        if required_type(_keyword(tag)):
            _put(ds, _empty_element(tag, vr, self.fast))  # DA, DT: ''
            self.report.emptied += 1
        else:
            _delete(ds, tag)
            self.report.removed += 1

    def uid(self, ds: Dataset, tag: int, vr: str) -> None:
        """Remap every UID value except well-known standard UIDs (SOP classes, ...)."""
        if vr != "UI":
            self.apply(ds, tag, vr, Action.REMOVE, 0)
            return
        elem = self.element(ds, tag)
        values = _values(elem.value)
        if required_type(_keyword(tag)) != 1 and _kept_values(tag, vr, tuple(values)) is not None:
            # not a UID (a Type 1 UID is remapped whatever it holds: its key, never lost)
            self.report.invalid_values += 1
            self.apply(ds, tag, vr, Action.EMPTY if required_type(_keyword(tag)) else Action.REMOVE, 0)
            return
        new = [v if (not v or v in UID_dictionary) else self.remap_uid(v) for v in values]
        if new != values:
            self.assign(elem, new)
            self.report.uids_remapped += 1

    def dummy(self, ds: Dataset, tag: int, vr: str) -> None:
        """Replace with a value valid for the VR (dates: the shifted value where possible)."""
        if vr == "UI":
            self.uid(ds, tag, vr)
            return
        self.collect(ds, tag, vr)
        if vr in ("DA", "DT"):
            shifted = self.shifted(self.values(ds, tag), vr) or []
            ds[tag] = DataElement(tag, vr, shifted[0] if len(shifted) == 1 else shifted)
        else:
            ds[tag] = DataElement(tag, vr, _DUMMY_BY_VR.get(vr, _empty_value(vr)))
        self.report.dummied += 1

    # -- clean descriptors, after the walk
    def clean_all(self) -> None:
        """Delete collected phrases from the kept descriptors and free text."""
        if not self.to_clean:
            return  # phrases are only ever looked for in these
        if self.vocabulary is not None:
            self.clean_words(self.vocabulary)
        if self.pending:
            self.collect_pending(self.descriptor_texts())
        if not self.phrases:
            return
        phrases = sorted(self.phrases, key=len, reverse=True)
        ascii_only = all(phrase.isascii() for phrase in phrases)
        # ASCII is encoded as itself in every DICOM character set (ESC aside, which switches
        # ISO 2022 code sets and may sit inside a word), so a phrase absent from the raw
        # bytes is absent from the text: such a descriptor is not decoded. The phrases are
        # first narrowed to those found in any descriptor's bytes at all.
        # A decoded value is looked at as its lower-cased values.
        lowered_raw = [_lowered(_stored(ds, tag), ascii_only) for ds, tag in self.to_clean]
        joined = "\n".join(text for text in lowered_raw if text is not None)
        candidates = [phrase for phrase in phrases if phrase in joined]
        for (ds, tag), lowered in zip(self.to_clean, lowered_raw, strict=True):
            if lowered is not None and not any(phrase in lowered for phrase in candidates):
                continue
            elem = self.element(ds, tag)
            values = _values(elem.value)
            cleaned = [clean_text(v, phrases) for v in values]
            if cleaned == values:
                continue
            if (id(ds), tag) in self.codes:
                self.drop_code(ds, tag)
            else:
                self.assign(elem, cleaned)
                self.report.descriptors_cleaned += 1

    def drop_code(self, ds: Dataset, tag: int) -> None:
        """A coded value holding the patient's name or ids (a local code typed as free
        text) goes whole: a cleaned code would be another code. An item left without its
        code breaks the IOD and goes with it, as in the walk."""
        _delete(ds, tag)
        self.report.removed += 1
        items = self.parents.get(id(ds))
        if items is not None and not _has_code(ds):
            for index, item in enumerate(items):
                if item is ds:
                    del items[index]
                    self.report.removed += 1
                    break

    def clean_words(self, vocabulary: Vocabulary) -> None:
        """Replace every token of the kept free text that ``vocabulary`` does not hold."""
        for ds, tag in self.to_clean:
            elem = self.element(ds, tag)
            if not is_free_text(self.profile, tag, elem.VR):
                continue
            values = _values(elem.value)
            limit = freetext.MAX_CHARS.get(elem.VR)
            cleaned = [freetext.clean_value_cached(value, vocabulary, limit) for value in values]
            if cleaned != values:
                self.assign(elem, cleaned)
                self.report.descriptors_cleaned += 1

    def descriptor_texts(self) -> list[str] | None:
        """Every kept descriptor's text, lower-cased, for ``collect_pending``; None when one
        is not plain ASCII (its decoded text need not be a run of its bytes)."""
        texts = []
        for ds, tag in self.to_clean:
            raw = _stored(ds, tag)
            if raw.__class__ is RawDataElement:
                if not _plain_ascii(raw.value):
                    return None
                texts.append(raw.value.decode("latin-1").lower())
            else:
                texts.append("\\".join(_values(self.element(ds, tag).value)).lower())
        return texts


def _lowered(element: DataElement | RawDataElement | None, ascii_only: bool) -> str | None:
    """Text holding every lower-cased value of a kept descriptor as a run, for finding which
    phrases could occur in it: a decoded element's values, or (phrases all ASCII) a raw
    value's bytes without ESC; None when it must be decoded to know."""
    if element is None:
        return None
    value = element.value
    if element.__class__ is DataElement:
        return "\n".join(text.lower() for text in _values(value))
    if ascii_only and element.__class__ is RawDataElement and isinstance(value, bytes) and b"\x1b" not in value:
        return value.decode("latin-1").lower()
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


def _date_could_occur(value: str, text: str) -> bool:
    """Whether a rendering of any 8-digit run of ``value`` (dots and dashes dropped)
    occurs in ``text`` (both lower-cased)."""
    digits = value.replace(".", "").replace("-", "")
    for start in range(len(digits) - 7):
        run = digits[start : start + 8]
        if run[2:4] not in text or not run.isdigit():
            continue  # every rendering holds the year's last two digits
        if any(phrase in text for phrase in _date_phrases(run)):
            return True
    return False


def _plain_ascii(value: object) -> bool:
    """Bytes that decode to the same characters in every DICOM character set: ASCII
    without ESC (which switches ISO 2022 code sets)."""
    return isinstance(value, bytes) and value.isascii() and b"\x1b" not in value


@lru_cache(maxsize=16384)
def _collect_kind(tag: int, vr: str) -> str | None:
    """What a removed element's value adds to the phrases: a name, a date, a sequence's
    contents, an identifying phrase, or nothing."""
    if vr == "PN" or (vr in vrs.STRING and _dictionary_vr(tag) == "PN"):  # a name, whatever its VR
        return "name"
    if vr in ("DA", "DT"):
        return "date"
    if vr == "SQ":
        return "sequence"
    if _keyword(tag) in _PHRASE_KEYWORDS and vr in vrs.STRING:
        return "phrase"
    return None


def clean_text(text: str, phrases: list[str]) -> str:
    """``text`` without any whole-token, case-insensitive occurrence of ``phrases``."""
    lowered = text.lower()
    hits = [p for p in phrases if p in lowered]
    if not hits:
        return text
    for phrase in hits:
        pattern = r"(?<!\w)" + re.escape(phrase) + r"(?!\w)"
        text = re.sub(pattern, "", text, flags=re.IGNORECASE)
    return " ".join(text.split())


# ------------------------------------------------- pass 1: the words of the free text

#: Attributes whose every token is identifying wherever they appear (besides any PN):
#: ids, addresses, telephone numbers, institutions, stations, devices.
_IDENTIFYING_KEYWORDS = _PHRASE_KEYWORDS | frozenset(
    {
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "PersonAddress",
        "PersonTelephoneNumbers",
        "PersonTelecomInformation",
        "PatientTelecomInformation",
        "ResponsibleOrganization",
        "CountryOfResidence",
        "CurrentPatientLocation",
        "PatientInstitutionResidence",
        "ScheduledPatientInstitutionResidence",
        "PerformedStationName",
        "PerformedLocation",
        "ScheduledStationName",
        "ScheduledProcedureStepLocation",
        "RequestedProcedureLocation",
        "DeviceSerialNumber",
        "PlateID",
        "DetectorID",
        "MilitaryRank",
        "BranchOfService",
        "Occupation",
        "InsurancePlanIdentification",
        "OtherPatientIDs",
    }
)
#: Sequences whose text describes a person or an institution (identification code
#: sequences, institution codes): every string inside them is identifying.
_IDENTIFYING_SEQUENCE = re.compile(r"Physician|Operator|Person|Institution|Observer|Organization|Patient.*ID")
_ID_SUFFIX = re.compile(r"(ID|IDs|Number|Numbers|Address|Telephone|Name|Names)$")


#: Free text outside the Clean Descriptors rows: a code's meaning, an SR TEXT item.
_FREE_TEXT_KEYWORDS = frozenset({"CodeMeaning", "TextValue"})


@lru_cache(maxsize=16384)
def is_free_text(profile: Profile, tag: int, vr: str) -> bool:
    """Whether a kept-and-cleaned element is free text that the vocabulary rule cleans: a
    Clean Descriptors row of the table, CodeMeaning, TextValue, or any ST/LT/UT. Other
    cleaned values (codes, versions, model names) keep the phrase layer only: replacing
    their tokens would break codes, and they are not where people write sentences."""
    if vr not in vrs.TEXT or _decide(profile, tag, vr) is not Action.CLEAN:
        return False
    return profile.action_for(tag) is Action.CLEAN or _keyword(tag) in _FREE_TEXT_KEYWORDS or vr in vrs.FREE_TEXT


@lru_cache(maxsize=16384)
def _word_role(profile: Profile, tag: int, vr: str, identifying: bool) -> str | None:
    """What pass 1 does with an element: count its tokens (``descriptor``), deny them
    (``identifying``), walk it (``sequence``) or nothing."""
    if vr == "SQ":
        return "sequence"
    if vr not in vrs.STRING or vr in ("DA", "DT", "TM", "UI", "DS", "IS", "AS"):
        return None
    if vr == "PN" or _dictionary_vr(tag) == "PN":
        return "identifying"
    keyword = _keyword(tag)
    descriptor = is_free_text(profile, tag, vr)
    if descriptor and not identifying:
        return "descriptor"
    if identifying or keyword in _IDENTIFYING_KEYWORDS or (vr != "CS" and _ID_SUFFIX.search(keyword)):
        return "identifying"
    return None


@lru_cache(maxsize=16384)
def _stored_vr(tag: int, vr: str | None) -> str:
    """``_element_vr`` for an element read by ``_raw_elements`` (VR None: implicit)."""
    return _element_vr(tag, RawDataElement(BaseTag(tag), vr, 0, b"", 0, vr is None, True))


@lru_cache(maxsize=16)
def _roles(profile: Profile) -> dict[tuple[int, str | None, bool], str | None]:
    """Pass 1's role per (tag, stored VR, inside an identifying sequence), filled as met."""
    return {}


def _decoded(item: Dataset, raw: DataElement | RawDataElement) -> DataElement:
    """The element decoded without storing it back (storing re-checks the dataset)."""
    if raw.__class__ is not RawDataElement:
        return raw
    charset = item.original_character_set or item._character_set
    return convert_raw_data_element(raw, encoding=charset, ds=item)


_UNDEFINED = 0xFFFFFFFF
#: One element of a sequence read by ``_raw_elements``: tag, VR (None: implicit), value
#: (bytes, or for a sequence its items, each a list of elements).
_RawElement = tuple[int, str | None, object]


def _raw_items(data: bytes, pos: int, end: int | None, implicit: bool, depth: int) -> tuple[list, int]:
    """The items of a little-endian sequence value from ``pos`` (``end`` None: undefined
    length, up to the delimiter). Raises ValueError or struct.error on anything unusual:
    the caller then lets pydicom read the sequence."""
    items = []
    while end is None or pos < end:
        group, element, length = struct.unpack_from("<HHI", data, pos)
        tag, pos = group << 16 | element, pos + 8
        if tag == 0xFFFEE0DD:
            return items, pos
        if tag != 0xFFFEE000:
            raise ValueError("not an item")
        if length == _UNDEFINED:
            elements, pos = _raw_elements(data, pos, None, implicit, depth)
        else:
            elements, _ = _raw_elements(data, pos, pos + length, implicit, depth)
            pos += length
        items.append(elements)
    if pos != end:
        raise ValueError("item overruns its sequence")
    return items, pos


def _raw_elements(data: bytes, pos: int, end: int | None, implicit: bool, depth: int) -> tuple[list, int]:
    """The elements of one item (see ``_raw_items``)."""
    if depth > MAX_DEPTH:
        raise ValueError("too deep")
    elements: list[_RawElement] = []
    while end is None or pos < end:
        group, element = struct.unpack_from("<HH", data, pos)
        tag = group << 16 | element
        if tag == 0xFFFEE00D:
            return elements, pos + 8
        vr: str | None = None
        if implicit:
            (length,) = struct.unpack_from("<I", data, pos + 4)
            pos += 8
        else:
            code = data[pos + 4 : pos + 6]
            if code in vrs.LONG_LENGTH_CODES:
                (length,) = struct.unpack_from("<I", data, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from("<H", data, pos + 6)
                pos += 8
            vr = code.decode("ascii")
        if tag == 0x00080005:
            raise ValueError("an item with its own character set")
        if vr == "SQ" or (vr is None and (length == _UNDEFINED or _dictionary_vr(tag) == "SQ")):
            if length == _UNDEFINED:
                items, pos = _raw_items(data, pos, None, implicit, depth + 1)
            else:
                items, _ = _raw_items(data, pos, pos + length, implicit, depth + 1)
                pos += length
            elements.append((tag, "SQ", items))
            continue
        if length == _UNDEFINED or pos + length > len(data):
            raise ValueError("undefined or overrunning length")
        elements.append((tag, vr, data[pos : pos + length]))
        pos += length
    if pos != end:
        raise ValueError("element overruns its item")
    return elements, pos


def descriptor_words(
    ds: Dataset,
    options: ProfileOptions = ProfileOptions(),  # noqa: B008 - frozen, immutable default
    fast: bool = True,
) -> tuple[set[str], set[str]]:
    """Pass 1's share of the free-text rule for one header: the folded tokens of every
    value the profile keeps under Clean Descriptors (at any depth), and every identifying
    key (``freetext.identifying_keys``) of the names, ids, addresses and institutions.

    Private elements are skipped (pass 2 removes them). Raises whatever decoding a
    damaged value raises; the caller then counts nothing for the file. ``fast`` reads
    little-endian sequences from their bytes (``_raw_items``) rather than as Datasets,
    with the same result (tests compare both); anything unusual falls back to pydicom.
    """
    profile = get_profile(options)
    roles = _roles(profile)
    words: set[str] = set()
    denied: set[str] = set()

    def walk(item: Dataset, depth: int, identifying: bool) -> None:
        if depth > MAX_DEPTH:
            raise QuarantineError(Reason.SEQUENCE_TOO_DEEP)
        for key, raw in list(item._dict.items()):
            # the role depends on the tag, the stored VR and the context only: one lookup
            tag = int(key)  # a plain int: pydicom's BaseTag compares in Python
            decision = (tag, raw.VR, identifying)
            role = roles.get(decision, "")
            if role == "":
                role = None
                if not ((tag >> 16) & 1 or (tag >> 16) == 2):
                    role = _word_role(profile, tag, _element_vr(tag, raw), identifying)
                if len(roles) > _MAX_DECISIONS:
                    roles.clear()
                roles[decision] = role
            if role is None:
                continue
            if role == "sequence":
                inside = identifying or bool(_IDENTIFYING_SEQUENCE.search(_keyword(tag)))
                if fast and raw.__class__ is RawDataElement and raw.is_little_endian and isinstance(raw.value, bytes):
                    charset = item.original_character_set or item._character_set
                    try:  # pydicom builds a Dataset per item: most of pass 1's extra cost
                        items, _ = _raw_items(raw.value, 0, len(raw.value), raw.is_implicit_VR, depth + 1)
                    except (ValueError, struct.error):
                        pass
                    else:
                        for elements in items:
                            walk_raw(elements, depth + 1, inside, raw.is_implicit_VR, charset)
                        continue
                for sub in _decoded(item, raw).value or ():
                    walk(sub, depth + 1, inside)
                continue
            if raw.__class__ is RawDataElement and _plain_ascii(raw.value):
                # pydicom's conversion is most of the cost: ASCII is itself in every
                # character set, and only padding (spaces, NULs) is dropped at the ends
                texts = [part.strip(_PADDING) for part in raw.value.decode("ascii").split("\\")]
            else:
                texts = _values(_decoded(item, raw).value)
            take(role, texts)

    def walk_raw(elements: list[_RawElement], depth: int, identifying: bool, implicit: bool, charset) -> None:
        """``walk`` over an item read by ``_raw_items``: the same roles, the same texts."""
        for tag, vr, value in elements:
            if (tag >> 16) & 1 or (tag >> 16) == 2:
                continue
            role = _word_role(profile, tag, _stored_vr(tag, vr), identifying)
            if role is None:
                continue
            if role == "sequence":
                if vr != "SQ":
                    raise ValueError("a sequence stored as bytes")
                inside = identifying or bool(_IDENTIFYING_SEQUENCE.search(_keyword(tag)))
                for sub in value:
                    walk_raw(sub, depth + 1, inside, implicit, charset)
                continue
            if _plain_ascii(value):
                texts = [part.strip(_PADDING) for part in value.decode("ascii").split("\\")]
            else:
                raw = RawDataElement(BaseTag(tag), vr, len(value), value, 0, implicit, True)
                texts = _values(convert_raw_data_element(raw, encoding=charset).value)
            take(role, texts)

    def take(role: str, texts: list[str]) -> None:
        for text in texts:
            if role == "descriptor":
                words.update(freetext.keys(text))
            elif text:
                denied.update(freetext.deniable_keys(text))

    walk(ds, 0, False)
    return words, denied


# --------------------------------------------------------------------------- top level


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = code.meaning
    return item


def _method(options: ProfileOptions) -> tuple[list[str], list[Code]]:
    """DeidentificationMethod values (LO, <= 64 chars each) and the method codes."""
    texts, codes = [f"{TOOL_NAME}: PS3.15 E basic profile"], [BASIC_PROFILE]
    if options.clean_descriptors:
        texts.append("clean descriptors")
        codes.append(CLEAN_DESCRIPTORS)
    if options.retain_modified_dates:
        texts.append("modified dates")
        codes.append(MODIFIED_DATES)
    return texts, codes


_PATIENT_IDENTITY_REMOVED, _DEID_METHOD, _DEID_METHOD_CODES = 0x00120062, 0x00120063, 0x00120064
_LONGITUDINAL_MODIFIED = 0x00280303
_ITEM_TAG = b"\xfe\xff\x00\xe0"


def _raw(tag: int, vr: str, value: bytes, implicit: bool) -> RawDataElement:
    """An element as if read from the file (little endian): pydicom writes it back as is
    and decodes it, like any other raw element, when someone reads it."""
    return RawDataElement(BaseTag(tag), None if implicit else vr, len(value), value, 0, implicit, True)


def _encoded(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    """One little-endian element's bytes, as pydicom's writer lays them out."""
    if implicit:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value
    if vr in ("SQ", "UT", "UC", "UR", "OB", "OW", "UN"):
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def _text(value: str) -> bytes:
    """An ASCII text value padded to even length with a space, as pydicom writes it."""
    data = value.encode("ascii")
    return data + b" " if len(data) % 2 else data


@lru_cache(maxsize=16)
def _raw_markers(options: ProfileOptions, implicit: bool) -> tuple[RawDataElement, ...]:
    """The PS3.15 E.1.1 markers for ``options``, encoded once per process."""
    texts, codes = _method(options)
    items = b""
    for code in codes:
        body = (
            _encoded(0x00080100, "SH", _text(code.value), implicit)
            + _encoded(0x00080102, "SH", _text(code.scheme), implicit)
            + _encoded(0x00080104, "LO", _text(code.meaning), implicit)
        )
        items += _ITEM_TAG + struct.pack("<I", len(body)) + body
    modified = "MODIFIED" if options.retain_modified_dates else "REMOVED"
    return (
        _raw(_PATIENT_IDENTITY_REMOVED, "CS", _text("YES"), implicit),
        _raw(_DEID_METHOD, "LO", _text("\\".join(texts)), implicit),
        _raw(_DEID_METHOD_CODES, "SQ", items, implicit),
        _raw(_LONGITUDINAL_MODIFIED, "CS", _text(modified), implicit),
    )


def _mark_deidentified(ds: Dataset, identity: FileIdentity, options: ProfileOptions) -> None:
    """Research ids and the PS3.15 E.1.1 markers; all values are ASCII.

    In a dataset read from a little-endian file, each marker the walk did not leave in
    place is added as a raw element, encoded once per process (``_raw_markers``) rather
    than built as Datasets for every file; one still present keeps its own VR and gets
    its value set, as in a dataset built in memory.
    """
    implicit, little = ds.original_encoding
    raw: dict[int, RawDataElement] = {}
    if little is True and implicit is not None:
        subject, study = _text(str(identity.subject_id)), _text(str(identity.study_id))
        for tag, vr, value in (
            (_PATIENT_NAME, "PN", _text(f"{identity.subject_id}^")),
            (_PATIENT_ID, "LO", subject),
            (_ACCESSION, "SH", study),
            (_STUDY_ID, "SH", study),
        ):
            raw[tag] = _raw(tag, vr, value, implicit)
        raw.update((int(element.tag), element) for element in _raw_markers(options, implicit))
    texts, codes = _method(options)
    values: dict[str, Callable[[], object]] = {
        "PatientName": lambda: f"{identity.subject_id}^",
        "PatientID": lambda: str(identity.subject_id),
        "AccessionNumber": lambda: str(identity.study_id),
        "StudyID": lambda: str(identity.study_id),
        "PatientIdentityRemoved": lambda: "YES",
        "DeidentificationMethod": lambda: texts if len(texts) > 1 else texts[0],
        "DeidentificationMethodCodeSequence": lambda: Sequence([_code_item(code) for code in codes]),
        "LongitudinalTemporalInformationModified": lambda: "MODIFIED" if options.retain_modified_dates else "REMOVED",
    }
    for (keyword, value), tag in zip(values.items(), _MARKER_TAGS, strict=True):
        if tag in raw and _key(tag) not in ds._dict:
            ds._dict[_key(tag)] = raw[tag]  # all ``ds[tag] = `` does with a public raw element
        else:
            setattr(ds, keyword, value())


#: The tags of ``_mark_deidentified``'s keywords, in its order.
_MARKER_TAGS = (
    _PATIENT_NAME,
    _PATIENT_ID,
    _ACCESSION,
    _STUDY_ID,
    _PATIENT_IDENTITY_REMOVED,
    _DEID_METHOD,
    _DEID_METHOD_CODES,
    _LONGITUDINAL_MODIFIED,
)


def _fix_file_meta(ds: Dataset, report: HeaderReport) -> None:
    """Rebuild the file meta from the cleaned data set (``encode.standard_file_meta``):
    nothing of the input's group 2 but its transfer syntax survives."""
    meta = getattr(ds, "file_meta", None)
    before = len(meta) if meta is not None else 0
    ds.file_meta = encode.standard_file_meta(ds)
    # everything else the input had in group 2 (AE titles, private information, ...)
    report.removed += max(0, before - len(ds.file_meta))


@lru_cache(maxsize=1)
def _required_tags() -> tuple[int, ...]:
    """Every tag of the Type 1/2 requirements table but the research ids."""
    return tuple(sorted(set().union(*(r.tags for r in load_type2_requirements())) - _REPLACED))


def _restore_type2(ds: Dataset, before: list[int], report: HeaderReport) -> None:
    """Empty (Type 2) or dummy (Type 1), rather than remove, the attributes this data
    set's IOD requires (``type2-required.json``; PS3.15 E.1.1 allows Z or D where X
    would break the IOD). ``before``: the table's tags the input had."""
    missing = {tag for tag in before if tag not in ds._dict}
    if not missing:
        return
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    animal = 0x00102201 in ds._dict or 0x00102202 in ds._dict  # species description or code
    for requirement in load_type2_requirements():
        if not requirement.applies(sop_class, animal):
            continue
        for tag in sorted(requirement.tags & missing):
            missing.discard(tag)
            vr = _dictionary_vr(tag).split(" or ")[0]
            report.removed -= 1
            if requirement.type == 1:
                ds[tag] = DataElement(tag, vr, _DUMMY_BY_VR.get(vr, _empty_value(vr)))
                report.dummied += 1
            else:
                ds[tag] = DataElement(tag, vr, _empty_value(vr))
                report.emptied += 1


def _check_encoding(ds: Dataset) -> None:
    """The body must be encoded as its transfer syntax says, or raw elements cannot be
    written back unchanged (pydicom would have to re-encode values it never validated)."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax or not str(syntax).strip():
        raise QuarantineError(Reason.NO_TRANSFER_SYNTAX, "TransferSyntaxUID")
    syntax = UID(str(syntax).strip())
    if not syntax.is_transfer_syntax:
        raise QuarantineError(Reason.UNKNOWN_TRANSFER_SYNTAX, "TransferSyntaxUID")
    implicit, little = ds.original_encoding
    # pydicom falls back to the encoding it finds in the body; raw elements record it
    elements = map(ds.get_item, ds.keys())
    first_raw = next((e for e in elements if isinstance(e, RawDataElement)), None)
    if first_raw is not None:
        implicit, little = first_raw.is_implicit_VR, first_raw.is_little_endian
    if implicit is not None and (implicit, little) != (
        syntax.is_implicit_VR,
        syntax.is_little_endian,
    ):
        raise QuarantineError(Reason.TRANSFER_SYNTAX_MISMATCH, "TransferSyntaxUID")


def _check_sop_instance(ds: Dataset) -> None:
    """A dataset without SOPInstanceUID cannot get a consistent new identity."""
    if _SOP_INSTANCE_UID not in ds:
        raise QuarantineError(Reason.NO_SOP_INSTANCE_UID, "SOPInstanceUID")
    try:
        value = ds[_SOP_INSTANCE_UID].value
    except Exception:
        raise QuarantineError(Reason.UNDECODABLE_VALUE, "SOPInstanceUID") from None
    if not isinstance(value, str) or not value.strip():
        raise QuarantineError(Reason.NO_SOP_INSTANCE_UID, "SOPInstanceUID")


def deidentify_header(
    ds: pydicom.Dataset,
    identity: FileIdentity,
    remap_uid: Callable[[str], str],
    options: ProfileOptions = ProfileOptions(),  # noqa: B008 - frozen, immutable default
    vocabulary: Vocabulary | None = None,
) -> HeaderReport:
    """De-identify ``ds`` (and its file meta) in place; returns the action counts.

    ``vocabulary``: the tokens free text may keep (``deid.freetext``); the pipeline always
    passes the archive's. None cleans descriptors by the phrase layer alone.

    Raises QuarantineError (reason class and keyword only) when the outcome would be
    uncertain; ``ds`` must then be discarded, as it may be half processed.
    """
    _check_sop_instance(ds)
    _check_encoding(ds)
    walker = _Walker(get_profile(options), identity, remap_uid, vocabulary)
    before = [tag for tag in _required_tags() if _key(tag) in ds._dict]
    walker.walk(ds, 0)
    _restore_type2(ds, before, walker.report)
    walker.clean_all()
    _mark_deidentified(ds, identity, options)
    _fix_file_meta(ds, walker.report)
    # The 128-byte preamble is outside the dataset and Annex E's table, yet free for any
    # use (a TIFF header in dual-format files, vendor text): it is written as zeros.
    ds.preamble = b"\x00" * 128
    return walker.report
