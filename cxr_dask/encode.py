"""A de-identified dataset as the buffers of its file, pixel bytes passed through uncopied.

pydicom writes every element through a temporary buffer, so a 15 MB PixelData value is
copied three times and its buffers grown and freed on every file; that cost more than the
header work itself. Here pydicom encodes everything but the pixel data (a few KB), and
the pixel element's value follows as a view of the bytes already in memory. The result
is byte for byte what ``Dataset.save_as(..., enforce_file_format=True)`` writes.

The header itself is written by ``_write_dataset``, a transcription of pydicom's
``write_dataset`` for the one case de-identification produces (little endian, the
encoding and character set the file was read with): an element still raw (read, never
decoded) is written as its tag, VR, length and original value bytes, as pydicom does, but
without pydicom's per-element buffers; every decoded element goes through pydicom's own
``write_data_element``. Any other case (big endian, deflate, a dataset built from
scratch, a changed character set) takes ``save_as`` itself.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from functools import lru_cache
from typing import Any, cast

import pydicom
from pydicom import config
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset, writers
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import CUSTOMIZABLE_CHARSET_VR, VR

from cxr_dask.dicom import vrs

Buffer = bytes | memoryview

PIXEL_DATA = 0x7FE00010
#: A fixed UUID-derived UID for this implementation (PS3.5 B.2).
IMPLEMENTATION_CLASS_UID = "2.25.197761165848946462553633906214575003321"
IMPLEMENTATION_VERSION_NAME = "CXR_DASK_0_1"
_META_VERSION = b"\x00\x01"  # PS3.10 7.1: version 1 of the File Meta Information
#: The group length (written by the writer) and the elements ``standard_file_meta`` sets.
_STANDARD_META = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013})
#: (FFFE,E0DD) with length 0: ends encapsulated (undefined length) pixel data.
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_UNDEFINED = 0xFFFFFFFF


def standard_file_meta(ds: pydicom.Dataset) -> FileMetaDataset:
    """A file meta built afresh (PS3.10 7.1), never copied: the standard's elements only,
    with the standard version, this implementation's identity, the SOP class and instance
    of the data set itself and the transfer syntax of ``ds``'s current meta. Nothing else
    of the input's group 2 (its version bytes, AE titles, private information) survives."""
    old = getattr(ds, "file_meta", None)
    syntax = str(_get(old, "TransferSyntaxUID", "") or "").strip() if old is not None else ""
    meta = FileMetaDataset()
    for tag, vr, value in (
        (0x00020001, "OB", _META_VERSION),
        (0x00020002, "UI", str(_get(ds, "SOPClassUID", "") or "").strip()),
        (0x00020003, "UI", str(_get(ds, "SOPInstanceUID", "") or "").strip()),
        (0x00020010, "UI", syntax),
        (0x00020012, "UI", IMPLEMENTATION_CLASS_UID),
        (0x00020013, "SH", IMPLEMENTATION_VERSION_NAME),
    ):
        if value:  # values known to be valid: stored as pydicom converts them, unchecked
            converted = UID(cast(str, value)) if vr == "UI" else value
            element = DataElement(tag, vr, converted, validation_mode=config.IGNORE, already_converted=True)
            meta._dict[BaseTag(tag)] = element
    return meta


@lru_cache(maxsize=256)
def _tag_for(keyword: str) -> BaseTag | None:
    """The keyword's tag, as an int: a data set's elements are keyed by BaseTag, which
    equals and hashes as its int (pydicom types the keys BaseTag)."""
    return cast("BaseTag | None", tag_for_keyword(keyword))


def _get(ds: Dataset, keyword: str, default: object = None) -> object:
    """``ds.get(keyword, default)``: an element already decoded is looked up by its tag,
    without pydicom's attribute lookup."""
    tag = _tag_for(keyword)
    elem = ds._dict.get(tag) if tag is not None else None
    if elem.__class__ is DataElement:
        return elem.value
    return ds.get(keyword, default)


