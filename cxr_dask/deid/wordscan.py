"""Pass 1 with word counting, read straight from a header's bytes: one read, no Dataset.

``header.descriptor_words`` walks a Dataset that pydicom read whole: every element
becomes a RawDataElement, every sequence item a Dataset, and that reading cost a third
more than the inventory record's own read (pydicom skipping to 18 tags). Here the
element stream of an Explicit or Implicit VR Little Endian header (deflated too) is
walked once from its bytes, for both: each element's tag, VR and length are unpacked,
its role (``header.words._word_role``: count, deny, walk, nothing) looked up once per (tag,
VR, context) in a dictionary, and only the values with a role are sliced and decoded
(ASCII straight from the bytes, with a cache per value; anything else by pydicom's own
conversion with the file's character set). Values without a role (numbers, UIDs, binary
data, private elements) are skipped by their length. The record's tags are kept as
pydicom's RawDataElements in a small Dataset, so their values are converted by pydicom
exactly as its ``specific_tags`` read gives them.

The words and the record are the same as pydicom's (tests compare both on the
synthetic, bad-input and adversarial corpora, and on damaged copies). Whatever this walk
does not read exactly as pydicom would (big endian, no Part 10 header, a VR that is not
one, an implicit/explicit mismatch, tags out of order or repeated, a character set
inside an item, a sequence stored under another VR, a length that overruns) makes
``scan_header`` return None, and the caller reads the header with pydicom instead: the
slow path, the same result.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import IO, cast

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import VR

from cxr_dask.deid import freetext
from cxr_dask.deid.header.lookups import _PADDING, MAX_DEPTH, MAX_VALUE_BYTES, _dictionary_vr, _keyword, _stored_vr
from cxr_dask.deid.header.words import _IDENTIFYING_SEQUENCE, _word_role
from cxr_dask.deid.profile import Profile, ProfileOptions, get_profile
from cxr_dask.dicom import vrs
from cxr_dask.dicom.values import value_strings
from cxr_dask.storage import HEADER_BLOCK_SIZE


class Unusual(ValueError):
    """Bytes this walk does not read as pydicom would: read the header with pydicom."""


class _Short(Unusual):
    """The walk ran past the bytes read so far: read more, or, at the file's end, Unusual."""


_UNDEFINED = 0xFFFFFFFF
_PREAMBLE = 128
#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_VR_CODES = frozenset(vr.encode("ascii") for vr in VR.__members__)
#: Where pydicom's ``stop_before_pixels`` stops (float, double and integer pixel data).
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_CHARSET = 0x00080005
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_IMPLICIT = struct.Struct("<HHI")
_EXPLICIT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<I")
_MISSING = "\x00not cached"  # a str, so a cached role reads as str | None
#: Bytes of an explicit VR element's header, per VR (PS3.5 7.1.2).
_HEADER_SIZES = {vr: 12 if vr in vrs.LONG_LENGTH_CODES else 8 for vr in _VR_CODES}
#: The role of a sequence inside which every string is identifying (``_IDENTIFYING_SEQUENCE``).
_IDENTIFYING_ITEMS = "identifying sequence"
#: Headers larger than this are left to pydicom (the walk reads them whole first).
_MAX_HEADER = 64 * 1024 * 1024
_MAX_CACHED = 65536
_MAX_CACHED_VALUE = 256


#: Keys per (role, ASCII value bytes): descriptions and names repeat across an archive.
_ASCII_KEYS: dict[tuple[str, bytes], frozenset[str]] = {}


def _ascii_keys(role: str, value: bytes) -> frozenset[str]:
    """The tokens (``descriptor``) or identifying keys of an ASCII value, as
    ``descriptor_words`` takes them: split at backslashes, padding stripped."""
    found = _ASCII_KEYS.get((role, value))
    if found is None:
        texts = [part.strip(_PADDING) for part in value.decode("ascii").split("\\")]
        found = _text_keys(role, texts)
        if len(value) <= _MAX_CACHED_VALUE:  # short values repeat; long texts would fill memory
            if len(_ASCII_KEYS) > _MAX_CACHED:
                _ASCII_KEYS.clear()
            _ASCII_KEYS[(role, value)] = found
    return found


