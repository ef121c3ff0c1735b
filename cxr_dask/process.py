"""Pass 2, one file at a time: read, de-identify, write; plain functions, no Dask.

A file either comes out fully de-identified at its MIMIC-CXR path or is quarantined
with a reason class in the audit; any unexpected exception quarantines the file too
(fail closed), and only the exception's type name is recorded, never its message,
which could quote a header value.
"""

from __future__ import annotations

import io
import os
import socket
import time
from dataclasses import dataclass
from typing import IO, Any

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian

from cxr_dask import encode, review, storage
from cxr_dask.deid import containers, decoders, pixels
from cxr_dask.deid.freetext import shipped_vocabulary
from cxr_dask.deid.header import FileIdentity, HeaderReport, deidentify_header, get_value
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.dicom.layout import image_path
from cxr_dask.errors import QuarantineError
from cxr_dask.identity import IdentityMap, file_keys
from cxr_dask.inventory import classify_header, read_dicom
from cxr_dask.metadata import STORAGE_ERROR, audit_row, metadata_row, pixel_class_counts
from cxr_dask.privacy import quiet_pydicom
from cxr_dask.reasons import Reason
from cxr_dask.storage import Location


@dataclass(frozen=True)
class DeidentifiedFile:
    """A finished output object and what is known about it."""

    parts: list[encode.Buffer]  # the file's bytes, in order (see encode.encode_parts)
    identity: FileIdentity
    report: HeaderReport
    metadata: dict[str, Any]
    pixels: pixels.PixelReport
    container: containers.ContainerReport
    #: Thumbnails and crops for the review page, when asked for and the image has regions
    #: to review (blanked or flagged); None otherwise.
    review: review.Rendered | None = None

    @property
    def data(self) -> bytes:
        """The whole file as one bytes object (a copy: writers take ``parts``)."""
        return b"".join(self.parts)

    @property
    def size(self) -> int:
        return encode.size(self.parts)

    @property
    def path(self) -> str:
        return image_path(self.identity.subject_id, self.identity.study_id, self.identity.dicom_id)


@dataclass(frozen=True)
class ReviewItem:
    """A written image's review material, with the names the review page shows it by."""

    key_index: int
    dicom_id: str
    path: str
    rendered: review.Rendered


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = get_value(ds, keyword)
    return str(value).strip() if value is not None else ""


def file_identity(ds: pydicom.Dataset, identity: IdentityMap) -> FileIdentity:
    """Look the file's patient, study and image up in the broadcast map.

    A file absent from the map changed between the two passes (or was never scanned):
    it is quarantined rather than given ids the client did not mint.
    """
    patient, study, sop = file_keys(lambda keyword: _text(ds, keyword))
    try:
        subject_id, shift_days = identity.patients[patient]
        study_subject, study_id = identity.studies[study]
        dicom_id, image_subject, image_study = identity.images[sop]
    except KeyError:
        raise QuarantineError(Reason.NOT_IN_INVENTORY) from None
    if (image_subject, image_study) != (subject_id, study_id) or study_subject != subject_id:
        raise QuarantineError(Reason.IDENTITY_CONFLICT)
    return FileIdentity(subject_id=subject_id, study_id=study_id, dicom_id=dicom_id, shift_days=shift_days)


