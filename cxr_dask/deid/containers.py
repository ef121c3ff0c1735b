"""Pixel containers: the bytes around and between the pixels, sanitised on every path.

An image whose pixels carry no burned-in text keeps its PixelData bytes (``deid.pixels``),
so whatever else those bytes hold would reach the output untouched: values in the bits
above BitsStored, bytes after the last pixel, comment and application segments (JFIF and
EXIF thumbnails among them) inside JPEG and JPEG-LS codestreams, comment markers in
JPEG 2000 codestreams, a JP2 wrapper's boxes, a trailer after the end-of-image marker, a
whole second frame behind NumberOfFrames 1. ``sanitise`` runs on every file after the
header step and before the burned-in text step, so the detector sees what is written:

- native pixels: bits above BitsStored cleared (unsigned) or set to the sign (signed);
  PixelData cut to the length the header gives (padded to even) when the excess is less
  than a frame, quarantined as ``extra_frames`` when it has room for a whole frame more,
  ``undecodable_pixel_data`` when it is short;
- encapsulated pixels: each frame's codestream parsed marker by marker (no decoding):
  JPEG and JPEG-LS COM and APPn segments removed (APP14 "Adobe" and APP8 "mrfx" are
  kept, rewritten to their fixed-size standard content, because decoders read the
  colour transform from them), JPEG 2000 COM markers removed from the main and
  tile-part headers (tile-part lengths adjusted; a TLM marker, optional and then stale,
  dropped), a JP2 wrapper replaced by its codestream (PS3.5 A.4.4 wants the bare
  codestream), bytes after EOI/EOC dropped, unused offsets of an RLE header zeroed and
  bytes after each RLE segment's runs cut (one segment a sample byte, or the frame does
  not parse); a second codestream after the first, or more fragments than frames (RLE),
  is ``extra_frames``; a codestream that does not parse is ``undecodable_pixels``, broken
  items or fewer frames than announced are ``undecodable_pixel_data``; an encapsulated
  syntax that cannot be parsed here is ``unsupported_pixels``. Changed frames are
  encapsulated again, one fragment per frame, with a basic offset table that matches.

No segment is re-encoded: what is kept is the original entropy-coded data, byte for byte.
Nothing here logs or returns a value read from the pixels: reports hold action names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import UID

from cxr_dask.deid.header import get_value
from cxr_dask.dicom import syntaxes
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
_J2K_SOC = b"\xff\x4f\xff\x51"  # SOC then SIZ: how every JPEG 2000 codestream starts
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
#: APP14 "Adobe": version 100, no flags; the last byte (colour transform) is copied.
_ADOBE = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00"
#: APP8 "mrfx" (CharLS's colour transform for JPEG-LS); the last byte is copied.
_MRFX = b"\xff\xe8\x00\x07mrfx"


@dataclass
class ContainerReport:
    """What was done to one file's pixel container: action names, never values."""

    actions: list[str] = field(default_factory=list)
    segments_removed: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def add(self, action: str) -> None:
        if action not in self.actions:
            self.actions.append(action)

    def as_audit(self) -> dict[str, object]:
        return {"pixel_container": ",".join(self.actions) or "untouched"}


class CodestreamError(ValueError):
    """A codestream that does not parse as its syntax says (never carries its bytes)."""


# --------------------------------------------------------------------------- entry point


def sanitise(ds: Dataset) -> ContainerReport:
    """Sanitise ``ds``'s PixelData in place; quarantine what cannot be made safe.

    Files without PixelData (float pixel data) have no container to sanitise here.
    """
    report = ContainerReport()
    if "PixelData" not in ds:
        return report
    meta = getattr(ds, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", "")) if meta is not None else "")
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        value = ds.PixelData
    except Exception:
        raise QuarantineError(Reason.UNDECODABLE_PIXEL_DATA, "PixelData") from None
    if frames < 1 or not isinstance(value, (bytes, bytearray)):
        raise QuarantineError(Reason.UNDECODABLE_PIXEL_DATA, "NumberOfFrames" if frames < 1 else "PixelData")
    if not syntax.is_encapsulated:
        _sanitise_native(ds, bytes(value), frames, syntax.is_little_endian, report)
        return report
    if not bytes(value[:4]) == b"\xfe\xff\x00\xe0":
        raise QuarantineError(Reason.UNDECODABLE_PIXEL_DATA, "PixelData")  # not encapsulated as the syntax says
    _sanitise_encapsulated(ds, bytes(value), frames, str(syntax), report)
    return report


def sanitised_pixel_data(ds: Dataset) -> bytes:
    """The PixelData ``sanitise`` would leave in ``ds``, computed on a copy (for checks)."""
    copy = Dataset()
    copy.file_meta = ds.file_meta
    for keyword in _READS:
        if keyword in ds:
            setattr(copy, keyword, ds[keyword].value)
    element = ds["PixelData"]
    copy.add_new(0x7FE00010, element.VR, element.value)
    copy["PixelData"].is_undefined_length = element.is_undefined_length
    sanitise(copy)
    return copy.PixelData


#: What ``sanitise`` reads of the header.
_READS = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "NumberOfFrames",
)


