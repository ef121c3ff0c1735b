"""Phrase collection from removed values and Clean Descriptors (option 113105) after the walk."""

from __future__ import annotations

import re
import struct
from functools import lru_cache
from typing import cast

from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset

from cxr_dask.deid import freetext
from cxr_dask.deid.freetext import Vocabulary
from cxr_dask.deid.header.decisions import is_free_text
from cxr_dask.deid.header.lookups import (
    _PADDING,
    _PIXEL_REPRESENTATION,
    MAX_DEPTH,
    _delete,
    _dictionary_vr,
    _element_vr,
    _has_code,
    _key,
    _keyword,
    _plain_ascii,
    _stored,
)
from cxr_dask.deid.header.reader import (
    Encodings,
    _fast_items,
    _item_encodings,
    _ItemCharset,
    _note_pixel_representation,
)
from cxr_dask.deid.header.state import _WalkState
from cxr_dask.dicom import vrs
from cxr_dask.dicom.dates import date_digits, date_renderings
from cxr_dask.dicom.values import tag_name, value_strings
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

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
_PN_SPLIT = re.compile(r"[\^=\s]+")
_TWO_DIGITS = re.compile(r"\d\d")
#: How the raw bytes of a removed value split into runs that each phrase contains one of.
#: NUL counts as a separator everywhere: devices pad (and sometimes lead) values with it.
_VALUE_RUNS = re.compile(r"[\\\x00]")
_NAME_RUNS = re.compile(r"[\\^=\s\x00]+")


@lru_cache(maxsize=4096)
def _date_phrases(yyyymmdd: str) -> tuple[str, ...]:
    """A date's renderings as phrases (lower-cased), made once per date."""
    return tuple(rendering.lower() for rendering in date_renderings(yyyymmdd))


def _light_notes(items: list[dict], encodings: Encodings, depth: int, notes: list) -> bool:
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


def _light_nested(raw: RawDataElement, encodings: Encodings, depth: int, notes: list) -> bool:
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


class _Phrases(_WalkState):
    """Phrase collection from removed values, and Clean Descriptors after the walk."""

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
        contains the fully stripped core of one of the runs the raw bytes split into (at
        backslashes, and for names at name separators too): when no such core occurs in
        any descriptor, no phrase can. A date's phrases are renderings of the first 8
        digits of a value, which are 8 adjacent digits of its bytes once dots and dashes
        are dropped (``dates.date_digits``): when no rendering of any such run occurs,
        none of the date's can. None: decode them all. tests/test_header_lazy_phrases.py
        checks this as a property: the output is that of decoding every value.
        """
        joined = "\n".join(descriptor_texts or ())
        for ds, tag, vr, kind, raw in self.pending:
            if descriptor_texts is not None:
                lowered = cast(bytes, raw.value).decode("latin-1").lower()
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
                value = convert_raw_data_element(raw, encoding=charset, ds=cast(Dataset, ds)).value  # reads its charset
            except Exception:
                raise QuarantineError(Reason.UNDECODABLE_VALUE, tag_name(tag)) from None
            self.collect_values(kind, vr, value_strings(value))
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
            values = value_strings(elem.value)
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
            values = value_strings(elem.value)
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
                texts.append(cast(bytes, raw.value).decode("latin-1").lower())
            else:
                texts.append("\\".join(value_strings(self.element(ds, tag).value)).lower())
        return texts


def _lowered(element: DataElement | RawDataElement | None, ascii_only: bool) -> str | None:
    """Text holding every lower-cased value of a kept descriptor as a run, for finding which
    phrases could occur in it: a decoded element's values, or (phrases all ASCII) a raw
    value's bytes without ESC; None when it must be decoded to know."""
    if element is None:
        return None
    value = element.value
    if element.__class__ is DataElement:
        return "\n".join(text.lower() for text in value_strings(value))
    if ascii_only and element.__class__ is RawDataElement and isinstance(value, bytes) and b"\x1b" not in value:
        return value.decode("latin-1").lower()
    return None


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
