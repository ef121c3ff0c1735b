"""Decoding without pydicom: the common raw elements, explicit VR sequences and small files
read from their bytes into the very elements pydicom's conversion makes
(tests/test_header_fast.py compares both)."""

from __future__ import annotations

import io
import struct
from collections.abc import MutableSequence
from functools import lru_cache
from typing import IO, Any, BinaryIO, cast

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import (
    tag_for_keyword,
)
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import ENCODED_VR
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.values import convert_string

from cxr_dask.deid.header.lookups import _PIXEL_REPRESENTATION, _UNDEFINED, _dictionary_vr, _key
from cxr_dask.dicom import vrs
from cxr_dask.dicom._pydicom import LUT_DESCRIPTOR_TAGS, read_command_set_elements, read_file_meta_info

#: VRs whose values pydicom decodes with its default encoding whatever the character
#: set, as ``multi_string`` does (``convert_string``, ``convert_UI``): trailing spaces and
#: NULs dropped, split at backslashes. Date and time conversion stays off (pydicom's
#: default), so DA, DT and TM values are plain strings too.
_FAST_VRS = vrs.DEFAULT_CHARSET_STRINGS - {"AE"}  # pydicom strips an AE at both ends


#: The VRs pydicom's reader knows, by their bytes, and those with a 32-bit length.
_ENCODED_VRS = {vr: vr.decode() for vr in ENCODED_VR if len(vr) == 2}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
#: The encodings a data set or item is read with: pydicom keeps one as a str, several as a list.
Encodings = str | MutableSequence[str]


def _empty_raw(vr: str) -> bytes | None:
    """``empty_value_for_VR(vr, raw=True)``: what pydicom's reader stores for an empty
    value (b'', or None for numbers and binary VRs)."""
    return cast("bytes | None", empty_value_for_VR(vr, raw=True))


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
        if len(value) % 2 or not raw.is_little_endian or tag in LUT_DESCRIPTOR_TAGS:
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
    if isinstance(raw, RawDataElement) and tag is not None and raw.VR != "SQ" and not (tag >> 16) & 1:
        elem = _fast_element(tag, raw, ds) if _pydicom_defaults() else None
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


def _item_encodings(ds: Dataset) -> Encodings:
    """The encodings the items of ``ds``'s sequences are read with (``_fast_sequence``)."""
    encodings = ds.original_character_set or ds._character_set or [pydicom.charset.default_encoding]
    return [encodings] if isinstance(encodings, str) else encodings


class _ItemCharset:
    """An item's character set, all ``collect_pending`` reads of the item (``collect_light``)."""

    __slots__ = ("_character_set", "original_character_set")

    def __init__(self, encodings: Encodings) -> None:
        self.original_character_set = self._character_set = encodings


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
    data: bytes, pos: int, end: int | None, encodings: Encodings, offset: int, light: bool = False
) -> tuple[list, int]:
    """A sequence's items as pydicom's ``read_sequence`` builds them (``end`` None:
    undefined length, up to its delimiter); raises ValueError where it would differ.

    ``light``: each item is only its elements (the dict ``_fast_elements`` reads), a
    sequence of undefined length inside it a list of such items: what a removed
    sequence's phrases are collected from (``_Walker.collect_light``) without a Dataset
    per item."""
    items: list[Any] = []  # Datasets, or with ``light`` element dicts
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


def _new_item(elements: dict, encodings: Encodings, undefined: bool, tell: int) -> Dataset:
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
    data: bytes, pos: int, end: int | None, encodings: Encodings, light: bool = False
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
        value = data[pos : pos + length] if length else _empty_raw(vr)
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


def fast_read(handle: IO[bytes]) -> FileDataset | None:
    """``dcmread(fileobj)`` of a small explicit VR little-endian Part 10 file: the same
    FileDataset, its preamble, file meta and command set read by pydicom's own functions
    and its body by ``_fast_dataset``; None (``fileobj`` back where it was) for anything
    else, or anything the body's reader would treat specially, or a customized pydicom."""
    from pydicom.filereader import read_preamble

    fileobj = cast(BinaryIO, handle)  # pydicom's readers take a BinaryIO: any binary file is one
    start = fileobj.tell()
    if not _pydicom_defaults():
        return None
    try:
        preamble = read_preamble(fileobj, False)
        file_meta = _file_meta(fileobj)
        if file_meta is None:
            file_meta = read_file_meta_info(fileobj)
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
            raw: dict[BaseTag, DataElement | RawDataElement] = {
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
        value = data[pos : pos + length] if length else _empty_raw(vr)
        elements[key] = _new_tuple(RawDataElement, (key, vr, length, value, base + pos, False, True, True, False))
        pos += length
    group, element = struct.unpack_from("<HH", data, size)
    if pos != size or group == 2 or group == 0xFFFE or 0x00020000 in elements:
        return None
    return elements


def _command_set(fileobj: BinaryIO) -> Dataset | None:
    """pydicom's ``_read_command_set_elements``, which stops at the first element outside
    group 0000 and rewinds to it: None, the file where it was, when that is the first."""
    head = fileobj.read(8)
    fileobj.seek(-len(head), io.SEEK_CUR)
    if len(head) == 8 and head[:2] != b"\x00\x00":
        return None
    return read_command_set_elements(fileobj)


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
        value = data[pos : pos + length] if length else _empty_raw(vr)
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