# --------------------------------------------------------------------------- native


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = get_value(ds, keyword)
    if value is None or value == "":
        if default is None:
            raise QuarantineError(Reason.UNDECODABLE_PIXEL_DATA, keyword)
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise QuarantineError(Reason.UNDECODABLE_PIXEL_DATA, keyword) from None


def native_lengths(ds: Dataset, frames: int) -> tuple[int, int]:
    """(bytes the header says all frames take, bytes one frame takes), unpadded."""
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    allocated, samples = _int(ds, "BitsAllocated"), _int(ds, "SamplesPerPixel", 1)
    if rows <= 0 or columns <= 0 or samples <= 0 or allocated <= 0:
        raise QuarantineError(Reason.UNDECODABLE_PIXEL_DATA, "Rows")
    frame_bits = rows * columns * samples * allocated
    if str(get_value(ds, "PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        frame_bits = frame_bits * 2 // 3  # two chroma samples shared by each pair of pixels
    return (frame_bits * frames + 7) // 8, (frame_bits + 7) // 8


def _sanitise_native(ds: Dataset, value: bytes, frames: int, little: bool, report: ContainerReport) -> None:
    expected, frame_bytes = native_lengths(ds, frames)
    if len(value) < expected:
        raise QuarantineError(Reason.UNDECODABLE_PIXEL_DATA, "PixelData")  # cut short
    if len(value) - expected >= frame_bytes:
        raise QuarantineError(Reason.EXTRA_FRAMES, "PixelData")  # room for a whole frame more
    padded = expected + expected % 2
    new = value
    if len(value) > padded or (padded > expected and value[expected:padded] != b"\x00"):
        new = value[:expected] + b"\x00" * (padded - expected)
        report.add("trailing_bytes_cut")
    cleared = _clear_high_bits(ds, new, expected, little)
    if cleared is not None:
        new = cleared + new[expected:] if len(new) > expected else cleared
        report.add("high_bits_cleared")
    if new is not value:
        ds.PixelData = new


def _clear_high_bits(ds: Dataset, data: bytes, expected: int, little: bool) -> bytes | None:
    """The pixel bytes with every bit above BitsStored cleared (or the sign, when signed),
    or None when none was set. One vectorised max over a view on the common path."""
    allocated, stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored", 0) or _int(ds, "BitsAllocated")
    if allocated not in (8, 16, 32) or stored >= allocated:
        return None
    if stored <= 0:
        raise QuarantineError(Reason.UNDECODABLE_PIXEL_DATA, "BitsStored")
    high_bit = get_value(ds, "HighBit")
    if high_bit not in (None, "") and int(high_bit) != stored - 1:
        raise QuarantineError(Reason.UNSUPPORTED_PIXELS, "HighBit")  # values not in the low bits
    signed = int(get_value(ds, "PixelRepresentation", 0) or 0) == 1
    order = "<" if little else ">"
    unsigned_type = np.dtype(f"{order}u{allocated // 8}")
    view = np.frombuffer(data, dtype=unsigned_type, count=expected // unsigned_type.itemsize)
    if not view.size:
        return None
    mask = (1 << stored) - 1
    if not signed:
        if int(view.max()) <= mask:
            return None
        return np.bitwise_and(view, unsigned_type.type(mask)).tobytes()
    signed_type = np.dtype(f"{order}i{allocated // 8}")
    values = view.view(signed_type).astype(signed_type.newbyteorder("="))
    shift = allocated - stored
    extended = np.left_shift(values, shift) >> shift  # the sign repeated into the unused bits
    if np.array_equal(extended, values):
        return None
    return extended.astype(signed_type).tobytes()


# --------------------------------------------------------------------------- encapsulated


def _sanitise_encapsulated(ds: Dataset, value: bytes, frames: int, syntax: str, report: ContainerReport) -> None:
    try:
        offsets = _basic_offsets(value)
        items = _fragment_items(value, 8 + 4 * len(offsets))
    except CodestreamError:
        raise QuarantineError(Reason.UNDECODABLE_PIXEL_DATA, "PixelData") from None
    if len(offsets) > frames:
        raise QuarantineError(Reason.EXTRA_FRAMES, "PixelData")  # the offset table lists more frames
    strip: Callable[[bytes | memoryview], tuple[bytes | memoryview, int, int]]
    if syntax == syntaxes.RLE:
        fragments = sum(1 for _, length in items if length)
        if fragments != frames:  # one fragment per frame (PS3.5 A.4.2)
            raise QuarantineError(
                Reason.EXTRA_FRAMES if fragments > frames else Reason.UNDECODABLE_PIXEL_DATA, "PixelData"
            )
        pixels, planes = _rle_geometry(ds)

        def strip(frame: bytes | memoryview) -> tuple[bytes | memoryview, int, int]:
            stream, removed, cut = strip_rle(frame, pixels, planes)
            if cut:
                report.add("trailer_removed")
            return stream, removed, len(frame)

        next_start = _SOI  # (an RLE frame runs to its fragment's end: it has no trailer)
    elif syntax in syntaxes.JPEG or syntax in syntaxes.RETIRED_JPEG or syntax in syntaxes.JPEG_LS:
        strip, next_start = (lambda d: strip_jpeg(d, ls=syntax in syntaxes.JPEG_LS)), _SOI
    elif syntax in syntaxes.JPEG_2000:
        strip, next_start = strip_j2k, _J2K_SOC
    else:
        raise QuarantineError(Reason.UNSUPPORTED_PIXELS, "TransferSyntaxUID")
    first = 8 + 4 * len(offsets)
    if len(items) == frames and all(length for _, length in items):  # one fragment a frame: views, no copies
        view = memoryview(value)
        originals: list[bytes | memoryview] = [view[first + o + 8 : first + o + 8 + n] for o, n in items]
    else:
        try:
            originals = list(generate_frames(value, number_of_frames=frames))
        except Exception:
            raise QuarantineError(Reason.UNDECODABLE_PIXEL_DATA, "PixelData") from None
    if len(originals) != frames or not all(originals):
        raise QuarantineError(Reason.UNDECODABLE_PIXEL_DATA, "PixelData")
    cleaned = []
    for frame in originals:
        try:
            stream, removed, end = strip(frame)
        except CodestreamError:
            raise QuarantineError(Reason.UNDECODABLE_PIXELS, "PixelData") from None  # the codestream does not parse
        trailer = bytes(frame[end:])
        if next_start in trailer or _SOI in trailer:
            raise QuarantineError(Reason.EXTRA_FRAMES, "PixelData")  # a second image behind the first
        if trailer.strip(b"\x00"):
            report.add("trailer_removed")
        if removed:
            report.segments_removed += removed
            report.add("segments_removed")
        cleaned.append(stream)
    consistent = not offsets or (
        offsets[0] == 0
        and len(offsets) == frames
        and offsets == sorted(set(offsets))
        and set(offsets) <= {offset for offset, _ in items}
    )
    if not report.changed and consistent:
        return
    if not consistent:
        report.add("offset_table_rebuilt")
    ds.PixelData = encapsulate([bytes(f) for f in cleaned], has_bot=True)
    element = ds["PixelData"]
    element.is_undefined_length = True
    element.VR = "OB"
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]


def _basic_offsets(value: bytes) -> list[int]:
    length = int.from_bytes(value[4:8], "little")
    if length % 4 or 8 + length > len(value):
        raise CodestreamError("basic offset table")
    return [int.from_bytes(value[8 + i : 12 + i], "little") for i in range(0, length, 4)]


def _fragment_items(value: bytes, start: int) -> list[tuple[int, int]]:
    """(offset from the first fragment's item tag, length) of every fragment; no copies."""
    items, position = [], start
    while position + 8 <= len(value):
        tag = value[position : position + 4]
        if tag == b"\xfe\xff\xdd\xe0":  # sequence delimiter
            break
        length = int.from_bytes(value[position + 4 : position + 8], "little")
        if tag != b"\xfe\xff\x00\xe0" or length == 0xFFFFFFFF or position + 8 + length > len(value):
            raise CodestreamError("bad item")
        items.append((position - start, length))
        position += 8 + length
    return items


# --------------------------------------------------------------------------- RLE


def strip_rle_header(data: bytes | memoryview) -> tuple[bytes | memoryview, int, int]:
    """An RLE frame whose header's unused segment offsets are zero (PS3.5 G.5).

    The 64-byte header holds the segment count and 15 offsets; offsets past the count are
    unused and must be 0, so 56 bytes of text could sit there unseen by any decoder. They
    are zeroed. (Bytes after a segment's last run: ``strip_rle``.)
    """
    if len(data) < 64:
        raise CodestreamError("short RLE header")
    count = int.from_bytes(data[:4], "little")
    offsets = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "little") for i in range(15)]
    if not 1 <= count <= 15 or offsets[0] != 64:
        raise CodestreamError("bad RLE header")
    used = offsets[:count]
    if used != sorted(used) or used[-1] >= len(data):
        raise CodestreamError("bad RLE offsets")
    if not any(offsets[count:]):
        return data, 0, len(data)
    header = bytes(data[: 4 + 4 * count]) + b"\x00" * (60 - 4 * count)
    return header + bytes(data[64:]), 1, len(data)