def _text_keys(role: str, texts: list[str]) -> frozenset[str]:
    if role == "descriptor":
        return frozenset().union(*(freetext.keys(text) for text in texts))
    return frozenset().union(*(freetext.deniable_keys(text) for text in texts if text))


@dataclass
class HeaderScan:
    """One header read for pass 1: its words, and the record's elements as pydicom reads them."""

    words: set[str]
    denied: set[str]
    #: The record's tags only (and the character set), with ``file_meta``: what pydicom's
    #: ``specific_tags`` read gives.
    dataset: Dataset
    #: Offset of the pixel data element in the file (the file's size when there is none,
    #: or when the data set is deflated): where pydicom's ``stop_before_pixels`` stops.
    header_end: int
    deflated: bool


def scan_header(
    handle: IO[bytes],
    size: int,
    tags: frozenset[int],
    options: ProfileOptions = ProfileOptions(),  # noqa: B008 - frozen, immutable default
) -> HeaderScan | None:
    """Read the header of the Part 10 file open in ``handle`` (``size`` bytes) once:
    its ``descriptor_words`` and the elements ``tags`` of its top level. None when the
    bytes are anything this walk does not read exactly as pydicom would: the caller then
    reads the file with pydicom. Reads one block, more only for a larger header.
    """
    handle.seek(0)
    data = handle.read(min(size, HEADER_BLOCK_SIZE))
    while True:
        complete = len(data) >= size
        try:
            return _scan(data, complete, size, tags, options)
        except (_Short, struct.error):  # struct.error: unpacking past the end of what was read
            if complete or len(data) >= _MAX_HEADER:
                return None
            more = handle.read(len(data))
            if not more:
                return None
            data += more
        except Exception:
            return None


def _scan(data: bytes, complete: bool, size: int, tags: frozenset[int], options: ProfileOptions) -> HeaderScan:
    syntax, pos, meta = _file_meta(data)
    uid = UID(syntax)
    if not uid.is_transfer_syntax or not uid.is_little_endian:
        raise Unusual("not a known little-endian syntax")  # pydicom guesses, or reads big endian
    deflated, implicit = uid.is_deflated, uid.is_implicit_VR
    if deflated:
        if not complete:
            raise _Short("deflated: the whole file")
        data, pos, complete = zlib.decompress(data[pos:], -zlib.MAX_WBITS), 0, True  # as pydicom does
    walk = _Walk(data, get_profile(options), implicit, complete, tags)
    end = walk.elements(pos, None, 0, False, top=True)
    dataset = Dataset(walk.kept)
    dataset.set_original_encoding(implicit, True, walk.charset)
    dataset.file_meta = FileMetaDataset(meta)
    header_end = size if deflated or end is None else end
    # a file with an oversized text value is quarantined by pass 2 (``oversized_element``):
    # its words are not counted (fewer counts can only remove more text), and that value,
    # megabytes of it, is not tokenised; the file's other identifying keys are denied
    words = set() if walk.oversized else walk.words
    return HeaderScan(words, walk.denied, dataset, header_end, deflated)


def _file_meta(data: bytes) -> tuple[str, int, dict[BaseTag, DataElement | RawDataElement]]:
    """(transfer syntax, offset of the data set, the file meta elements) of a Part 10 file."""
    if len(data) < _PREAMBLE + 4:
        raise _Short("preamble")
    if data[_PREAMBLE : _PREAMBLE + 4] != b"DICM":
        raise Unusual("no Part 10 header")
    pos, syntax = _PREAMBLE + 4, None
    meta: dict[BaseTag, DataElement | RawDataElement] = {}
    while True:
        if pos + 8 > len(data):
            raise _Short("file meta")
        group, element, vr, length = _EXPLICIT.unpack_from(data, pos)
        if group != 2:
            break
        if vr not in _VR_CODES:
            raise Unusual("file meta not explicit")
        start = pos
        if vr in vrs.LONG_LENGTH_CODES:
            (length,) = _LONG.unpack_from(data, pos + 8)
            pos += 12
        else:
            pos += 8
        if length == _UNDEFINED:
            raise Unusual("file meta length")
        if pos + length > len(data):
            raise _Short("file meta value")
        value = data[pos : pos + length]
        tag = BaseTag(group << 16 | element)
        if tag in meta:
            raise Unusual("a repeated file meta element")
        meta[tag] = RawDataElement(tag, vr.decode("ascii"), length, value, start, False, True)
        if element == 0x0010:
            syntax = value.decode("ascii").strip(" \x00")
        pos += length
    if syntax is None:
        raise Unusual("no transfer syntax")
    return syntax, pos, meta


