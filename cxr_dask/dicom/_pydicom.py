"""pydicom's private names this package relies on, in one place, each with why.

pydicom is pinned to the minor version tested (pyproject: ``pydicom>=3.0.1,<3.1``): a new
minor version may rename or change any of these. ``tests/test_pydicom_internals.py``
checks that each still exists and has the shape used here; ``tests/test_header_fast.py``
and ``tests/test_encode.py`` that the paths built on them give pydicom's own output.

Functions and constants, imported here and used through this module:

- ``read_file_meta_info`` (``filereader._read_file_meta_info``): reads a file meta the
  header's small-file reader (``deid.header.reader.fast_read``) cannot, and the
  adversarial corpus' deflated-body check; pydicom has no public way to read the meta
  alone from an open file and leave it at the data set.
- ``read_command_set_elements`` (``filereader._read_command_set_elements``): the command
  set ``dcmread`` reads before the data set, read the same way by ``fast_read``.
- ``LUT_DESCRIPTOR_TAGS`` (``tag._LUT_DESCRIPTOR_TAGS``): the US/SS descriptors pydicom
  reads with a sign of their own; the header's US decoder leaves them to pydicom.

Attributes read or written in place (not importable; listed for the same reason). Each
is what pydicom's own method does, without its per-element Python overhead, on paths
taken for every element of every file (the header walk, ``encode``):

- ``Dataset._dict`` (tag -> element as stored, raw or decoded): the walk reads and
  replaces elements in it (``ds[tag]``, ``del ds[tag]`` minus their conversions);
- ``Dataset._character_set``, ``_parent_encoding``: the encodings a value is decoded
  and written with (``Dataset.__getitem__`` and ``write_dataset`` use them);
- ``Dataset._private_blocks``, ``_pixel_array``, ``_pixel_id``: what ``__delitem__``
  resets (``deid.header.lookups._delete``);
- ``Dataset._pixel_rep``: what storing a sequence notes (``_set_pixel_representation``);
- ``Dataset._read_implicit``, ``_read_little``, ``_read_charset``, ``_parent_encoding``
  in a new item's state (``deid.header.reader._new_item``, as ``read_sequence_item``);
- ``DataElement._value``: a value stored without re-validating it (``lookups._assign``).
"""

from __future__ import annotations

from pydicom.filereader import _read_command_set_elements, _read_file_meta_info
from pydicom.tag import _LUT_DESCRIPTOR_TAGS

read_file_meta_info = _read_file_meta_info
read_command_set_elements = _read_command_set_elements
LUT_DESCRIPTOR_TAGS = _LUT_DESCRIPTOR_TAGS

#: The Dataset attributes above, for the test that they still exist.
DATASET_ATTRIBUTES = (
    "_dict",
    "_character_set",
    "_parent_encoding",
    "_private_blocks",
    "_pixel_array",
    "_pixel_id",
    "_pixel_rep",
    "_read_implicit",
    "_read_little",
    "_read_charset",
)