def _rle_geometry(ds: Dataset) -> tuple[int, int]:
    """(bytes each RLE segment decodes to, segments a frame has): one segment per byte of
    each sample, Rows x Columns bytes each (PS3.5 G.2)."""
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    allocated, samples = _int(ds, "BitsAllocated"), _int(ds, "SamplesPerPixel", 1)
    if rows <= 0 or columns <= 0 or samples <= 0 or allocated <= 0 or allocated % 8:
        raise QuarantineError(Reason.UNSUPPORTED_PIXELS, "BitsAllocated")
    return rows * columns, samples * allocated // 8


def strip_rle(data: bytes | memoryview, pixels: int, planes: int) -> tuple[bytes | memoryview, int, bool]:
    """An RLE frame with nothing after each segment's runs: (frame, header fixes, cut).

    A segment decodes to exactly ``pixels`` bytes (PS3.5 G.3); decoders stop there or
    ignore the rest (pydicom warns of "non-conformant padding"), so bytes after the run
    that completes it, up to the next segment or the frame's end, could hold text that
    nothing shows. Each segment's runs are walked by their headers (no decode) to where it
    is complete; anything after that but one zero pad byte is cut, a last run reaching
    past the image is shortened, and the header's offsets are rewritten. ``cut`` says
    whether anything was. A segment that ends short, or a segment count that is not one
    per byte of each sample, is a ``CodestreamError``.
    """
    stream, removed, _ = strip_rle_header(data)
    count = int.from_bytes(data[:4], "little")
    if count != planes:
        raise CodestreamError("RLE segment count")
    starts = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "little") for i in range(count)]
    bounds = [*starts, len(data)]
    raw = bytes(data)
    contents: list[bytes] = []
    cut = False
    for start, end in pairwise(bounds):
        content_end, last_run = _rle_segment_end(raw, start, end, pixels)
        tail = end - content_end
        if last_run is not None or tail > 1 or (tail == 1 and raw[content_end] != 0):
            cut = True
        contents.append(raw[start:content_end] if last_run is None else last_run)
    if not cut:
        return stream, removed, False
    offsets, position, body = [], 64, []
    for content in contents:
        segment = content + b"\x00" * (len(content) % 2)
        offsets.append(position)
        body.append(segment)
        position += len(segment)
    header = count.to_bytes(4, "little") + b"".join(o.to_bytes(4, "little") for o in offsets)
    return header.ljust(64, b"\x00") + b"".join(body), removed, True


