"""Adversarial pixel containers, degenerate image sizes and links.

PHI hidden where a de-identifier that keeps untouched pixel bytes would copy it: text in
bits above BitsStored, bytes after the last pixel, JPEG comment segments and trailers,
JFIF and EXIF thumbnails, JPEG 2000 comment markers, bytes after an RLE segment's runs
(between segments and after the last), a second frame behind
NumberOfFrames 1; images one pixel high or wide; a folder reached through a symbolic link
(with a link loop beside it). Every file's header carries its patient's PHI too (the
base image's), so the planted strings are checked in the header path as well.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

from cxr_dask.adversarial import Case, base_image, save

#: Names and record numbers no synthetic header holds; each case plants its own.
_HIDDEN = (
    ("Wierzbicka Hildegard", "MRN 40817263"),
    ("Okonkwo-Baptiste Ferdinand", "MRN 55102938"),
    ("Szczepanowski Gunnhild", "MRN 61927304"),
    ("Vandersloot Ignatius", "MRN 73018465"),
    ("Kristjansdottir Wilhelmina", "MRN 84620193"),
    ("Abernathy-Quist Leopold", "MRN 92736405"),
    ("Throckmorton Evangeline", "MRN 10394857"),
    ("Przybyszewski Adalbert", "MRN 21485960"),
    ("Ljungqvist-Marchetti Ottoline", "MRN 32596071"),
    ("Featherstonehaugh Cressida", "MRN 48151623"),
)


def _header_phi(ds: Dataset) -> tuple[str, ...]:
    """The base image's own PHI (its patient's name and id), planted in the header."""
    return (str(ds.PatientName).split("^")[0], str(ds.PatientID))


def high_bit_text(rows: int, columns: int, text: str) -> np.ndarray:
    """A boolean mask of ``text`` drawn in Pillow's default font, for hiding in unused bits."""
    canvas = Image.new("L", (columns, rows), 0)
    ImageDraw.Draw(canvas).text((2, 2), text, fill=255)
    return np.asarray(canvas) > 127


def _twelve_bit(seed: int, rows: int, columns: int) -> Dataset:
    ds = base_image(seed, rows=rows, columns=columns)
    arr = ds.pixel_array.astype(np.uint16) >> 4
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = arr.tobytes()
    return ds


def _write_high_bits(folder: Path) -> None:
    name, mrn = _HIDDEN[0]
    ds = _twelve_bit(101, 96, 320)
    arr = np.frombuffer(ds.PixelData, dtype="<u2").reshape(96, 320).copy()
    arr[high_bit_text(96, 320, f"{name} {mrn}")] |= 0x8000  # bit 15: above BitsStored 12
    ds.PixelData = arr.tobytes()
    save(ds, folder / "high_bits.dcm")


def _write_trailing_bytes(folder: Path) -> None:
    name, mrn = _HIDDEN[1]
    ds = base_image(102, rows=64, columns=64)
    extra = f"{name} {mrn} ".encode()
    ds.PixelData = ds.PixelData + extra + b"\x00" * (len(extra) % 2)
    save(ds, folder / "trailing_bytes.dcm")


def jpeg_frame(arr: np.ndarray, **options: object) -> bytes:
    """An 8-bit greyscale baseline JPEG made by Pillow (``comment=``, ``exif=`` passed on)."""
    buffer = io.BytesIO()
    Image.fromarray(arr, "L").save(buffer, format="JPEG", quality=95, **options)
    return buffer.getvalue()


def _eight_bit(ds: Dataset) -> np.ndarray:
    arr = ds.pixel_array
    return (arr >> max(0, int(ds.BitsStored) - 8)).astype(np.uint8)


