"""The MIMIC-CXR layout of the output: ``files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.dcm``.

Built by the writers and parsed back by verify from the same statements here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import pyarrow as pa

#: A dicom_id: 40 hex digits as five dash-joined groups of 8, as MIMIC-CXR writes it.
DICOM_ID = re.compile(r"^[0-9a-f]{8}(?:-[0-9a-f]{8}){4}$")
_IMAGE_PATH = re.compile(r"^files/p(\d{2})/p(\d{8})/s(\d{8})/([0-9a-f]{8}(?:-[0-9a-f]{8}){4})\.dcm$")
#: What a malformed path should have looked like (for messages).
IMAGE_PATH_FORM = "files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.dcm"


def format_dicom_id(raw: bytes) -> str:
    """The first 20 bytes of ``raw`` as a dicom_id."""
    t = raw[:20].hex()
    return f"{t[:8]}-{t[8:16]}-{t[16:24]}-{t[24:32]}-{t[32:40]}"


def study_folder(subject_id: int, study_id: int) -> str:
    """``files/pNN/pNNNNNNNN/sNNNNNNNN``: NN is the subject id's first two digits."""
    subject = f"{subject_id:08d}"
    return f"files/p{subject[:2]}/p{subject}/s{study_id:08d}"


def image_path(subject_id: int, study_id: int, dicom_id: str) -> str:
    """The output key of an image: a pure function of its ids, so reruns overwrite it."""
    return f"{study_folder(subject_id, study_id)}/{dicom_id}.dcm"


def study_folders(subject_ids: pa.ChunkedArray, study_ids: pa.ChunkedArray) -> pa.ChunkedArray:
    """``study_folder`` over Arrow columns (no Python object per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def padded(ids: pa.ChunkedArray) -> pa.ChunkedArray:
        return pc.utf8_lpad(pc.cast(ids, pa.string()), 8, "0")

    subject = padded(subject_ids)
    return pc.binary_join_element_wise(
        "files/p", pc.utf8_slice_codeunits(subject, 0, 2), "/p", subject, "/s", padded(study_ids), ""
    )


class ImagePath(NamedTuple):
    """An output path read back: the ids it names and whether its pNN folder agrees."""

    subject_id: int
    study_id: int
    dicom_id: str
    prefix_matches: bool


def parse_image_path(path: str) -> ImagePath | None:
    """The ids an output path names, or None when it is not in the layout."""
    match = _IMAGE_PATH.match(path)
    if match is None:
        return None
    prefix, subject, study, dicom_id = match.groups()
    return ImagePath(int(subject), int(study), dicom_id, subject.startswith(prefix))
