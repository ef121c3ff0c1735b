"""Decode: the stored values of an image, as cheaply as they can be had.

Uncompressed pixels are read as a view of the PixelData bytes (``native_view``);
compressed pixels go to the fastest decoder measured, then pydicom's choice, then
dcmtk's ``dcmdjpeg`` (``deid.decoders``); JPEG 2000 can be decoded at reduced
resolution for the screen (``j2k_preview``). What cannot be decoded is quarantined.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.uid import JPEG2000, UID, JPEG2000Lossless, RLELossless

from cxr_dask.deid import decoders
from cxr_dask.deid.pixels import colour
from cxr_dask.deid.pixels.checks import check_supported, frames, is_colour
from cxr_dask.deid.pixels.detection import DETECTION_SIDE
from cxr_dask.dicom import syntaxes
from cxr_dask.dicom.syntaxes import NATIVE_LITTLE_ENDIAN
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

#: Decoding plugins measured fastest at 3000x2500 (bench/pixels.py, one core): pyjpegls
#: 0.17 s vs gdcm 0.35 s (JPEG-LS), pylibjpeg-rle 0.010 s vs pydicom 0.027 s (RLE),
#: pylibjpeg-openjpeg 1.25 s vs gdcm 1.56 s (JPEG 2000).
_FAST_DECODER = {
    **dict.fromkeys(syntaxes.JPEG_LS, "pyjpegls"),
    **dict.fromkeys((RLELossless, JPEG2000Lossless, JPEG2000), "pylibjpeg"),
}
#: JPEG 2000 previews: at most this many resolution levels dropped (see PREVIEW_SENSITIVITY).
PREVIEW_MAX_LEVEL = 1
J2K_SYNTAXES = frozenset({JPEG2000Lossless, JPEG2000})  # what Pillow reduces (not HTJ2K)


def decode(ds: Dataset) -> np.ndarray:
    """The stored pixel values of a single-frame greyscale image; quarantine otherwise
    (colour and several frames go to ``decode_frames``).

    A file whose pixels cannot be decoded cannot be checked for burned-in text, so it is
    never written (fail closed). Native little-endian pixels come back as a read-only
    view of the PixelData bytes (``native_view``): no copy of a 15 MB image per file.
    """
    check_supported(ds)
    if is_colour(ds):  # three samples or indices: ``decode_frames``
        raise QuarantineError(Reason.UNSUPPORTED_PIXELS, "PhotometricInterpretation")
    arr = native_view(ds)
    if arr is None:
        arr = _decode_compressed(ds)
    if arr.ndim != 2 or arr.shape != (int(ds.Rows), int(ds.Columns)):
        raise QuarantineError(Reason.UNDECODABLE_PIXELS, "PixelData")
    return arr


def decode_frames(ds: Dataset, max_frames: int) -> np.ndarray:
    """Every frame of an image, frames first: (frames, rows, columns) stored values or
    palette indices, (frames, rows, columns, 3) RGB for three samples.

    YBR_FULL, YBR_FULL_422 and JPEG 2000's YBR_RCT/YBR_ICT come back as RGB (pydicom
    converts them; the subsampling of YBR_FULL_422 is undone): detection and blanking
    work on what a viewer shows, and a changed image is written as RGB
    (``reencode.store``). Palette indices stay indices (``palette_table`` maps them).

    What does not decode to that shape (a frame short, unsigned colour that is not) is
    quarantined (``undecodable_pixels``).
    """
    check_supported(ds, max_frames)
    count = frames(ds)
    rows, columns = int(ds.Rows), int(ds.Columns)
    arr = native_view(ds) if count == 1 else None
    if arr is None:
        arr = _decode_compressed(ds)
    expected: tuple[int, ...] = (count, rows, columns)
    if int(ds.get("SamplesPerPixel", 1) or 1) == 3:
        expected = (*expected, 3)
    if count == 1:
        arr = arr[np.newaxis]
    if arr.shape != expected or (is_colour(ds) and arr.dtype.kind != "u"):
        raise QuarantineError(Reason.UNDECODABLE_PIXELS, "PixelData")
    return arr


def palette_table(ds: Dataset) -> np.ndarray:
    """RGB for every stored index of a PALETTE COLOR image: row ``i`` is index ``i``'s colour.

    Built with pydicom's ``apply_color_lut`` (normal and segmented tables, first mapped
    value, 8- or 16-bit entries); a table that does not apply is ``undecodable_pixels``.
    """
    bits = int(ds.BitsStored)
    if not 0 < bits <= 16:
        raise QuarantineError(Reason.UNSUPPORTED_PIXELS, "BitsStored")
    indices = np.arange(1 << bits, dtype=np.uint8 if bits <= 8 else np.uint16)
    try:
        table = np.asarray(apply_color_lut(indices, ds))
    except Exception:
        raise QuarantineError(Reason.UNDECODABLE_PIXELS, "RedPaletteColorLookupTableDescriptor") from None
    if table.shape != (1 << bits, 3):
        raise QuarantineError(Reason.UNDECODABLE_PIXELS, "RedPaletteColorLookupTableDescriptor")
    return table


def darkest_index(table: np.ndarray) -> int:
    """The palette index that displays darkest (its luminance): a palette image's black."""
    return int(np.argmin(table.astype(np.float64) @ colour.LUMA))


