"""Pass 1's share of the free-text rule: the words of the kept descriptors and the identifying keys of a header."""

from __future__ import annotations

import re
import struct
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from cxr_dask.deid import freetext
from cxr_dask.deid.header.decisions import is_free_text
from cxr_dask.deid.header.lookups import (
    _PADDING,
    _UNDEFINED,
    MAX_DEPTH,
    _dictionary_vr,
    _element_vr,
    _keyword,
    _plain_ascii,
    _stored_vr,
)
from cxr_dask.deid.header.phrases import _PHRASE_KEYWORDS
from cxr_dask.deid.profile import (
    Profile,
    ProfileOptions,
    get_profile,
)
from cxr_dask.dicom import vrs
from cxr_dask.dicom.values import value_strings
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

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
#: A role not decided yet (a role may be None).
_UNDECIDED = "\x00undecided"


def _word_role(profile: Profile, tag: int, vr: str, identifying: bool) -> str | None:
    """What pass 1 does with an element: count its tokens (``descriptor``), deny them
    (``identifying``), walk it (``sequence``) or nothing. Remembered by the profile."""
    key = ("role", tag, vr, identifying)
    role = profile.decisions.get(key, _UNDECIDED)
    if role is _UNDECIDED:
        role = profile.remember(key, _find_role(profile, tag, vr, identifying))
    return role


def _find_role(profile: Profile, tag: int, vr: str, identifying: bool) -> str | None:
    """``_word_role`` worked out."""
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


def _decoded(item: Dataset, raw: DataElement | RawDataElement) -> DataElement:
    """The element decoded without storing it back (storing re-checks the dataset)."""
    if not isinstance(raw, RawDataElement):
        return raw
    charset = item.original_character_set or item._character_set
    return convert_raw_data_element(raw, encoding=charset, ds=item)


#: One element of a sequence read by ``_raw_elements``: tag, VR (None: implicit), value
#: (bytes, or for a sequence its items, each a list of elements).
_RawElement = tuple[int, str | None, Any]


def _raw_items(data: bytes, pos: int, end: int | None, implicit: bool, depth: int) -> tuple[list, int]:
    """The items of a little-endian sequence value from ``pos`` (``end`` None: undefined
    length, up to the delimiter). Raises ValueError or struct.error on anything unusual:
    the caller then lets pydicom read the sequence."""
    items: list[list[_RawElement]] = []
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
    roles = profile.decisions
    words: set[str] = set()
    denied: set[str] = set()

    def walk(item: Dataset, depth: int, identifying: bool) -> None:
        if depth > MAX_DEPTH:
            raise QuarantineError(Reason.SEQUENCE_TOO_DEEP)
        for key, raw in list(item._dict.items()):
            # the role depends on the tag, the stored VR and the context only: one lookup
            tag = int(key)  # a plain int: pydicom's BaseTag compares in Python
            decision = ("pass 1", tag, raw.VR, identifying)
            role = roles.get(decision, _UNDECIDED)
            if role is _UNDECIDED:
                role = None
                if not ((tag >> 16) & 1 or (tag >> 16) == 2):
                    role = _word_role(profile, tag, _element_vr(tag, raw), identifying)
                profile.remember(decision, role)
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
                texts = value_strings(_decoded(item, raw).value)
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
                texts = value_strings(convert_raw_data_element(raw, encoding=charset).value)
            take(role, texts)

    def take(role: str, texts: list[str]) -> None:
        for text in texts:
            if role == "descriptor":
                words.update(freetext.keys(text))
            elif text:
                denied.update(freetext.deniable_keys(text))

    walk(ds, 0, False)
    return words, denied