def _is_standard(ds: pydicom.Dataset) -> bool:
    """The file meta is what ``standard_file_meta`` would build (it was built for ``ds``)."""
    meta = ds.file_meta
    if not set(meta._dict) <= _STANDARD_META or _get(meta, "FileMetaInformationVersion") != _META_VERSION:
        return False
    return (
        _get(meta, "MediaStorageSOPInstanceUID") == _get(ds, "SOPInstanceUID")
        and _get(meta, "MediaStorageSOPClassUID") == _get(ds, "SOPClassUID")
        and _get(meta, "ImplementationClassUID") == IMPLEMENTATION_CLASS_UID
        and _get(meta, "ImplementationVersionName") == IMPLEMENTATION_VERSION_NAME
    )


def encode_parts(ds: pydicom.Dataset) -> list[Buffer]:
    """The file ``ds`` makes, as buffers to write one after the other (its file meta
    rebuilt by ``standard_file_meta`` first, whichever writer runs)."""
    if getattr(ds, "file_meta", None) is not None and not _is_standard(ds):
        ds.file_meta = standard_file_meta(ds)
    passthrough = _passthrough_pixels(ds)
    if passthrough is None:
        return [_save(ds)]
    element, value, undefined = passthrough
    del ds[PIXEL_DATA]
    try:
        header = _save(ds)
    finally:
        ds[PIXEL_DATA] = element
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    length = _UNDEFINED if undefined else len(value)
    if syntax.is_implicit_VR:
        head = struct.pack("<HHI", 0x7FE0, 0x0010, length)
    else:
        head = struct.pack("<HH2sHI", 0x7FE0, 0x0010, _vr(element).encode(), 0, length)
    parts: list[Buffer] = [header, head, memoryview(value)]
    if undefined:
        parts.append(_SEQUENCE_DELIMITER)
    return parts


def size(parts: list[Buffer]) -> int:
    return sum(memoryview(part).nbytes for part in parts)


def _save(ds: pydicom.Dataset) -> memoryview:
    fast = _fast_save(ds)
    if fast is not None:
        return fast
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getbuffer()  # a view, not getvalue()'s copy


#: VRs with a value writer of their own: not SQ, not ambiguous ('US or SS').
_PLAIN_VRS = frozenset(str(vr) for vr in writers if vr != "SQ" and " or " not in str(vr))
_META_GROUP_LENGTH = cast(BaseTag, 0x00020000)
_SPECIFIC_CHARACTER_SET = cast(BaseTag, 0x00080005)  # an int, looked up among BaseTag keys
#: An item tag (FFFE,E000), as written.
ITEM = b"\xfe\xff\x00\xe0"
_ITEM_DELIMITER = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
_pack_tag_ul = struct.Struct("<HHI").pack
_pack_tag_vr_us = struct.Struct("<HH2sH").pack
_pack_tag_vr_ul = struct.Struct("<HH2sHI").pack
_pack_ul = struct.Struct("<I").pack


