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
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from cxr_dask.dicom import syntaxes
from cxr_dask.dicom.codes import CLEAN_PIXEL_DATA, METHOD_TEXT
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

#: Transfer syntaxes a cleaned image is written back into: lossless, with an encoder.
REENCODE_IN_PLACE = syntaxes.NATIVE_LITTLE_ENDIAN | {RLELossless, JPEG2000Lossless, JPEGLSLossless}
_ENCODING_PLUGIN = {JPEG2000Lossless: "pylibjpeg", RLELossless: "pylibjpeg", JPEGLSLossless: "pyjpegls"}


def store(ds: Dataset, arr: np.ndarray, source_syntax: str) -> None:
    """Write ``arr`` into ``ds``: the source syntax when it is lossless and encodable, else
    Explicit VR Little Endian with the lossy history kept in LossyImageCompression.

    A colour array ([frames,] rows, columns, 3: ``decoding.decode_frames``'s RGB, whatever
    the source's YBR form) is written uncompressed as RGB, PlanarConfiguration 0 (pydicom's
    ``set_pixel_data``); a palette image's indices keep their palette and syntax. Frames
    come first in a multi-frame array (NumberOfFrames is set from it).
    """
    syntax = UID(source_syntax)
    colour = int(ds.get("SamplesPerPixel", 1) or 1) == 3
    photometric = "RGB" if colour else str(ds.PhotometricInterpretation).strip()
    bits_stored = int(ds.BitsStored)
    lossy = syntax not in syntaxes.LOSSLESS
    try:
        if syntax in syntaxes.NATIVE_LITTLE_ENDIAN:
            ds.set_pixel_data(arr, photometric, bits_stored, generate_instance_uid=False)
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.set_pixel_data(arr, photometric, bits_stored, generate_instance_uid=False)
            if syntax in REENCODE_IN_PLACE and not colour:
                ds.compress(syntax, arr, encoding_plugin=_ENCODING_PLUGIN[syntax], generate_instance_uid=False)
    except QuarantineError:
        raise
    except Exception:
        raise QuarantineError(Reason.UNENCODABLE_PIXELS, "PixelData") from None
    if lossy:
        # The pixels went through a lossy codec once; say so, whatever the new syntax.
        if str(ds.get("LossyImageCompression", "")).strip() != "01":
            ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds and syntax in syntaxes.LOSSY_METHOD:
            ds.LossyImageCompressionMethod = syntaxes.LOSSY_METHOD[syntax]


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
    text = METHOD_TEXT[CLEAN_PIXEL_DATA]
    if text not in values:
        ds.DeidentificationMethod = [v for v in values if v] + [text]
