"""What the profile decides per element: the action for a (tag, VR), the VR a value is
judged by, and which kept values are valid."""

from __future__ import annotations

import re
from functools import lru_cache

from pydicom.dataelem import DataElement, RawDataElement

from cxr_dask.deid.header.lookups import _PADDING, _dictionary_vr, _element_vr, _keyword, _vr_contradicts_dictionary
from cxr_dask.deid.profile import (
    Action,
    Profile,
    load_defined_terms,
    load_keep_list,
    required_type,
)
from cxr_dask.dicom import vrs
from cxr_dask.dicom.values import tag_name
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason


def _decide(profile: Profile, tag: int, vr: str) -> Action:
    """The action for a public (even group) element, remembered by the profile."""
    key = ("action", tag, vr)
    action = profile.decisions.get(key)
    if action is None:
        action = profile.remember(key, _resolve(profile, tag, vr))
    return action


def walk_decision(profile: Profile, tag: int, raw: DataElement | RawDataElement) -> tuple[str, Action]:
    """The VR the element is read by and its action, remembered by the profile under
    (tag, stored VR): the walk looks it up there first. Raises for a VR that is no VR, or
    one that cannot be read (never remembered)."""
    vr = _read_as(tag, _element_vr(tag, raw))
    return profile.remember((tag, raw.VR), (vr, _decide(profile, tag, vr)))


def _resolve(profile: Profile, tag: int, vr: str) -> Action:
    """``_decide`` worked out."""
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
        raise QuarantineError(Reason.VR_MISMATCH, tag_name(tag))
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


#: Free text outside the Clean Descriptors rows: a code's meaning, an SR TEXT item.
_FREE_TEXT_KEYWORDS = frozenset({"CodeMeaning", "TextValue"})


def is_free_text(profile: Profile, tag: int, vr: str) -> bool:
    """Whether a kept-and-cleaned element is free text that the vocabulary rule cleans: a
    Clean Descriptors row of the table, CodeMeaning, TextValue, or any ST/LT/UT. Other
    cleaned values (codes, versions, model names) keep the phrase layer only: replacing
    their tokens would break codes, and they are not where people write sentences.
    Remembered by the profile."""
    key = ("free text", tag, vr)
    free = profile.decisions.get(key)
    if free is None:
        free = profile.remember(key, _is_free_text(profile, tag, vr))
    return free


def _is_free_text(profile: Profile, tag: int, vr: str) -> bool:
    if vr not in vrs.TEXT or _decide(profile, tag, vr) is not Action.CLEAN:
        return False
    return profile.action_for(tag) is Action.CLEAN or _keyword(tag) in _FREE_TEXT_KEYWORDS or vr in vrs.FREE_TEXT
