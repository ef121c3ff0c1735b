"""The PS3.15 E.1.1 de-identification markers and research ids, set on a cleaned data set."""

from __future__ import annotations

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
from cxr_dask.dicom.codes import BASIC_PROFILE, CLEAN_DESCRIPTORS, METHOD_TEXT, MODIFIED_DATES, Code


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = code.meaning
    return item


def _method(options: ProfileOptions) -> tuple[list[str], list[Code]]:
    """DeidentificationMethod values (LO, <= 64 chars each) and the method codes."""
    codes = [BASIC_PROFILE]
    if options.clean_descriptors:
        codes.append(CLEAN_DESCRIPTORS)
    if options.retain_modified_dates:
        codes.append(MODIFIED_DATES)
    return [METHOD_TEXT[code] for code in codes], codes


_PATIENT_IDENTITY_REMOVED, _DEID_METHOD, _DEID_METHOD_CODES = 0x00120062, 0x00120063, 0x00120064
_LONGITUDINAL_MODIFIED = 0x00280303


def _raw(tag: int, vr: str, value: bytes, implicit: bool) -> RawDataElement:
    """An element as if read from the file (little endian): pydicom writes it back as is
    and decodes it, like any other raw element, when someone reads it."""
    return RawDataElement(BaseTag(tag), None if implicit else vr, len(value), value, 0, implicit, True)


@lru_cache(maxsize=16)
def _raw_markers(options: ProfileOptions, implicit: bool) -> tuple[RawDataElement, ...]:
    """The PS3.15 E.1.1 markers for ``options``, encoded once per process."""
    texts, codes = _method(options)
    items = b""
    for code in codes:
        body = (
            encode.element_bytes(0x00080100, "SH", encode.ascii_text(code.value), implicit)
            + encode.element_bytes(0x00080102, "SH", encode.ascii_text(code.scheme), implicit)
            + encode.element_bytes(0x00080104, "LO", encode.ascii_text(code.meaning), implicit)
        )
        items += encode.item_bytes(body)
    modified = "MODIFIED" if options.retain_modified_dates else "REMOVED"
    return (
        _raw(_PATIENT_IDENTITY_REMOVED, "CS", encode.ascii_text("YES"), implicit),
        _raw(_DEID_METHOD, "LO", encode.ascii_text("\\".join(texts)), implicit),
        _raw(_DEID_METHOD_CODES, "SQ", items, implicit),
        _raw(_LONGITUDINAL_MODIFIED, "CS", encode.ascii_text(modified), implicit),
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
        subject, study = encode.ascii_text(str(identity.subject_id)), encode.ascii_text(str(identity.study_id))
        for tag, vr, value in (
            (_PATIENT_NAME, "PN", encode.ascii_text(f"{identity.subject_id}^")),
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
