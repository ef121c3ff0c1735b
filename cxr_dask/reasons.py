"""Every reason class the de-identifier writes to an audit, each stated once with its meaning.

A reason lands in the inventory's ``error`` column (pass 1) and the audit's ``reason``
column (pass 2 and the run's bookkeeping). ``Reason`` is a ``StrEnum``: a member equals,
formats and serialises as its string, so tables and Parquet files hold the same bytes as
before the enum existed, and audits of earlier runs keep their meaning. Strings are
never renamed or merged: near-twins name the stage that wrote them (``unreadable_header``
is pass 1's header read, ``unreadable`` pass 2's whole read; ``undecodable_pixel_data``
is the container, ``undecodable_pixels`` the codestream). The verifier (``cxr_dask.verify``)
is an independent auditor with its own vocabulary and does not use this one.

``python -m cxr_dask.reasons`` prints the README's reason table.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """A reason class: short snake_case, never a value from the input (no PHI)."""

    # pass 1, the inventory (``inventory.scan_file``, ``classify_header``, duplicates)
    EMPTY_FILE = "empty_file"
    NOT_DICOM = "not_dicom"
    UNREADABLE_HEADER = "unreadable_header"
    TRUNCATED_OR_NO_PIXEL_DATA = "truncated_or_no_pixel_data"
    DICOMDIR = "dicomdir"
    NO_SOP_CLASS_UID = "no_sop_class_uid"
    UNSUPPORTED_SOP_CLASS = "unsupported_sop_class"
    NO_SOP_INSTANCE_UID = "no_sop_instance_uid"
    NO_STUDY_INSTANCE_UID = "no_study_instance_uid"
    NO_PATIENT_ID = "no_patient_id"
    DUPLICATE_SOP_INSTANCE_UID = "duplicate_sop_instance_uid"
    DUPLICATE_DIFFERING_COPY = "duplicate_differing_copy"
    # pass 2, one file (``process``)
    NOT_IN_INVENTORY = "not_in_inventory"
    IDENTITY_CONFLICT = "identity_conflict"
    UNREADABLE = "unreadable"
    UNWRITABLE = "unwritable"
    INTERNAL_ERROR = "internal_error"
    # pass 2, the header (``deid.header``)
    NO_TRANSFER_SYNTAX = "no_transfer_syntax"
    UNKNOWN_TRANSFER_SYNTAX = "unknown_transfer_syntax"
    TRANSFER_SYNTAX_MISMATCH = "transfer_syntax_mismatch"
    INVALID_VR = "invalid_vr"
    VR_MISMATCH = "vr_mismatch"
    UNDECODABLE_VALUE = "undecodable_value"
    OVERSIZED_ELEMENT = "oversized_element"
    SEQUENCE_TOO_DEEP = "sequence_too_deep"
    UNHANDLED_ACTION = "unhandled_action"
    # pass 2, the pixels (``deid.containers``, ``deid.decoders``, ``deid.pixels``)
    NO_PIXEL_DATA = "no_pixel_data"
    UNSUPPORTED_PIXELS = "unsupported_pixels"
    UNDECODABLE_PIXEL_DATA = "undecodable_pixel_data"
    EXTRA_FRAMES = "extra_frames"
    UNDECODABLE_PIXELS = "undecodable_pixels"
    UNENCODABLE_PIXELS = "unencodable_pixels"
    OCR_UNAVAILABLE = "ocr_unavailable"
    OCR_FAILED = "ocr_failed"
    # the run (``pipeline``), either pass
    WORKER_CRASH = "worker_crash"
    STORAGE_ERROR = "storage_error"


#: One line for each member: what the file was, and which stage says so.
MEANING: dict[Reason, str] = {
    Reason.EMPTY_FILE: "pass 1: the key holds 0 bytes (a dangling link is listed with size 0)",
    Reason.NOT_DICOM: (
        "either pass: no Part 10 header, and no data set with SOP class and instance UIDs (an ACR-NEMA style export)"
    ),
    Reason.UNREADABLE_HEADER: (
        "pass 1: the header (up to the pixel data) does not parse or a value in it does not decode; "
        "pass 2's whole read is `unreadable`"
    ),
    Reason.TRUNCATED_OR_NO_PIXEL_DATA: (
        "pass 1: the header runs to the end of the file (cut short, or no pixel data), or an element claims "
        "more bytes than the file holds"
    ),
    Reason.DICOMDIR: "pass 1: a DICOMDIR (Media Storage Directory), not an image",
    Reason.NO_SOP_CLASS_UID: "pass 1: neither SOPClassUID nor MediaStorageSOPClassUID",
    Reason.UNSUPPORTED_SOP_CLASS: "pass 1: a SOP class that is not an image storage class",
    Reason.NO_SOP_INSTANCE_UID: "pass 1, or pass 2's header check: no SOPInstanceUID (no identity can be minted)",
    Reason.NO_STUDY_INSTANCE_UID: "pass 1: no StudyInstanceUID",
    Reason.NO_PATIENT_ID: "pass 1: no PatientID",
    Reason.DUPLICATE_SOP_INSTANCE_UID: (
        "pass 1: a byte-identical copy of the image written (`duplicate_of`: its key index), "
        "or a rescanned copy of an image an earlier record holds"
    ),
    Reason.DUPLICATE_DIFFERING_COPY: (
        "pass 1: another copy of the same SOPInstanceUID that the rule ranked lower "
        "(cut short, created earlier or sorted later); `duplicate_of` as above"
    ),
    Reason.NOT_IN_INVENTORY: "pass 2: the file's patient, study or image has no ids (it changed between the passes)",
    Reason.IDENTITY_CONFLICT: "pass 2: the image's ids name another subject or study than its patient's and study's",
    Reason.UNREADABLE: (
        "pass 2: the whole file does not parse, or a big-endian data set cannot be turned little-endian; "
        "pass 1's header read is `unreadable_header`"
    ),
    Reason.UNWRITABLE: "pass 2: the de-identified data set cannot be encoded as a file",
    Reason.INTERNAL_ERROR: (
        "pass 2: an unexpected exception on the content (a bug; `detail` names the exception type only)"
    ),
    Reason.NO_TRANSFER_SYNTAX: "pass 2, header: the file meta has no TransferSyntaxUID",
    Reason.UNKNOWN_TRANSFER_SYNTAX: "pass 2, header: the TransferSyntaxUID is not a transfer syntax",
    Reason.TRANSFER_SYNTAX_MISMATCH: (
        "pass 2, header: the body is encoded otherwise (implicit/explicit VR, byte order) than the syntax says"
    ),
    Reason.INVALID_VR: "pass 2, header: an element's VR bytes are not a VR (damaged bytes: no rule applies)",
    Reason.VR_MISMATCH: "pass 2, header: a pixel-module attribute stored with another VR (Rows as text)",
    Reason.UNDECODABLE_VALUE: "pass 2, header: a value does not decode in its VR or character set",
    Reason.OVERSIZED_ELEMENT: "pass 2, header: a text or number value over 1 MiB",
    Reason.SEQUENCE_TOO_DEEP: "pass 2, header: sequences nested deeper than the walk follows",
    Reason.UNHANDLED_ACTION: "pass 2, header: a profile action the walk does not handle (a bug; never expected)",
    Reason.NO_PIXEL_DATA: "pass 2, pixels: no PixelData, FloatPixelData nor DoubleFloatPixelData",
    Reason.UNSUPPORTED_PIXELS: (
        "pass 2, pixels: more frames than `pixels.max_frames`, colour other than RGB/YBR_FULL/YBR_FULL_422/"
        "PALETTE COLOR (or YBR_RCT/ICT in JPEG 2000), signed or over 16 bits, HighBit not BitsStored - 1, "
        "an RLE image whose BitsAllocated is not whole bytes, an encapsulated syntax whose codestream is not "
        "parsed here"
    ),
    Reason.UNDECODABLE_PIXEL_DATA: (
        "pass 2, pixel container: native PixelData shorter than the header says, encapsulated items broken or "
        "fewer frames than NumberOfFrames, no Rows, Columns, BitsAllocated or BitsStored; a codestream that "
        "does not decode is `undecodable_pixels`"
    ),
    Reason.EXTRA_FRAMES: (
        "pass 2, pixel container: room for a whole frame more after the last native frame, a second codestream "
        "behind the first, more RLE fragments or offset-table entries than frames"
    ),
    Reason.UNDECODABLE_PIXELS: (
        "pass 2, pixels: a JPEG, JPEG-LS or JPEG 2000 codestream that does not parse, an RLE segment that ends "
        "short or a segment count that is not one per sample byte, pixels no plugin nor dcmtk decodes; "
        "a broken container is `undecodable_pixel_data`"
    ),
    Reason.UNENCODABLE_PIXELS: "pass 2, pixels: blacked-out pixels cannot be re-encoded",
    Reason.OCR_UNAVAILABLE: "pass 2, pixels: tesseract is missing or cannot start, so text cannot be searched",
    Reason.OCR_FAILED: "pass 2, pixels: tesseract failed or timed out (`detail`: `timeout` or `tesseract`)",
    Reason.WORKER_CRASH: "pass 2: the file's task killed workers; it was retried alone, then quarantined",
    Reason.STORAGE_ERROR: (
        "either pass: the store failed to read or write the key after its retries (status `storage_error` "
        "too); not done, retried by the next run"
    ),
}


def markdown_table() -> str:
    """The README's reason table, one row a member in the enum's order."""
    rows = ["| reason | meaning |", "| --- | --- |"]
    rows += [f"| `{reason}` | {MEANING[reason]} |" for reason in Reason]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
