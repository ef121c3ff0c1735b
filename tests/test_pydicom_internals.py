"""pydicom's private names the package uses (``cxr_dask.dicom._pydicom``) still exist with the
shape relied on: a pydicom that renamed one fails here, by name, rather than deep in a walk."""

from __future__ import annotations

import io

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from cxr_dask.dicom import _pydicom


def test_the_dataset_state_the_fast_paths_read_and_write_exists() -> None:
    ds = Dataset()
    ds.PixelRepresentation = 1
    ds.ReferencedImageSequence = Sequence([Dataset()])  # storing a sequence notes _pixel_rep
    for name in _pydicom.DATASET_ATTRIBUTES:
        assert name in vars(ds) or isinstance(getattr(type(ds), name, None), property), name
    assert ds._pixel_rep == 1
    assert "_value" in vars(DataElement(0x00100010, "PN", "A^B"))


def test_the_readers_and_constants_keep_their_shape() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.ensure_file_meta()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(132)
    meta = _pydicom.read_file_meta_info(buffer)
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert len(_pydicom.read_command_set_elements(buffer)) == 0
    assert 0x00283002 in _pydicom.LUT_DESCRIPTOR_TAGS  # LUTDescriptor