def element_bytes(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    """One little-endian element with a defined length, as pydicom's writer lays it out:
    tag, VR (explicit VR only) and length, then ``value`` (already padded to even length).
    The writer below packs the same headers inline (``_raw_header``): one call fewer per
    element."""
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return _pack_tag_ul(group, element, len(value)) + value
    if vr in vrs.LONG_LENGTH:
        return _pack_tag_vr_ul(group, element, vr.encode(), 0, len(value)) + value
    return _pack_tag_vr_us(group, element, vr.encode(), len(value)) + value


def item_bytes(body: bytes) -> bytes:
    """A sequence item of defined length holding ``body`` (its elements' bytes)."""
    return ITEM + _pack_ul(len(body)) + body


def ascii_text(text: str) -> bytes:
    """An ASCII string value (not UI) as pydicom writes it: padded to even length with a space."""
    data = text.encode("ascii")
    return data + b" " if len(data) % 2 else data


def _fast_save(ds: pydicom.Dataset) -> memoryview | None:
    """``save_as(enforce_file_format=True)``'s bytes for a little-endian file written in the
    encoding it was read with, or None when ``save_as`` itself must do it.

    Mirrors ``dcmwrite``: the same checks (in the cases it does not raise for), the same
    File Meta (pydicom writes it), the same body element by element.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None or any(tag >> 16 in (0, 2) for tag in ds._dict):
        return None  # dcmwrite raises, or makes up a file meta: let it
    syntax = _get(meta, "TransferSyntaxUID")
    if syntax is None or not isinstance(syntax, UID) or syntax.is_private or not syntax.is_transfer_syntax:
        return None
    if not syntax.is_little_endian or syntax == DeflatedExplicitVRLittleEndian:
        return None
    encoding = (syntax.is_implicit_VR, True)
    if ds.original_encoding != encoding or ds.original_character_set != _encodings(ds):
        return None  # pydicom would re-encode raw elements: let it
    if PIXEL_DATA in ds._dict:
        return None  # dcmwrite re-flags PixelData's length (decoding it): let it
    preamble = getattr(ds, "preamble", None)
    if preamble and len(preamble) != 128:
        return None  # dcmwrite raises
    meta_class = _get(meta, "MediaStorageSOPClassUID")
    ds_class = _get(ds, "SOPClassUID")
    meta_instance = _get(meta, "MediaStorageSOPInstanceUID")
    ds_instance = _get(ds, "SOPInstanceUID")
    if meta_class is None or (ds_class and ds_class != meta_class):
        return None  # dcmwrite writes the dataset's UID into (a copy of) the meta: let it
    if meta_instance is None or (ds_instance and ds_instance != meta_instance):
        return None
    group_length = meta._dict.get(_META_GROUP_LENGTH)
    if group_length is not None and (group_length.__class__ is not DataElement or group_length.VR != "UL"):
        return None
    # adds what a conformant meta must hold and is missing, as dcmwrite does to its copy
    validate_file_meta(meta, enforce_standard=True)
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = encoding
    fp.write(preamble or b"\x00" * 128)
    fp.write(b"DICM")
    # write_file_meta_info: explicit VR little endian, led by the group's length
    elements = DicomBytesIO()
    elements.is_implicit_VR, elements.is_little_endian = False, True
    _write_dataset(elements, meta, "iso8859", skip=_META_GROUP_LENGTH)
    fp.write(_pack_tag_vr_us(2, 0, b"UL", 4) + _pack_ul(elements.tell()))
    fp.write(elements.getvalue())
    _write_dataset(fp, ds, "iso8859")
    return cast(io.BytesIO, fp.parent).getbuffer()  # DicomBytesIO writes into a BytesIO


def _write_dataset(
    fp: DicomBytesIO, dataset: Dataset, parent_encoding: str | list[str], skip: int | None = None
) -> None:
    """pydicom's ``write_dataset``: raw elements written straight from their bytes, decoded
    ones by pydicom's own value writers.

    A dataset read in another encoding or character set than ``fp``'s is handed to pydicom
    whole, which converts and corrects its elements; so is an item built in memory, unless
    it holds only plain decoded elements (no raw, sequence or ambiguous-VR element), for
    which pydicom's conversion and correction change nothing.
    """
    implicit = fp.is_implicit_VR
    elements = dataset._dict
    as_read = (implicit, fp.is_little_endian) == dataset.original_encoding and (
        dataset.original_character_set == _encodings(dataset)
    )
    if not as_read and not all(e.__class__ is DataElement and e.VR in _PLAIN_VRS for e in elements.values()):
        write_dataset(fp, dataset, parent_encoding)
        return
    encodings = convert_encodings(_character_set(dataset, parent_encoding) or [default_encoding])
    write = fp.write
    # plain ints: pydicom's BaseTag compares in Python, ints in C
    for tag, elem in sorted([(int(tag), elem) for tag, elem in elements.items()]):
        if (tag & 0xFFFF == 0 and tag >> 16 > 6) or tag == skip:
            continue  # retired group lengths are not written (PS3.5 7.2)
        if elem.__class__ is RawDataElement:
            header = _raw_header(tag, elem, implicit)
            if header is not None:
                write(header)
                write(elem.value)  # type: ignore[arg-type]  # bytes: _raw_header checked it
                if elem.length == _UNDEFINED:
                    write(_SEQUENCE_DELIMITER)
                continue
        elif elem.__class__ is DataElement:
            if elem.VR == "SQ":
                _write_sequence(fp, tag, elem, encodings)
                continue
            if _write_decoded(fp, tag, elem, encodings, implicit):
                continue
        write_data_element(fp, dataset.get_item(tag), encodings)


def _encodings(dataset: Dataset) -> str | list[str]:
    """``dataset._character_set``: its own SpecificCharacterSet's encodings, else its
    parent's; one already decoded is looked up by its tag, not through ``Dataset.get``."""
    elem = dataset._dict.get(_SPECIFIC_CHARACTER_SET)
    if elem is None:
        return dataset._parent_encoding
    if not isinstance(elem, DataElement):
        return dataset._character_set  # decodes and stores it, as pydicom does
    return convert_encodings(elem.value)


def _character_set(dataset: Dataset, parent_encoding: str | list[str]) -> Any:
    """``dataset.get("SpecificCharacterSet", parent_encoding)``, looked up by its tag."""
    elem = dataset._dict.get(_SPECIFIC_CHARACTER_SET)
    if elem is None:
        return parent_encoding
    if elem.__class__ is DataElement:
        return elem.value
    return dataset.get("SpecificCharacterSet", parent_encoding)


def _write_decoded(fp: DicomBytesIO, tag: int, elem: DataElement, encodings: list[str], implicit: bool) -> bool:
    """A decoded, non-sequence element as ``write_data_element`` writes it; False (nothing
    written) for the cases it treats specially: pixel data, a buffered value, an unknown or
    ambiguous VR, a value too long for a 16-bit length."""
    vr = elem.VR
    if tag == PIXEL_DATA or vr not in _PLAIN_VRS:
        return False
    value = _common_value(vr, elem.value, encodings)
    if value is None and elem.is_buffered:
        return False
    if value is None:
        value = _ascii_string(vr, elem.value, encodings) if not elem.is_empty else b""
    if value is None:
        buffer = DicomBytesIO()
        buffer.is_little_endian = fp.is_little_endian
        buffer.is_implicit_VR = implicit
        if not elem.is_empty:
            fn, param = cast("tuple[Callable[..., None], Any]", writers[cast(VR, vr)])
            if vr in CUSTOMIZABLE_CHARSET_VR:
                fn(buffer, elem, encodings=encodings)
            elif param is not None:
                fn(buffer, elem, param)
            else:
                fn(buffer, elem)
        value = buffer.getvalue()
    undefined = elem.is_undefined_length
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        header = _pack_tag_ul(group, element, _UNDEFINED if undefined else len(value))
    elif vr in vrs.LONG_LENGTH:
        header = _pack_tag_vr_ul(group, element, vr.encode(), 0, _UNDEFINED if undefined else len(value))
    elif undefined or len(value) > 0xFFFF:
        return False
    else:
        header = _pack_tag_vr_us(group, element, vr.encode(), len(value))
    fp.write(header)
    fp.write(value)
    if undefined:
        fp.write(_SEQUENCE_DELIMITER)
    return True


#: VRs pydicom writes with ``write_string`` (DA, DT, TM: when their values are strings),
#: encoded in the default encoding whatever the character set; UI is padded with NUL.
#: Text VRs (``write_text``), and the first encodings in which ``encode_string`` writes
#: ASCII text as itself (plain codecs: no custom encoder, no escape sequence added).
_PLAIN_ENCODINGS = frozenset({"iso8859", "latin_1", "UTF8", "utf_8", "ascii"})


_pack_us = struct.Struct("<H").pack


def _common_value(vr: str, value: object, encodings: list[str]) -> bytes | None:
    """The value bytes of the commonest decoded values, as pydicom's writer makes them: a
    string (a UID too) or strings (``_ascii_string``), empty or not, and US numbers; None
    for anything else."""
    kind = value.__class__
    if kind is str or kind is UID:
        return _ascii_string(vr, value, encodings) if value else b""  # '': VM 0, nothing written
    if vr == "US":
        try:
            if kind is int:
                return _pack_us(value)
            if kind is list or kind is MultiValue:
                numbers = cast("list[int]", value)
                return struct.pack(f"<{len(numbers)}H", *numbers) if all(v.__class__ is int for v in numbers) else None
        except struct.error:
            return None  # out of range: pydicom's writer raises its own error
    return None


def _ascii_string(vr: str, value: object, encodings: list[str]) -> bytes | None:
    """The value bytes pydicom's writer makes of ASCII string values of the VRs above
    (values joined by backslashes, padded to even length), or None: the writer runs."""
    if vr in vrs.DEFAULT_CHARSET_STRINGS:
        pad = "\x00" if vr == "UI" else " "
    elif vr in vrs.TEXT and encodings and encodings[0] in _PLAIN_ENCODINGS:
        pad = " "
    else:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, (MultiValue, list, tuple)) and all(isinstance(item, str) for item in value):
        text = "\\".join(value)
    else:
        return None
    if not text.isascii():
        return None
    if len(text) % 2:
        text += pad
    return text.encode("ascii")


