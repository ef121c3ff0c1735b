"""A fallback decoder for the JPEG processes no registry plugin reads: dcmtk's ``dcmdjpeg``.

pydicom's plugins (pylibjpeg-libjpeg, gdcm, Pillow) read baseline JPEG and most 12-bit
JPEG Extended streams, but gdcm and Pillow refuse 12-bit precision outright, libjpeg
rejects some real 12-bit streams (pydicom's ``JPEG-lossy.dcm``: "misplaced marker") and no
plugin reads the retired spectral selection (…4.53) and progressive (…4.55) processes.
dcmtk's ``dcmdjpeg`` (the Debian ``dcmtk`` package) reads all of them, so a file whose
JPEG the plugins refused is handed to it as a subprocess on the worker: only those files
pay for it (about a process start and a file round trip, see bench/pixels.py).

The process sees a minimal data set (the Image Pixel module and the encapsulated pixel
data, no other attribute, so no header value reaches the temporary files), in a private
temporary folder removed afterwards; a timeout, a non-zero exit or an output that is not
the expected native image fails closed (``undecodable_pixels``).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from cxr_dask import tools
from cxr_dask.dicom import syntaxes
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

#: Seconds one dcmdjpeg call may take (a 2000x2500 12-bit image takes well under one).
DCMDJPEG_TIMEOUT = 60
#: The attributes dcmdjpeg needs to decode, and nothing else of the header.
_PIXEL_MODULE = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "NumberOfFrames",
    "PixelData",
)


def can_decode(ds: Dataset) -> bool:
    """Whether ``ds``'s transfer syntax is one dcmdjpeg reads."""
    meta = getattr(ds, "file_meta", None)
    return meta is not None and str(meta.get("TransferSyntaxUID", "")).strip() in syntaxes.DCMDJPEG_READS


def decode_with_dcmtk(ds: Dataset) -> np.ndarray:
    """The stored values of ``ds``'s JPEG pixel data, decoded by ``dcmdjpeg``; quarantine
    when the tool is missing, fails, times out or returns something else than an image."""
    syntax = UID(str(ds.file_meta.TransferSyntaxUID).strip())
    minimal = Dataset()
    for keyword in _PIXEL_MODULE:
        if keyword in ds:
            minimal[keyword] = ds[keyword]
    minimal.SOPClassUID = SecondaryCaptureImageStorage  # a valid Part 10 object
    minimal.SOPInstanceUID = UID("1.2.3.4")  # placeholder, never written anywhere but the temp folder
    minimal.file_meta = FileMetaDataset()
    minimal.file_meta.TransferSyntaxUID = syntax
    minimal.file_meta.MediaStorageSOPClassUID = minimal.SOPClassUID
    minimal.file_meta.MediaStorageSOPInstanceUID = minimal.SOPInstanceUID
    with tempfile.TemporaryDirectory(prefix="cxr-dcmdjpeg-") as folder:  # mode 0700, removed on exit
        source, target = os.path.join(folder, "in.dcm"), os.path.join(folder, "out.dcm")
        minimal.save_as(source, enforce_file_format=True)
        try:
            tools.run_tool(["dcmdjpeg", "--quiet", source, target], DCMDJPEG_TIMEOUT)
        except tools.ToolFailure as failure:
            detail = {"missing": "dcmdjpeg", "unstartable": "dcmdjpeg", "timeout": "timeout"}.get(failure.kind)
            raise QuarantineError(Reason.UNDECODABLE_PIXELS, detail or "PixelData") from None
        if not os.path.exists(target):
            raise QuarantineError(Reason.UNDECODABLE_PIXELS, "PixelData")
        try:
            decoded = pydicom.dcmread(target)
            if decoded.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian:
                raise ValueError("not decoded")
            arr = decoded.pixel_array
        except Exception:
            raise QuarantineError(Reason.UNDECODABLE_PIXELS, "PixelData") from None
    return arr


#: Byte-order-dependent binary VRs and their word size (OB and UN are byte streams).
_WORD_BYTES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_PIXEL_DATA = 0x7FE00010


def to_little_endian(ds: Dataset) -> None:
    """Re-encode a dataset read as Explicit VR Big Endian as Explicit VR Little Endian.

    pydicom will not change a dataset's byte order when saving. Every element is decoded
    (numbers become values, written back in the new order), binary words are byteswapped
    (pixel data by BitsAllocated, 8-bit samples in OW by word as PS3.5 8.1.1 says, other
    OW/OF/OL/OD/OV by their word size) and the
    transfer syntax becomes Explicit VR Little Endian: a lossless change.
    """

    def convert(dataset: Dataset, bits_allocated: int) -> None:
        for element in dataset:  # iterating decodes each raw element
            if element.VR == "SQ":
                for item in element.value:
                    convert(item, int(item.get("BitsAllocated") or 0))
                continue
            width = _WORD_BYTES.get(str(element.VR))
            if element.tag == _PIXEL_DATA and bits_allocated in (16, 32, 64):
                width = bits_allocated // 8
            elif element.tag == _PIXEL_DATA and element.VR != "OW":
                width = None  # 1- and 8-bit samples in OB are a byte stream in either order
            value = element.value
            if width and isinstance(value, bytes | bytearray) and len(value) % width == 0:
                element.value = np.frombuffer(value, dtype=f">u{width}").astype(f"<u{width}").tobytes()

    convert(ds, int(ds.get("BitsAllocated") or 0))
    ds.set_original_encoding(False, True, ds.original_character_set)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