#: Per PackBits header byte: bytes the run takes in the segment, and bytes it decodes to.
_RLE_STEP = tuple(n + 2 if n < 128 else 1 if n == 128 else 2 for n in range(256))
_RLE_OUTPUT = tuple(n + 1 if n < 128 else 0 if n == 128 else 257 - n for n in range(256))


def _rle_segment_end(data: bytes, start: int, end: int, pixels: int) -> tuple[int, bytes | None]:
    """(offset just after the run that completes the segment, None or that segment's bytes
    up to and with its last run shortened when it reaches past ``pixels``).

    One step per run (PackBits, PS3.5 G.3.1): a header byte n < 128 copies the next n + 1
    bytes, n > 128 repeats the next byte 257 - n times, 128 does nothing.
    """
    position, produced, run = start, 0, start
    steps, outputs = _RLE_STEP, _RLE_OUTPUT
    while produced < pixels and position < end:
        run = position
        header = data[position]
        produced += outputs[header]
        position += steps[header]
    if produced < pixels or position > end:
        raise CodestreamError("RLE segment short")
    excess = produced - pixels
    if not excess:
        return position, None
    header = data[run]
    if header < 128:  # a literal run: fewer bytes copied
        last = bytes((header - excess,)) + data[run + 1 : run + 2 + header - excess]
    else:  # a repeat run: fewer repeats (one repeat is written as a literal)
        repeats = 257 - header - excess
        last = bytes((0 if repeats == 1 else 257 - repeats, data[run + 1]))
    return position, data[start:run] + last