def _raw_header(tag: int, elem: RawDataElement, implicit: bool) -> bytes | None:
    """Tag, VR and length of a raw element as ``write_data_element`` writes them, or None
    for the cases it treats specially (pixel data, a deferred value, an odd VR or length)."""
    value = elem.value
    if not isinstance(value, bytes) or tag == PIXEL_DATA:
        return None
    undefined = elem.length == _UNDEFINED
    length = _UNDEFINED if undefined else len(value)
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return _pack_tag_ul(group, element, length)
    vr = elem.VR
    if not isinstance(vr, str) or len(vr) != 2 or not vr.isascii():
        return None
    if vr in vrs.LONG_LENGTH:
        return _pack_tag_vr_ul(group, element, vr.encode(), 0, length)
    if undefined or length > 0xFFFF:
        return None  # pydicom's own handling (a 16-bit length that cannot hold it)
    return _pack_tag_vr_us(group, element, vr.encode(), length)


def _write_sequence(fp: DicomBytesIO, tag: int, elem: DataElement, encodings: list[str]) -> None:
    """A decoded SQ element as ``write_data_element`` + ``write_sequence_item`` write it."""
    body = DicomBytesIO()
    body.is_implicit_VR, body.is_little_endian = fp.is_implicit_VR, fp.is_little_endian
    if not elem.is_empty:
        for item in elem.value:
            body.write(ITEM)
            length_at = body.tell()
            body.write(b"\xff\xff\xff\xff")
            _write_dataset(body, item, encodings)
            if getattr(item, "is_undefined_length_sequence_item", False):
                body.write(_ITEM_DELIMITER)
            else:
                end = body.tell()
                body.seek(length_at)
                body.write(_pack_ul(end - length_at - 4))
                body.seek(end)
    undefined = elem.is_undefined_length
    length = _UNDEFINED if undefined else body.tell()
    group, element = tag >> 16, tag & 0xFFFF
    if fp.is_implicit_VR:
        fp.write(_pack_tag_ul(group, element, length))
    else:
        fp.write(_pack_tag_vr_ul(group, element, b"SQ", 0, length))
    fp.write(body.getvalue())
    if undefined:
        fp.write(_SEQUENCE_DELIMITER)