class _Walk:
    """One header's walk: its bytes, encoding, character set and what it found."""

    def __init__(self, data: bytes, profile: Profile, implicit: bool, complete: bool, tags: frozenset[int]) -> None:
        self.data = data
        self.profile = profile
        self.roles = profile.decisions  # ("scan", tag, VR bytes or None, inside) -> role
        self.implicit = implicit
        self.complete = complete
        self.tags = tags
        self.kept: dict[BaseTag, DataElement | RawDataElement] = {}
        self.charset: str | list[str] = default_encoding
        self.decoded = False  # a value decoded with the character set known so far
        self.oversized = False  # a value with a role beyond MAX_VALUE_BYTES
        self.words: set[str] = set()
        self.denied: set[str] = set()

    def _check_encoding(self, pos: int, end: int, top: bool) -> None:
        """pydicom guesses each data set's VR encoding from its first element's VR bytes
        and follows the guess; a guess against the syntax is left to pydicom."""
        data = self.data
        if pos + 6 > end:
            return
        if not top and self.implicit:
            return  # pydicom reads every item of an implicit sequence as implicit
        if data[pos : pos + 4] == b"\xfe\xff\x0d\xe0":
            return
        looks_implicit = not (0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B)
        if looks_implicit != self.implicit:
            raise Unusual("encoding differs from the syntax")

    def elements(
        self, pos: int, end: int | None, depth: int, identifying: bool, counting: bool = True, top: bool = False
    ) -> int | None:
        """Walk the elements of a data set or item from ``pos`` up to ``end`` (None: to the
        item delimiter, or for the top level to the pixel data); returns the offset after
        them (top level: of the pixel data element, None when the file has none). Not
        ``counting``: an item of a sequence with no role, walked only for its end, as
        pydicom parses it."""
        if depth > MAX_DEPTH:
            raise Unusual("too deep")
        data, roles, implicit, tags = self.data, self.roles, self.implicit, self.tags
        size = len(data)
        limit = size if end is None else end
        if limit > size:
            raise _Short("an item past the bytes read")
        self._check_encoding(pos, limit, top)
        previous = -1
        ascii_keys, header_sizes = _ASCII_KEYS, _HEADER_SIZES
        while pos < limit:  # (reading past the bytes read raises struct.error: see scan_header)
            start = pos
            if implicit:
                group, element, length = _IMPLICIT.unpack_from(data, pos)
                vr = None
                pos += 8
            else:
                group, element, vr, length = _EXPLICIT.unpack_from(data, pos)
                if group == 0xFFFE:
                    vr = None
                    (length,) = _LONG.unpack_from(data, pos + 4)
                    pos += 8
                else:
                    header = header_sizes.get(vr)
                    if header is None:
                        raise Unusual("not a VR")
                    if header == 12:
                        (length,) = _LONG.unpack_from(data, pos + 8)
                    pos += header
            tag = group << 16 | element
            if top:
                if tag in _PIXEL_TAGS:
                    return start  # where pydicom's stop_before_pixels stops
            elif tag == _ITEM_END and end is None:
                return pos
            if group == 0xFFFE or tag <= previous or (tag == _CHARSET and not top):
                raise Unusual("a delimiter, tags out of order or repeated, or an item's own character set")
            previous = tag
            role = None
            if counting:
                key = ("scan", tag, vr, identifying)
                role = roles.get(key, _MISSING)
                if role is _MISSING:
                    role = None
                    if not (group & 1 or group == 2):
                        stored = _stored_vr(tag, vr.decode("ascii") if vr is not None else None)
                        role = _word_role(self.profile, tag, stored, identifying)
                        if role == "sequence" and (identifying or _IDENTIFYING_SEQUENCE.search(_keyword(tag))):
                            role = _IDENTIFYING_ITEMS  # its items' strings are all identifying
                    self.profile.remember(key, role)
            if length == _UNDEFINED:
                # pydicom reads these as sequences as it goes (SQ, UN, implicit SQ or
                # unknown); other undefined-length values are left to it
                if not (vr == b"SQ" or vr == b"UN" or (vr is None and _dictionary_vr(tag) in ("SQ", ""))):
                    raise Unusual("an undefined length that is no sequence")
                sequence = role == "sequence" or role == _IDENTIFYING_ITEMS
                if (role is not None and (not sequence or vr == b"UN")) or (top and tag in tags):
                    raise Unusual("a value read as a sequence")
                pos = self.items(pos, None, depth + 1, role == _IDENTIFYING_ITEMS, role is not None)
                continue
            if pos + length > limit:
                raise _Short("a value past the bytes read")
            if top and (tag in tags or tag == _CHARSET):
                self._keep(tag, vr, length, pos, start)
            if role is None:
                pos += length
                continue
            if role == "sequence" or role == _IDENTIFYING_ITEMS:
                if vr is not None and vr != b"SQ":
                    raise Unusual("a sequence stored under another VR")
                pos = self.items(pos, pos + length, depth + 1, role == _IDENTIFYING_ITEMS, True)
                continue
            if length > MAX_VALUE_BYTES:
                self.oversized = True  # pass 2 quarantines the file: not worth tokenising
                pos += length
                continue
            value = data[pos : pos + length]
            pos += length
            found = ascii_keys.get((role, value))
            if found is not None:
                pass
            elif value.isascii() and b"\x1b" not in value:
                # ASCII is itself in every character set; only padding goes at the ends
                found = _ascii_keys(role, value)
            else:
                self.decoded = True
                stored_vr = vr.decode("ascii") if vr is not None else None
                raw = RawDataElement(BaseTag(tag), stored_vr, length, value, 0, implicit, True)
                found = _text_keys(role, value_strings(convert_raw_data_element(raw, encoding=self.charset).value))
            if found:
                (self.words if role == "descriptor" else self.denied).update(found)
        if end is not None:
            if pos != end:
                raise Unusual("an element overruns its item")
            return pos
        if not top or not self.complete:
            raise _Short("no delimiter, or no pixel data, in the bytes read")
        return None

    def _keep(self, tag: int, vr: bytes | None, length: int, pos: int, start: int) -> None:
        """Keep a record's element (or the character set) as pydicom's reader yields it."""
        stored_vr = vr.decode("ascii") if vr is not None else None
        value = self.data[pos : pos + length] if length else cast(bytes | None, empty_value_for_VR(stored_vr, raw=True))
        raw = RawDataElement(BaseTag(tag), stored_vr, length, value, start, self.implicit, True)
        self.kept[raw.tag] = raw
        if tag == _CHARSET:
            if self.decoded:
                raise Unusual("a character set after text")
            self.charset = convert_encodings(convert_raw_data_element(raw).value)

    def items(self, pos: int, end: int | None, depth: int, identifying: bool, counting: bool) -> int:
        """Walk a sequence's items from ``pos`` up to ``end`` (None: to the sequence
        delimiter); returns the offset after the sequence."""
        data = self.data
        if end is not None and end > len(data):
            raise _Short("a sequence past the bytes read")
        while end is None or pos < end:
            if pos + 8 > len(data):
                raise _Short("an item past the bytes read")
            group, element, item_length = _IMPLICIT.unpack_from(data, pos)
            tag = group << 16 | element
            pos += 8
            if tag == _SEQUENCE_END and end is None:
                return pos
            if tag != _ITEM:
                raise Unusual("not an item")
            if item_length == _UNDEFINED:
                pos = self.elements(pos, None, depth, identifying, counting) or 0
            else:
                self.elements(pos, pos + item_length, depth, identifying, counting)
                pos += item_length
        if pos != end:
            raise Unusual("item overruns its sequence")
        return pos


def header_words(
    data: bytes,
    options: ProfileOptions = ProfileOptions(),  # noqa: B008 - frozen, immutable default
) -> tuple[set[str], set[str]] | None:
    """``scan_header``'s words for a file's bytes in memory; None when left to pydicom."""
    import io

    scanned = scan_header(io.BytesIO(data), len(data), frozenset(), options)
    return None if scanned is None else (scanned.words, scanned.denied)