# --------------------------------------------------------------------------- JPEG, JPEG-LS


def strip_jpeg(data: bytes | memoryview, *, ls: bool = False) -> tuple[bytes | memoryview, int, int]:
    """A JPEG (or JPEG-LS) codestream without COM and APPn segments, unchanged otherwise.

    Returns (codestream ending with EOI, segments removed or rewritten, offset just after
    EOI in ``data``); with nothing removed, the codestream is a slice of ``data`` itself.
    Segments are walked by their lengths; entropy-coded data after each SOS is copied up
    to the next marker (``_scan_ends``).
    """
    if data[:2] != _SOI:
        raise CodestreamError("no SOI")
    markers: np.ndarray | None = None
    out: list[bytes | memoryview] = [_SOI]
    removed = 0
    position, size = 2, len(data)
    while True:
        if position >= size or data[position] != 0xFF:
            raise CodestreamError("no marker")
        while position < size and data[position] == 0xFF:  # fill bytes before a marker
            position += 1
        if position >= size:
            raise CodestreamError("truncated")
        marker = data[position]
        position += 1
        if marker == 0xD9:
            out.append(_EOI)
            return (b"".join(out) if removed else data[:position]), removed, position
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            out.append(bytes((0xFF, marker)))
            continue
        if marker == 0x00 or marker == 0xD8 or position + 2 > size:
            raise CodestreamError("bad marker")
        length = int.from_bytes(data[position : position + 2], "big")
        if length < 2 or position + length > size:
            raise CodestreamError("bad length")
        segment = bytes(data[position - 2 : position + length])
        position += length
        if marker == 0xFE or 0xE0 <= marker <= 0xEF:
            kept = _kept_application_segment(segment)
            if kept != segment:
                removed += 1
            if kept:
                out.append(kept)
            continue
        out.append(segment)
        if marker == 0xDA:  # SOS: entropy-coded data up to the next marker
            if markers is None:
                markers = _scan_ends(data, ls)
            index = int(np.searchsorted(markers, position))
            if index == len(markers):
                raise CodestreamError("scan without end")
            end = int(markers[index])
            out.append(memoryview(data)[position:end])
            position = end