def _vr(element: DataElement | RawDataElement) -> str:
    return str(element.VR or "")


def _passthrough_pixels(ds: pydicom.Dataset) -> tuple[DataElement | RawDataElement, bytes, bool] | None:
    """PixelData's element, bytes and undefined-length flag when they can be passed through.

    Anything unusual (pixel data not last, big endian, deflated, a value that is not
    plain even-length bytes, an explicit VR other than OB/OW) takes pydicom's own path.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta or PIXEL_DATA not in ds:
        return None
    syntax = UID(str(meta.TransferSyntaxUID))
    if not syntax.is_little_endian or syntax.is_deflated:
        return None
    if max(ds._dict, key=int) != PIXEL_DATA:  # int keys: BaseTag compares in Python
        return None
    element = ds.get_item(PIXEL_DATA)
    value = element.value
    if not isinstance(value, bytes) or len(value) % 2:
        return None
    if not syntax.is_implicit_VR and _vr(element) not in ("OB", "OW"):
        return None
    undefined = element.length == _UNDEFINED if isinstance(element, RawDataElement) else element.is_undefined_length
    if undefined != syntax.is_compressed:
        return None  # save_as re-flags the length from the syntax: let it
    if undefined and not value.startswith(b"\xfe\xff\x00\xe0"):
        return None  # not encapsulated: let pydicom raise its own error
    return element, value, undefined