def _decode_compressed(ds: Dataset) -> np.ndarray:
    """pydicom's decode, with the fastest plugin measured here first (bench/pixels.py).

    pydicom tries its plugins in a fixed order (gdcm before pyjpegls for JPEG-LS, its own
    RLE decoder before pylibjpeg's); the faster one decodes the same values in half the
    time or less. Any plugin failing falls back to pydicom's own choice.
    """
    meta = getattr(ds, "file_meta", None)
    plugin = _FAST_DECODER.get(UID(str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""))
    if plugin is not None:
        try:
            return pixel_array(ds, decoding_plugin=plugin)
        except Exception:
            pass  # plugin missing or refusing this file: pydicom picks another below
    try:
        return ds.pixel_array
    except Exception:
        if not decoders.can_decode(ds):
            raise QuarantineError(Reason.UNDECODABLE_PIXELS, "PixelData") from None
    return decoders.decode_with_dcmtk(ds)  # JPEG the plugins refuse (12-bit, retired processes)


def native_view(ds: Dataset) -> np.ndarray | None:
    """Uncompressed little-endian pixels as a view of the PixelData bytes, or None.

    The view holds the same values as ``ds.pixel_array`` would (pydicom copies the buffer
    and clears unused high bits): it is only used when no stored value has bits above
    BitsStored (one vectorised max) and the data is unsigned or uses every allocated bit.
    Anything else (big endian, odd bit depths, signed with unused bits, short data) is
    left to pydicom.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax not in NATIVE_LITTLE_ENDIAN or "PixelData" not in ds:
        return None
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            return None  # one sample a pixel only (colour is pydicom's to read)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    except (AttributeError, TypeError, ValueError):
        return None
    if allocated not in (8, 16) or not 0 < stored <= allocated or (signed and stored != allocated):
        return None
    data = ds.PixelData
    if not isinstance(data, (bytes, bytearray)):
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    count = rows * columns
    if rows <= 0 or columns <= 0 or len(data) < count * dtype.itemsize:
        return None
    arr = np.frombuffer(data, dtype=dtype, count=count).reshape(rows, columns)
    if not signed and stored < allocated and int(arr.max()) >> stored:
        return None  # unused high bits set: pydicom masks them
    return arr


def photometric_black(ds: Dataset) -> int:
    """The stored value that displays as black: MONOCHROME1's black is its largest value."""
    bits = int(ds.BitsStored)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return high if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1" else low


def j2k_preview(ds: Dataset) -> tuple[np.ndarray, int] | None:
    """A JPEG 2000 image decoded at reduced resolution (Pillow's ``reduce``), and its level.

    Decoding 3000x2500 at half size takes a quarter of the full decode's time. Only for
    single-frame unsigned images at least ``2 * DETECTION_SIDE`` a side; None otherwise or
    when the codestream cannot be read that way (the full decode then decides).
    """
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax not in J2K_SYNTAXES or int(ds.get("PixelRepresentation", 0) or 0) != 0:
        return None
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        level = 0
        while max(rows, columns) >> (level + 1) >= DETECTION_SIDE and level < PREVIEW_MAX_LEVEL:
            level += 1
        if level == 0:
            return None
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        image = Image.open(io.BytesIO(frame))
        image.reduce = level  # type: ignore[method-assign,assignment]  # Jpeg2KImageFile's attribute: decode only the levels needed
        image.load()
        preview = np.asarray(image)
    except Exception:
        return None
    expected = (rows >> level, columns >> level)
    if preview.ndim != 2 or any(abs(a - b) > 1 for a, b in zip(preview.shape, expected, strict=True)):
        return None
    return preview, level
