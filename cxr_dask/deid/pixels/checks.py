"""Pixel-data checks, in one place: is there pixel data, and is it an image this step reads.

``process`` asks ``require_pixel_data`` before anything else is done to a file's pixels,
and ``decode`` and ``clean`` ask ``check_supported``: a file that fails is quarantined
with its reason (``no_pixel_data``, ``unsupported_pixels``), never written unchecked.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

#: The pixel data elements of PS3.3 (integer, float, double float).
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def require_pixel_data(ds: Dataset) -> None:
    """Quarantine a data set without any pixel data element: there is no image to write."""
    if not any(keyword in ds for keyword in PIXEL_DATA_KEYWORDS):
        raise QuarantineError(Reason.NO_PIXEL_DATA)


def check_supported(ds: Dataset) -> None:
    """Single-frame greyscale only: anything else is quarantined (its text is not searched)."""
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise QuarantineError(Reason.UNSUPPORTED_PIXELS, "SamplesPerPixel")
    if str(ds.get("PhotometricInterpretation", "")).strip() not in ("MONOCHROME1", "MONOCHROME2"):
        raise QuarantineError(Reason.UNSUPPORTED_PIXELS, "PhotometricInterpretation")
