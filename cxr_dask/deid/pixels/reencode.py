"""Store: a cleaned image written back losslessly, and marked as cleaned (PS3.15 113101).

Only changed images come here; an image where nothing was blanked keeps its original
PixelData bytes.
"""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from cxr_dask.dicom.codes import CLEAN_PIXEL_DATA
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

#: Transfer syntaxes a cleaned image is written back into: lossless, with an encoder.
REENCODE_IN_PLACE = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless}
    | {JPEG2000Lossless, JPEGLSLossless}
)
#: Lossless syntaxes without an encoder: written as Explicit VR Little Endian, still lossless.
LOSSLESS_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless, process 14
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
    }
)
#: PS3.3 C.7.6.1.1.5 method names of lossy transfer syntaxes (LossyImageCompressionMethod).
LOSSY_METHOD = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.53": "ISO_10918_1",  # retired JPEG processes, read by dcmdjpeg
    "1.2.840.10008.1.2.4.55": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}
_ENCODING_PLUGIN = {JPEG2000Lossless: "pylibjpeg", RLELossless: "pylibjpeg", JPEGLSLossless: "pyjpegls"}


def store(ds: Dataset, arr: np.ndarray, source_syntax: str) -> None:
    """Write ``arr`` into ``ds``: the source syntax when it is lossless and encodable, else
    Explicit VR Little Endian with the lossy history kept in LossyImageCompression."""
    syntax = UID(source_syntax)
    photometric = str(ds.PhotometricInterpretation).strip()
    bits_stored = int(ds.BitsStored)
    lossy = not (syntax in REENCODE_IN_PLACE or syntax in LOSSLESS_SYNTAXES)
    try:
        if syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
            ds.set_pixel_data(arr, photometric, bits_stored, generate_instance_uid=False)
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.set_pixel_data(arr, photometric, bits_stored, generate_instance_uid=False)
            if syntax in REENCODE_IN_PLACE:
                ds.compress(syntax, arr, encoding_plugin=_ENCODING_PLUGIN[syntax], generate_instance_uid=False)
    except QuarantineError:
        raise
    except Exception:
        raise QuarantineError(Reason.UNENCODABLE_PIXELS, "PixelData") from None
    if lossy:
        # The pixels went through a lossy codec once; say so, whatever the new syntax.
        if str(ds.get("LossyImageCompression", "")).strip() != "01":
            ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds and syntax in LOSSY_METHOD:
            ds.LossyImageCompressionMethod = LOSSY_METHOD[syntax]


def mark_cleaned(ds: Dataset) -> None:
    """BurnedInAnnotation NO and the Clean Pixel Data code, for an image that was cleaned."""
    ds.BurnedInAnnotation = "NO"
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = CLEAN_PIXEL_DATA
    codes = ds.get("DeidentificationMethodCodeSequence") or Sequence([])
    if all(getattr(c, "CodeValue", None) != CLEAN_PIXEL_DATA.value for c in codes):
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
    methods = ds.get("DeidentificationMethod")
    values = list(methods) if isinstance(methods, pydicom.multival.MultiValue) else [str(methods or "")]
    if "clean pixel data" not in values:
        ds.DeidentificationMethod = [v for v in values if v] + ["clean pixel data"]
