"""Transfer syntaxes by family and by what the pipeline does with them (PS3.5 Annex A),
by pydicom's names where pydicom has one."""

from __future__ import annotations

from pydicom import uid
from pydicom.uid import UID

#: PixelData that is little-endian native bytes once pydicom has read the file (a deflated
#: file is inflated as a whole on reading).
NATIVE_LITTLE_ENDIAN = frozenset(
    {uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian}
)
#: JPEG (ISO 10918) in the syntaxes still current.
JPEG = frozenset(uid.JPEGTransferSyntaxes)
#: The retired JPEG processes (4.52-4.56, 4.58-4.66): the same marker syntax as ``JPEG``.
RETIRED_JPEG = frozenset(UID(f"1.2.840.10008.1.2.4.{n}") for n in (*range(52, 57), *range(58, 67)))
JPEG_SPECTRAL_SELECTION = UID("1.2.840.10008.1.2.4.53")  # processes 6 & 8 (retired)
JPEG_FULL_PROGRESSION = UID("1.2.840.10008.1.2.4.55")  # processes 10 & 12 (retired)
JPEG_LS = frozenset(uid.JPEGLSTransferSyntaxes)
#: JPEG 2000 and High-Throughput JPEG 2000: one codestream syntax.
JPEG_2000 = frozenset(uid.JPEG2000TransferSyntaxes)
RLE = uid.RLELossless

#: The JPEG processes dcmtk's ``dcmdjpeg`` decodes (dcmjpeg's registered decoders):
#: 1, 2 & 4, 6 & 8, 10 & 12, 14 and 14 SV1.
DCMDJPEG_READS = frozenset(
    {
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        JPEG_SPECTRAL_SELECTION,
        JPEG_FULL_PROGRESSION,
        uid.JPEGLossless,
        uid.JPEGLosslessSV1,
    }
)

#: Syntaxes whose pixels are exactly the stored values (no lossy codec on the way).
LOSSLESS = NATIVE_LITTLE_ENDIAN | {
    uid.ExplicitVRBigEndian,
    RLE,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEG2000Lossless,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
}

#: PS3.3 C.7.6.1.1.5 method names of lossy syntaxes (LossyImageCompressionMethod).
LOSSY_METHOD = {
    uid.JPEGBaseline8Bit: "ISO_10918_1",
    uid.JPEGExtended12Bit: "ISO_10918_1",
    JPEG_SPECTRAL_SELECTION: "ISO_10918_1",
    JPEG_FULL_PROGRESSION: "ISO_10918_1",
    uid.JPEGLSNearLossless: "ISO_14495_1",
    uid.JPEG2000: "ISO_15444_1",
    uid.HTJ2K: "ISO_15444_15",
}
