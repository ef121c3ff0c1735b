"""The PS3.15 E.1.1 de-identification markers and research ids, set on a cleaned data set."""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import lru_cache

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from cxr_dask import encode
from cxr_dask.deid.header.lookups import _ACCESSION, _PATIENT_ID, _PATIENT_NAME, _STUDY_ID, _key
from cxr_dask.deid.header.state import FileIdentity
from cxr_dask.deid.profile import (
    ProfileOptions,
)
from cxr_dask.dicom.codes import BASIC_PROFILE, CLEAN_DESCRIPTORS, MODIFIED_DATES, Code

TOOL_NAME = "cxr-dask 0.1"


IMPLEMENTATION_CLASS_UID = encode.IMPLEMENTATION_CLASS_UID


IMPLEMENTATION_VERSION_NAME = encode.IMPLEMENTATION_VERSION_NAME


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
    for (keyword, make), tag in zip(values.items(), _MARKER_TAGS, strict=True):
        if tag in raw and _key(tag) not in ds._dict:
            ds._dict[_key(tag)] = raw[tag]  # all ``ds[tag] = `` does with a public raw element
        else:
            setattr(ds, keyword, make())


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
