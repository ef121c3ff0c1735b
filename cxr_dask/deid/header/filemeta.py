"""The input's encoding and SOP instance checked, and the file meta rebuilt."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from cxr_dask import encode
from cxr_dask.deid.header.lookups import _SOP_INSTANCE_UID
from cxr_dask.deid.header.state import HeaderReport
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason


def _fix_file_meta(ds: Dataset, report: HeaderReport) -> None:
    """Rebuild the file meta from the cleaned data set (``encode.standard_file_meta``):
    nothing of the input's group 2 but its transfer syntax survives."""
    meta = getattr(ds, "file_meta", None)
    before = len(meta) if meta is not None else 0
    ds.file_meta = encode.standard_file_meta(ds)
    # everything else the input had in group 2 (AE titles, private information, ...)
    report.removed += max(0, before - len(ds.file_meta))


def _check_encoding(ds: Dataset) -> None:
    """The body must be encoded as its transfer syntax says, or raw elements cannot be
    written back unchanged (pydicom would have to re-encode values it never validated)."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax or not str(syntax).strip():
        raise QuarantineError(Reason.NO_TRANSFER_SYNTAX, "TransferSyntaxUID")
    syntax = UID(str(syntax).strip())
    if not syntax.is_transfer_syntax:
        raise QuarantineError(Reason.UNKNOWN_TRANSFER_SYNTAX, "TransferSyntaxUID")
    implicit, little = ds.original_encoding
    # pydicom falls back to the encoding it finds in the body; raw elements record it
    elements: Iterator[object] = map(ds.get_item, ds.keys())  # pydicom types it DataElement: raw too
    first_raw = next((e for e in elements if isinstance(e, RawDataElement)), None)
    if first_raw is not None:
        implicit, little = first_raw.is_implicit_VR, first_raw.is_little_endian
    if implicit is not None and (implicit, little) != (
        syntax.is_implicit_VR,
        syntax.is_little_endian,
    ):
        raise QuarantineError(Reason.TRANSFER_SYNTAX_MISMATCH, "TransferSyntaxUID")


def _check_sop_instance(ds: Dataset) -> None:
    """A dataset without SOPInstanceUID cannot get a consistent new identity."""
    if _SOP_INSTANCE_UID not in ds:
        raise QuarantineError(Reason.NO_SOP_INSTANCE_UID, "SOPInstanceUID")
    try:
        value = ds[_SOP_INSTANCE_UID].value
    except Exception:
        raise QuarantineError(Reason.UNDECODABLE_VALUE, "SOPInstanceUID") from None
    if not isinstance(value, str) or not value.strip():
        raise QuarantineError(Reason.NO_SOP_INSTANCE_UID, "SOPInstanceUID")