def jpeg_dataset(seed: int, frames: list[bytes], arr: np.ndarray) -> Dataset:
    """A base image turned into a JPEG baseline file holding ``frames`` as fragments."""
    ds = base_image(seed, rows=arr.shape[0], columns=arr.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate(frames, has_bot=False)
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"
    return ds


def _plain_8bit(seed: int, rows: int = 64, columns: int = 64) -> np.ndarray:
    return _eight_bit(base_image(seed, rows=rows, columns=columns))


def _write_jpeg_comment(folder: Path) -> None:
    name, mrn = _HIDDEN[2]
    arr = _plain_8bit(103)
    frame = jpeg_frame(arr, comment=name.encode()) + mrn.encode() + b" after EOI"
    save(jpeg_dataset(103, [frame + b"\x00" * (len(frame) % 2)], arr), folder / "jpeg_comment.dcm")


def jfif_thumbnail_segment(payload: bytes) -> bytes:
    """An APP0 JFIF segment whose RGB thumbnail holds ``payload`` as its pixel bytes."""
    pixels = payload + b" " * (-len(payload) % 3)
    body = b"JFIF\x00\x01\x02\x00\x00\x01\x00\x01" + bytes((len(pixels) // 3, 1)) + pixels
    return b"\xff\xe0" + (len(body) + 2).to_bytes(2, "big") + body


def _write_jpeg_thumbnail(folder: Path) -> None:
    name, mrn = _HIDDEN[3]
    arr = _plain_8bit(104)
    exif = Image.Exif()
    exif[0x010E] = mrn  # ImageDescription
    frame = jpeg_frame(arr, exif=exif.tobytes())
    app0_length = int.from_bytes(frame[4:6], "big")  # Pillow's own JFIF segment, replaced
    frame = frame[:2] + jfif_thumbnail_segment(name.encode()) + frame[4 + app0_length :]
    save(jpeg_dataset(104, [frame + b"\x00" * (len(frame) % 2)], arr), folder / "jpeg_thumbnail.dcm")


def j2k_comment(text: bytes) -> bytes:
    """A JPEG 2000 COM marker segment (Latin text)."""
    return b"\xff\x64" + (len(text) + 4).to_bytes(2, "big") + b"\x00\x01" + text


def insert_j2k_comments(codestream: bytes, main: bytes, tile: bytes) -> bytes:
    """``codestream`` with a COM in its main header and one in its first tile-part header."""
    siz_length = int.from_bytes(codestream[4:6], "big")
    after_siz = 4 + siz_length
    out = codestream[:after_siz] + j2k_comment(main) + codestream[after_siz:]
    sot = out.index(b"\xff\x90")
    psot = int.from_bytes(out[sot + 6 : sot + 10], "big")
    comment = j2k_comment(tile)
    header = bytearray(out[sot : sot + 12])
    if psot:
        header[6:10] = (psot + len(comment)).to_bytes(4, "big")
    return out[:sot] + bytes(header) + comment + out[sot + 12 :]


def _write_j2k_comment(folder: Path) -> None:
    name, mrn = _HIDDEN[4]
    ds = base_image(105, rows=64, columns=64, syntax=JPEG2000Lossless)
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    frame = insert_j2k_comments(frame, name.encode(), mrn.encode())
    ds.PixelData = encapsulate([frame + b"\x00" * (len(frame) % 2)], has_bot=True)
    ds["PixelData"].is_undefined_length = True
    save(ds, folder / "j2k_comment.dcm")


def _write_jpeg_ls_comment(folder: Path) -> None:
    name, mrn = _HIDDEN[8]
    ds = base_image(112, rows=64, columns=64, syntax=JPEGLSLossless)
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    text = f"{name} {mrn}".encode()
    comment = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
    frame = frame[:2] + comment + frame[2:]
    ds.PixelData = encapsulate([frame + b"\x00" * (len(frame) % 2)], has_bot=False)
    ds["PixelData"].is_undefined_length = True
    save(ds, folder / "jpeg_ls_comment.dcm")


def rle_with_tails(frame: bytes, tails: list[bytes]) -> bytes:
    """An RLE frame with ``tails[i]`` after segment i's runs, offsets rewritten to match:
    decoders stop when a segment is complete, so the bytes are never shown."""
    count = int.from_bytes(frame[:4], "little")
    offsets = [int.from_bytes(frame[4 + 4 * i : 8 + 4 * i], "little") for i in range(count)]
    segments = [frame[a:b] for a, b in zip(offsets, [*offsets[1:], len(frame)], strict=True)]
    body, starts = b"", []
    for segment, tail in zip(segments, tails, strict=True):
        starts.append(64 + len(body))
        body += segment + tail
    header = count.to_bytes(4, "little") + b"".join(o.to_bytes(4, "little") for o in starts)
    out = header.ljust(64, b"\x00") + body
    return out + b"\x00" * (len(out) % 2)


def _write_rle_segment_tails(folder: Path) -> None:
    name, mrn = _HIDDEN[9]
    ds = base_image(113, rows=64, columns=64, syntax=RLELossless)
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    count = int.from_bytes(frame[:4], "little")
    tails = [f" {name} ".encode(), *([b""] * (count - 2)), f" {mrn} ".encode()]  # between and after
    ds.PixelData = encapsulate([rle_with_tails(frame, tails)], has_bot=True)
    ds["PixelData"].is_undefined_length = True
    save(ds, folder / "rle_segment_tails.dcm")


def _write_hidden_frame_native(folder: Path) -> None:
    name, mrn = _HIDDEN[5]
    ds = base_image(106, rows=64, columns=64)
    text = f"{name} {mrn} ".encode()
    second = (text * (len(ds.PixelData) // len(text) + 1))[: len(ds.PixelData)]
    ds.NumberOfFrames = 1
    ds.PixelData = ds.PixelData + second
    save(ds, folder / "hidden_frame_native.dcm")


def _write_hidden_frame_jpeg(folder: Path) -> None:
    name, mrn = _HIDDEN[6]
    arr = _plain_8bit(107)
    first = jpeg_frame(arr)
    second = jpeg_frame(255 - arr, comment=f"{name} {mrn}".encode())
    frames = [f + b"\x00" * (len(f) % 2) for f in (first, second)]
    ds = jpeg_dataset(107, frames, arr)
    ds.NumberOfFrames = 1
    save(ds, folder / "hidden_frame_jpeg.dcm")


def _write_tiny(folder: Path) -> None:
    for seed, (rows, columns) in enumerate(((1, 2048), (2048, 1), (1, 1)), start=108):
        save(base_image(seed, rows=rows, columns=columns), folder / f"tiny_{rows}x{columns}.dcm")


def _write_symlinked(folder: Path) -> None:
    """A file in a folder reached through a link, and a link that loops back to its parent."""
    real = folder / "store"
    save(base_image(111, rows=64, columns=64), real / "behind_link.dcm")
    (folder / "shortcut").symlink_to("store", target_is_directory=True)
    os.symlink("..", real / "loop", target_is_directory=True)


def _case(
    name: str,
    writer: Callable[[Path], None],
    seeds: int | tuple[int, ...],
    hidden: int | None,
    reason: str | None = None,
) -> Case:
    planted: tuple[str, ...] = _HIDDEN[hidden] if hidden is not None else ()
    for seed in (seeds,) if isinstance(seeds, int) else seeds:
        planted += _header_phi(base_image(seed, rows=8, columns=8))
    return Case(name, "containers", tuple(dict.fromkeys(planted)), writer, reason)


CASES: tuple[Case, ...] = (
    _case("high_bits_text", _write_high_bits, 101, 0),
    _case("trailing_bytes", _write_trailing_bytes, 102, 1),
    _case("jpeg_comment_and_trailer", _write_jpeg_comment, 103, 2),
    _case("jpeg_jfif_exif_thumbnail", _write_jpeg_thumbnail, 104, 3),
    _case("j2k_comment", _write_j2k_comment, 105, 4),
    _case("jpeg_ls_comment", _write_jpeg_ls_comment, 112, 8),
    _case("rle_segment_tails", _write_rle_segment_tails, 113, 9),
    _case("hidden_frame_native", _write_hidden_frame_native, 106, 5, "extra_frames"),
    _case("hidden_frame_jpeg", _write_hidden_frame_jpeg, 107, 6, "extra_frames"),
    _case("tiny_images", _write_tiny, (108, 109, 110), None),
    _case("symlinked_folder", _write_symlinked, 111, None),
)