def deidentify_bytes(
    data: bytes | IO[bytes], identity: IdentityMap, options: ProfileOptions, review_material: bool = False
) -> DeidentifiedFile:
    """De-identify one DICOM file (its bytes, or an open binary file).

    Header first (it validates the encoding and every value), then the pixel containers
    (``deid.containers``: hidden bits, trailing bytes, codestream comments, extra frames),
    then the pixels: carried as raw bytes unless burned-in text had to be blacked out,
    then re-encoded (``deid.pixels``). What the pixel step reads of the header (device,
    size, photometric interpretation) is kept by the profile. Pixel bytes are written
    back without copies (``encode.encode_parts``). With ``review_material``, an image with
    regions blanked or flagged also gets its review thumbnails and crops (``review.render``).
    """
    try:
        ds = read_dicom(io.BytesIO(data) if isinstance(data, bytes) else data)
    except InvalidDicomError:
        raise QuarantineError(Reason.NOT_DICOM) from None
    except OSError as error:
        if error.errno is not None:  # the disk failed, not the content: retried by the next run
            raise
        raise QuarantineError(Reason.UNREADABLE) from None
    except Exception:
        raise QuarantineError(Reason.UNREADABLE) from None
    if ds.original_encoding == (False, False) and ds.file_meta.get("TransferSyntaxUID") == ExplicitVRBigEndian:
        try:
            decoders.to_little_endian(ds)  # pydicom writes no other byte order than it read
        except Exception:
            raise QuarantineError(Reason.UNREADABLE) from None
    reason = classify_header(ds)
    if reason:
        raise QuarantineError(reason)
    pixels.require_pixel_data(ds)
    ids = file_identity(ds, identity)
    source_syntax = str(ds.file_meta.get("TransferSyntaxUID", "")).strip()
    vocabulary = identity.vocabulary or shipped_vocabulary()
    report = deidentify_header(ds, ids, identity.remap_uid, options, vocabulary)
    container = containers.sanitise(ds)  # every path: what the pixel step keeps is clean
    cleaned = pixels.clean(ds, options.pixels)
    rendered = None
    if review_material and review.needs_review(cleaned):
        mark = time.perf_counter()
        rendered = review.render(cleaned, str(ds.get("PhotometricInterpretation", "")))
        cleaned.report.timings["review"] = time.perf_counter() - mark
    if cleaned.array is not None:
        pixels.store(ds, cleaned.array, source_syntax)
        pixels.mark_cleaned(ds)
    try:
        parts = encode.encode_parts(ds)
    except Exception:
        raise QuarantineError(Reason.UNWRITABLE) from None
    row = metadata_row(ds, ids.dicom_id, ids.subject_id, ids.study_id)
    return DeidentifiedFile(parts, ids, report, row, cleaned.report, container, rendered)


@quiet_pydicom()
def process_file(
    source: Location,
    destination: Location,
    key_index: int,
    key: str,
    identity: IdentityMap,
    options: ProfileOptions,
    reviews: list[ReviewItem] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Read, de-identify and write one input key; returns its audit row and metadata row.

    When ``reviews`` is a list, a written image with regions to review adds its review
    material to it (a quarantined file adds nothing).
    """
    started = time.perf_counter()
    bytes_in = None
    step = "read"
    try:
        with storage.open_whole(source, key) as handle:
            bytes_in = storage.size_of(handle)
            step = "content"
            result = deidentify_bytes(handle, identity, options, review_material=reviews is not None)
        step = "write"
        storage.write_atomic(destination, result.path, result.parts)
    except QuarantineError as error:
        row = audit_row(key_index, "quarantined", reason=error.reason, detail=error.detail or None)
        row.update(bytes_in=bytes_in, seconds=time.perf_counter() - started)
        return row, None
    except Exception as error:
        # Fetching and writing bytes can only fail for the store's reasons: the key is
        # not done and the next run retries it. Parsing fails for the content's, except
        # a system call's own I/O error (it has an errno; a decoder's OSError has none).
        if step != "content" or (isinstance(error, OSError) and error.errno is not None):
            row = audit_row(key_index, STORAGE_ERROR, reason=STORAGE_ERROR, detail=type(error).__name__)
        else:
            row = audit_row(key_index, "quarantined", reason=Reason.INTERNAL_ERROR, detail=type(error).__name__)
        row.update(bytes_in=bytes_in, seconds=time.perf_counter() - started)
        return row, None
    row = audit_row(
        key_index,
        "written",
        dicom_id=result.identity.dicom_id,
        subject_id=result.identity.subject_id,
        study_id=result.identity.study_id,
        bytes_in=bytes_in,
        bytes_out=result.size,
        seconds=time.perf_counter() - started,
        **result.report.as_dict(),
        **result.pixels.as_audit(),
        **result.container.as_audit(),
        **pixel_class_counts(result.pixels),
    )
    if reviews is not None and result.review is not None:
        reviews.append(ReviewItem(key_index, result.identity.dicom_id, result.path, result.review))
    return row, result.metadata


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@quiet_pydicom()
def process_partition(
    items: list[tuple[int, str]],
    source: Location,
    destination: Location,
    identity: IdentityMap,
    options: ProfileOptions,
    reviews: list[ReviewItem] | None = None,
) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """The pass-2 task: every ``(key_index, key)`` of one partition (``reviews``: see
    ``process_file``)."""
    worker = _worker_name()
    outcomes = [process_file(source, destination, i, key, identity, options, reviews) for i, key in items]
    for audit, _ in outcomes:
        audit["worker"] = worker
    return outcomes
