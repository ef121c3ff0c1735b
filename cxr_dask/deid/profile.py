"""PS3.15 Annex E Table E.1-1, resolved once into a tag -> action lookup.

The table ships as package data (never retyped). Each row gives a basic-profile code
(D/Z/X/U or a combined code such as ``X/Z/D``) and per-option columns. Resolving a row
means applying the options this tool implements (Retain Longitudinal Temporal
Information with Modified Dates, Clean Descriptors) and choosing, for a combined
code, the action that keeps a DX/CR image valid for its IOD (PS3.15 E.1.1).
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from types import ModuleType
from typing import Any, TypeVar

from cxr_dask.deid.rules import PixelOptions
from cxr_dask.settings import doc

TABLE_RESOURCE = "ps3.15-table-e.1-1.json"
#: Attributes outside Table E.1-1 kept on purpose, each group with its reason.
KEEP_LIST_RESOURCE = "keep-list.json"
#: Defined terms (or a pattern) for every coded string (CS) attribute that is kept.
DEFINED_TERMS_RESOURCE = "defined-terms.json"
#: Type 2 attributes an IOD needs present where the table would remove them.
TYPE2_REQUIRED_RESOURCE = "type2-required.json"

#: MIMIC-CXR keeps these descriptors (cleaned); every other cleanDescOpt row follows
#: the basic profile.
DEFAULT_CLEAN_DESCRIPTORS = frozenset({"StudyDescription", "SeriesDescription", "PerformedProcedureStepDescription"})

# Attributes that are Type 1 or Type 2 in the DX and CR image IODs (PS3.3 A.26, A.2)
# and the modules they use: Patient, General Study, General Series, DX/CR Series,
# General Equipment, General/DX/CR Image, Acquisition Context, Contrast/Bolus, SOP
# Common. Only attributes that a combined code or a failed date parse can touch matter
# here, so the set is deliberately small. Where DX and CR differ, the stricter type wins
# (ContentDate/ContentTime: Type 1 in the DX Image module, Type 2C in General Image).
TYPE1_KEYWORDS = frozenset(
    {
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "ContentDate",
        "ContentTime",
    }
)
TYPE2_KEYWORDS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
        "SeriesNumber",
        "InstanceNumber",
        "Manufacturer",
        "PatientOrientation",
        "AcquisitionContextSequence",  # Acquisition Context module, mandatory for DX
        "ContrastBolusAgent",  # Contrast/Bolus module, when contrast was used
    }
)
REQUIRED_KEYWORDS = TYPE1_KEYWORDS | TYPE2_KEYWORDS


class Action(enum.Enum):
    """The final action for one attribute after options and combined codes."""

    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    KEEP = "K"
    CLEAN = "C"  # keep, with identifying tokens cleaned out of the text
    UID = "U"  # remap (a sequence: keep it, the UIDs inside are remapped)
    SHIFT_DATE = "S"  # Modified Dates option: shift DA/DT by the patient's offset


def _datadict() -> ModuleType:
    """pydicom's data dictionary, imported at first use: ``cxr-dask run`` reads its settings
    (these options among them) before it starts its workers, and pydicom is its largest
    import after distributed (~0.2 s)."""
    from pydicom import datadict

    return datadict


def _keywords_complaint(keywords: frozenset[str]) -> str | None:
    if not keywords:
        return None
    tag_for_keyword = _datadict().tag_for_keyword
    unknown = sorted(k for k in keywords if tag_for_keyword(k) is None)
    return f"not a DICOM keyword: {unknown[0]}" if unknown else None


@dataclass(frozen=True)
class ProfileOptions:
    """The PS3.15 options applied on top of the basic profile."""

    retain_modified_dates: bool = field(
        default=True,
        metadata=doc("Retain Longitudinal Temporal Information with Modified Dates: shift dates (false: remove them)"),
    )
    clean_descriptors: frozenset[str] = field(
        default=DEFAULT_CLEAN_DESCRIPTORS,
        metadata=doc(
            "keywords the Clean Descriptors option keeps, cleaned (others follow the basic profile)",
            check=_keywords_complaint,
        ),
    )
    #: Clean Pixel Data option (113101): burned-in text found and blacked out.
    pixels: PixelOptions = PixelOptions()  # noqa: RUF009 - frozen, immutable default


_SIMPLE = {
    "X": Action.REMOVE,
    "Z": Action.EMPTY,
    "D": Action.DUMMY,
    "K": Action.KEEP,
    "C": Action.CLEAN,
    "U": Action.UID,
}
_TAG = re.compile(r"^\(([0-9A-FX]{4}),([0-9A-FX]{4})\)$")


@lru_cache(maxsize=1)
def load_table() -> tuple[dict[str, Any], ...]:
    """The table rows as shipped (read once per process)."""
    text = resources.files("cxr_dask.data").joinpath(TABLE_RESOURCE).read_text("utf-8")
    return tuple(json.loads(text))


def _data(resource: str) -> Any:
    return json.loads(resources.files("cxr_dask.data").joinpath(resource).read_text("utf-8"))


@dataclass(frozen=True)
class KeptAttribute:
    """One attribute outside the table that is kept, and why."""

    keyword: str
    reason: str
    verbatim: bool  # text kept as it is (coded values), not cleaned as a descriptor


@lru_cache(maxsize=1)
def load_keep_list() -> dict[int, KeptAttribute]:
    """Tag -> kept attribute, from the shipped keep-list (read once per process)."""
    kept: dict[int, KeptAttribute] = {}
    tag_for_keyword = _datadict().tag_for_keyword
    for group in _data(KEEP_LIST_RESOURCE)["groups"]:
        for keyword in group["attributes"]:
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"keep-list: unknown keyword {keyword}")
            kept[tag] = KeptAttribute(keyword, group["reason"], bool(group.get("verbatim")))
    return kept


@dataclass(frozen=True)
class DefinedTerms:
    """The values a coded attribute may keep: listed terms, or a full-match pattern."""

    terms: frozenset[str]
    pattern: re.Pattern[str] | None

    def allows(self, value: str) -> bool:
        value = value.strip(" \x00")
        if not value:
            return True  # an empty value holds nothing
        return value in self.terms or bool(self.pattern and self.pattern.fullmatch(value))


@lru_cache(maxsize=1)
def load_defined_terms() -> dict[int, DefinedTerms]:
    """Tag -> defined terms of the coded attributes that are kept (read once per process)."""
    table: dict[int, DefinedTerms] = {}
    tag_for_keyword = _datadict().tag_for_keyword
    for keyword, entry in _data(DEFINED_TERMS_RESOURCE)["terms"].items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"defined terms: unknown keyword {keyword}")
        pattern = re.compile(entry["pattern"]) if "pattern" in entry else None
        table[tag] = DefinedTerms(frozenset(entry.get("terms", ())), pattern)
    return table


@dataclass(frozen=True)
class Type2Requirement:
    """Attributes emptied instead of removed when ``when`` holds for the data set."""

    when: str | frozenset[str]  # "always", "animal", or SOP Class UIDs
    tags: frozenset[int]
    type: int = 2  # 2: emptied; 1: a dummy value (D), as a zero-length value is invalid

    def applies(self, sop_class: str, animal: bool) -> bool:
        if self.when == "always":
            return True
        if self.when == "animal":
            return animal
        return sop_class in self.when


@lru_cache(maxsize=1)
def load_type2_requirements() -> tuple[Type2Requirement, ...]:
    """The shipped table of Type 2 attributes that IODs need present (read once)."""
    requirements = []
    tag_for_keyword = _datadict().tag_for_keyword
    for entry in _data(TYPE2_REQUIRED_RESOURCE)["requirements"]:
        tags = []
        for keyword in entry["attributes"]:
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"type 2 table: unknown keyword {keyword}")
            tags.append(tag)
        when = entry["when"]
        condition = when if isinstance(when, str) else frozenset(when["sop_class"])
        requirements.append(Type2Requirement(condition, frozenset(tags), int(entry.get("type", 2))))
    return tuple(requirements)


def required_type(keyword: str) -> int | None:
    """1 or 2 when a DX/CR IOD needs the attribute present, else None (Type 3 or absent)."""
    if keyword in TYPE1_KEYWORDS:
        return 1
    if keyword in TYPE2_KEYWORDS:
        return 2
    return None


def resolve_combined(code: str, keyword: str) -> Action:
    """Pick from a combined code (E.1.1) the weakest action that keeps DX/CR valid.

    X/... -> X unless the attribute is Type 1/2 for DX/CR; then D for Type 1 (a zero
    length value would be invalid), Z for Type 2, U for the ``U*`` sequences.
    """
    if code in _SIMPLE:
        return _SIMPLE[code]
    choices = set(code.rstrip("*").split("/"))
    kind = required_type(keyword)
    if kind is None:
        return Action.REMOVE if "X" in choices else Action.EMPTY
    if "U" in choices:
        return Action.UID
    if kind == 1 and "D" in choices:
        return Action.DUMMY
    if "Z" in choices:
        return Action.EMPTY
    return Action.DUMMY


def resolve_row(row: dict[str, Any], options: ProfileOptions, vr: str, keyword: str) -> Action:
    """The final action of one table row under ``options``."""
    if options.retain_modified_dates and row.get("rtnLongModifDatesOpt") == "C":
        if vr in ("DA", "DT"):
            return Action.SHIFT_DATE
        if vr == "TM":
            return Action.KEEP
    if row.get("cleanDescOpt") == "C" and keyword in options.clean_descriptors:
        return Action.CLEAN
    return resolve_combined(row["basicProfile"], keyword)


def _parse_tag(text: str) -> tuple[int, int] | None:
    """``(gggg,eeee)`` with X wildcards -> (mask, value); None for non-tag rows."""
    match = _TAG.match(text.strip())
    if not match:
        return None
    hex_digits = match.group(1) + match.group(2)
    mask = int("".join("0" if c == "X" else "F" for c in hex_digits), 16)
    value = int(hex_digits.replace("X", "0"), 16)
    return mask, value


#: How many decisions a profile remembers before it starts afresh: damaged or fuzzed input
#: can make up any number of tags.
MAX_DECISIONS = 65536


_D = TypeVar("_D")


class Profile:
    """The resolved table for one set of options: exact tags plus wildcard patterns, and
    the decisions the header's walks take under it (``decisions``)."""

    def __init__(self, options: ProfileOptions) -> None:
        self.options = options
        #: Every per-element decision under this profile, remembered as walks meet the
        #: elements: read with ``decisions.get(key)``, filled only by ``remember``. Keys
        #: by job: ``(tag, stored VR)`` -> (VR, action), the walk's (``header.walk``);
        #: ``("action", tag, VR)`` -> Action (``header.decisions``); ``("free text",
        #: tag, VR)`` -> bool; ``("role", tag, VR, inside)`` and ``("pass 1", tag, stored
        #: VR, inside)`` -> pass 1's role (``header.words``); ``("scan", tag, VR bytes,
        #: inside)`` -> the byte walk's role (``deid.wordscan``).
        self.decisions: dict[tuple[Any, ...], Any] = {}
        self.exact: dict[int, Action] = {}
        self.patterns: list[tuple[int, int, Action]] = []
        datadict = _datadict()
        for row in load_table():
            parsed = _parse_tag(row["tag"])
            if parsed is None:  # "(GGGG,EEEE) where GGGG is odd": private, handled by the walk
                continue
            mask, value = parsed
            if mask != 0xFFFFFFFF:
                self.patterns.append((mask, value, resolve_combined(row["basicProfile"], "")))
                continue
            known = datadict.dictionary_has_tag(value)
            vr = datadict.dictionary_VR(value) if known else ""
            keyword = datadict.dictionary_keyword(value) if known else ""
            self.exact[value] = resolve_row(row, options, vr, keyword)

    def remember(self, key: tuple[Any, ...], decision: _D) -> _D:
        """Store ``decision`` under ``key`` and return it; past MAX_DECISIONS, start afresh."""
        decisions = self.decisions
        if len(decisions) >= MAX_DECISIONS:
            decisions.clear()
        decisions[key] = decision
        return decision

    def action_for(self, tag: int) -> Action | None:
        """The table's action for ``tag``, or None when the table does not list it."""
        action = self.exact.get(tag)
        if action is not None:
            return action
        for mask, value, pattern_action in self.patterns:
            if tag & mask == value:
                return pattern_action
        return None


@lru_cache(maxsize=16)
def _build_profile(options: ProfileOptions) -> Profile:
    return Profile(options)


def get_profile(options: ProfileOptions | None = None) -> Profile:
    """The resolved profile for ``options`` (built once per process and options)."""
    return _build_profile(options if options is not None else ProfileOptions())


def action_for(tag: int, options: ProfileOptions | None = None) -> Action | None:
    """The table's resolved action for ``tag`` under ``options`` (None: not in the table)."""
    return get_profile(options).action_for(tag)
