"""Pixel-data checks, in one place: is there pixel data, and is it an image this step reads.

``process`` asks ``require_pixel_data`` before anything else is done to a file's pixels,
and ``decode`` and ``clean`` ask ``check_supported``: a file that fails is quarantined
with its reason (``no_pixel_data``, ``unsupported_pixels``, ``undecodable_pixel_data`` for
an image without its size or depth), never written unchecked.

Read here: greyscale (MONOCHROME1/2), colour with three samples (RGB, YBR_FULL,
YBR_FULL_422 and, inside JPEG 2000, YBR_RCT/YBR_ICT: pydicom's decoders give RGB for all
of them) and PALETTE COLOR; up to ``PixelOptions.max_frames`` frames. Anything else (four
samples, YBR_PARTIAL_*, a photometric interpretation the syntax cannot carry, signed or
over-16-bit colour, more frames) is quarantined, with the attribute in ``detail``: its
text would not be searched.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from cxr_dask.dicom import syntaxes
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

#: The pixel data elements of PS3.3 (integer, float, double float).
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

GREYSCALE = frozenset({"MONOCHROME1", "MONOCHROME2"})
PALETTE = "PALETTE COLOR"
#: Three-sample photometric interpretations pydicom decodes to RGB in any syntax.
COLOUR = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422"})
#: ... and those only a JPEG 2000 codestream carries (its own colour transform, undone by
#: the decoder); in any other syntax they name no known encoding.
J2K_COLOUR = frozenset({"YBR_RCT", "YBR_ICT"})
#: Colour images of at most this many bits a sample (detection works on 8 or 16 bits).
COLOUR_MAX_BITS = 16
#: The image's size and depth: without any of them its pixels cannot be read at all.
IMAGE_PIXEL_KEYWORDS = ("Rows", "Columns", "BitsAllocated", "BitsStored")


def require_pixel_data(ds: Dataset) -> None:
    """Quarantine a data set without any pixel data element: there is no image to write."""
    if not any(keyword in ds for keyword in PIXEL_DATA_KEYWORDS):
        raise QuarantineError(Reason.NO_PIXEL_DATA)


def _int(ds: Dataset, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword, default)
        return default if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        raise QuarantineError(Reason.UNSUPPORTED_PIXELS, keyword) from None


def photometric(ds: Dataset) -> str:
    """PhotometricInterpretation as written, without padding."""
    return str(ds.get("PhotometricInterpretation", "") or "").strip()


def is_colour(ds: Dataset) -> bool:
    """Three samples or a palette: cleaned through the colour path (``cleaning``)."""
    return _int(ds, "SamplesPerPixel", 1) == 3 or photometric(ds) == PALETTE


def frames(ds: Dataset) -> int:
    """NumberOfFrames (1 when absent)."""
    return _int(ds, "NumberOfFrames", 1)


def check_supported(ds: Dataset, max_frames: int = 1) -> None:
    """Greyscale, three-sample colour or palette colour, of at most ``max_frames`` frames
    (a setting: each frame is searched), with its size and depth stated; quarantine
    otherwise."""
    for keyword in IMAGE_PIXEL_KEYWORDS:  # the container check reads these for native data only
        if _int(ds, keyword, 0) <= 0:
            raise QuarantineError(Reason.UNDECODABLE_PIXEL_DATA, keyword)
    samples = _int(ds, "SamplesPerPixel", 1)
    if samples not in (1, 3):
        raise QuarantineError(Reason.UNSUPPORTED_PIXELS, "SamplesPerPixel")
    if not 1 <= frames(ds) <= max_frames:
        raise QuarantineError(Reason.UNSUPPORTED_PIXELS, "NumberOfFrames")
    kind = photometric(ds)
    if samples == 1:
        if kind not in GREYSCALE and kind != PALETTE:
            raise QuarantineError(Reason.UNSUPPORTED_PIXELS, "PhotometricInterpretation")
        return
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if kind not in COLOUR and not (kind in J2K_COLOUR and syntax in syntaxes.JPEG_2000):
        raise QuarantineError(Reason.UNSUPPORTED_PIXELS, "PhotometricInterpretation")
    if _int(ds, "PixelRepresentation", 0) != 0:
        raise QuarantineError(Reason.UNSUPPORTED_PIXELS, "PixelRepresentation")
    if _int(ds, "BitsAllocated", 8) > COLOUR_MAX_BITS:
        raise QuarantineError(Reason.UNSUPPORTED_PIXELS, "BitsAllocated")