def _scan_ends(data: bytes | memoryview, ls: bool) -> np.ndarray:
    """Sorted offsets of every 0xFF that starts a marker able to end a scan.

    In JPEG entropy-coded data a 0xFF is followed by 00 (stuffing) or a restart marker
    (D0-D7); in JPEG-LS by a byte below 0x80. Anything else after a 0xFF (fill bytes
    aside) is a marker. One vectorised pass over the frame: a Python or regular-expression
    loop stops at every 0xFF, hundreds of thousands in a large frame.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    ff = np.flatnonzero(raw[:-1] == 0xFF)
    after = raw[ff + 1]
    ends = (after != 0xFF) & ((after < 0xD0) | (after > 0xD7))
    ends &= after >= 0x80 if ls else after != 0x00
    return ff[ends]


def _kept_application_segment(segment: bytes) -> bytes:
    """The part of an APPn or COM segment a decoder needs, in a fixed standard form; b"" for none.

    APP14 "Adobe" tells a decoder whether three components are YCbCr or RGB (without it,
    libjpeg guesses from component ids) and APP8 "mrfx" carries CharLS's colour
    transform for JPEG-LS: each is kept as its fixed-size standard content with the
    transform byte copied, so it holds one byte of choice, not text. Everything else
    (COM, JFIF and its thumbnail, EXIF and its thumbnail, ICC, XMP, vendor segments) goes.
    """
    if segment[:2] == b"\xff\xee" and len(segment) == 16 and segment[4:9] == b"Adobe" and segment[15] <= 2:
        return _ADOBE + segment[15:16]
    if segment[:2] == b"\xff\xe8" and len(segment) == 9 and segment[4:8] == b"mrfx" and segment[8] <= 3:
        return _MRFX + segment[8:9]
    return b""


# --------------------------------------------------------------------------- JPEG 2000

_J2K_COM, _J2K_TLM, _J2K_SOT, _J2K_SOD, _J2K_EOC = 0x64, 0x55, 0x90, 0x93, 0xD9


def strip_j2k(data: bytes | memoryview) -> tuple[bytes | memoryview, int, int]:
    """A JPEG 2000 codestream without COM markers (main and tile-part headers).

    A JP2 file is replaced by the codestream of its ``jp2c`` box (its other boxes, XML and
    UUID ones included, are dropped). Returns (codestream ending with EOC, markers or boxes
    removed, offset just after the codestream in ``data``); with nothing removed, the
    codestream is a slice of ``data`` itself. Tile-parts are walked by their
    Psot lengths; a tile-part whose header lost a COM gets its Psot reduced, and a TLM
    marker (optional tile-part lengths) is dropped when any length changed.
    """
    if data[:12] == _JP2_SIGNATURE:
        start, end = _jp2_codestream(data)
        stream, removed, used = strip_j2k(data[start:end])
        return stream, removed + 1, start + used  # later boxes are the caller's trailer
    if data[:4] != _J2K_SOC:
        raise CodestreamError("no SOC")
    size = len(data)
    main: list[bytes | memoryview] = [data[:2]]
    position, removed = 2, 0
    tlm: list[int] = []
    while True:  # main header, up to the first SOT
        marker, length = _j2k_marker(data, position)
        if marker == _J2K_SOT:
            break
        segment = data[position : position + 2 + length]
        if marker == _J2K_COM:
            removed += 1
        else:
            if marker == _J2K_TLM:
                tlm.append(len(main))
            main.append(segment)
        position += 2 + length
    parts: list[bytes | memoryview] = []
    lengths_changed = False
    while True:
        if data[position : position + 2] == _EOI:
            parts.append(_EOI)
            position += 2
            break
        marker, length = _j2k_marker(data, position)
        if marker != _J2K_SOT or length != 10:
            raise CodestreamError("no SOT")
        start = position
        psot = int.from_bytes(data[start + 6 : start + 10], "big")
        position += 12
        header = [bytearray(data[start:position])]
        dropped = 0
        while True:  # tile-part header, up to SOD
            if data[position : position + 2] == b"\xff\x93":
                position += 2
                break
            marker, length = _j2k_marker(data, position)
            segment = data[position : position + 2 + length]
            position += 2 + length
            if marker == _J2K_COM:
                removed += 1
                dropped += len(segment)
            else:
                header.append(bytearray(segment))
        if psot:
            end = start + psot
        else:  # the last tile-part runs to EOC (no 0xFFD9 pair inside packet data)
            found = bytes(data[position:]).find(_EOI)
            end = position + found if found >= 0 else -1
        if end < position or end > size:
            raise CodestreamError("bad Psot")
        if dropped and psot:
            header[0][6:10] = (psot - dropped).to_bytes(4, "big")
            lengths_changed = True
        parts.extend(bytes(h) for h in header)
        parts.append(b"\xff\x93")
        parts.append(memoryview(data)[position:end])
        position = end
    if lengths_changed and tlm:
        main = [segment for i, segment in enumerate(main) if i not in tlm]
        removed += len(tlm)
    if not removed:
        return data[:position], 0, position
    return b"".join(main) + b"".join(parts), removed, position


def _j2k_marker(data: bytes | memoryview, position: int) -> tuple[int, int]:
    """(marker's second byte, segment length after the marker) at ``position``."""
    if position + 4 > len(data) or data[position] != 0xFF:
        raise CodestreamError("no marker")
    marker = data[position + 1]
    length = int.from_bytes(data[position + 2 : position + 4], "big")
    if length < 2 or position + 2 + length > len(data):
        raise CodestreamError("bad length")
    return marker, length


def _jp2_codestream(data: bytes | memoryview) -> tuple[int, int]:
    """(start, end) of the contiguous codestream box of a JP2 file."""
    position = 0
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        header = 8
        if length == 1:
            length, header = int.from_bytes(data[position + 8 : position + 16], "big"), 16
        elif length == 0:
            length = len(data) - position
        if length < header or position + length > len(data):
            raise CodestreamError("bad box")
        if kind == b"jp2c":
            return position + header, position + length
        position += length
    raise CodestreamError("no codestream box")
