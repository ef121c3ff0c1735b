"""A de-identified dataset as the buffers of its file, pixel bytes passed through uncopied.

pydicom writes every element through a temporary buffer, so a 15 MB PixelData value is
copied three times and its buffers grown and freed on every file; that cost more than the
header work itself. Here pydicom encodes everything but the pixel data (a few KB), and
the pixel element's value follows as a view of the bytes already in memory. The result
is byte for byte what ``Dataset.save_as(..., enforce_file_format=True)`` writes.
"""

from __future__ import annotations

import io
import struct

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.uid import UID

Buffer = bytes | memoryview

PIXEL_DATA = 0x7FE00010
#: (FFFE,E0DD) with length 0: ends encapsulated (undefined length) pixel data.
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_UNDEFINED = 0xFFFFFFFF


def encode_parts(ds: pydicom.Dataset) -> list[Buffer]:
    """The file ``ds`` makes, as buffers to write one after the other."""
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
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getbuffer()  # a view, not getvalue()'s copy


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
    if max(ds.keys()) != PIXEL_DATA:
        return None
    element = ds.get_item(PIXEL_DATA)
    value = element.value
    if not isinstance(value, bytes) or len(value) % 2:
        return None
    if not syntax.is_implicit_VR and _vr(element) not in ("OB", "OW"):
        return None
    raw = isinstance(element, RawDataElement)
    undefined = element.length == _UNDEFINED if raw else element.is_undefined_length
    if undefined != syntax.is_compressed:
        return None  # save_as re-flags the length from the syntax: let it
    if undefined and not value.startswith(b"\xfe\xff\x00\xe0"):
        return None  # not encapsulated: let pydicom raise its own error
    return element, value, undefined
