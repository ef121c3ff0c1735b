"""Per-file DICOM header de-identification (PS3.15 Annex E basic profile + options).

The package, by job: ``walk`` (the walk over a data set and its items), ``actions`` (what
each profile action does to an element), ``decisions`` (which action, by which VR, which
kept values are valid), ``phrases`` (phrase collection and Clean Descriptors), ``words``
(pass 1's words of the free text), ``reader`` (decoding without pydicom), ``markers``
(the de-identification markers), ``filemeta`` (encoding checks and the file meta),
``lookups`` (dictionary lookups and the element store). Callers import from here.

One walk over the dataset, recursing into every sequence item: each element gets the
action the resolved table (``profile``) or the fallback rules below give it. Elements
whose value does not matter to the decision are never decoded (they stay raw and are
written back byte for byte), and PixelData is never touched. Values and sequences that
are decoded are, in the common cases, decoded here from their bytes into the very
elements pydicom's conversion makes (``_fast_element``, ``_fast_sequence``; small files
are read the same way, ``fast_read``), pydicom's generic machinery being most of a small
file's cost; anything else is left to pydicom (tests/test_header_fast.py). A removed
sequence's phrases are noted from its bytes (``collect_light``) and a kept empty one stays
as read (``empty_sequence``): neither becomes Datasets.

Nothing here puts a header value into an exception message or a log: a
``QuarantineError`` carries a reason class and at most a keyword or tag.

Damage fails closed (each case found by fuzzing, see tests/test_fuzz_header.py): a VR
that is no VR at all quarantines (``invalid_vr``); an element whose VR contradicts the
data dictionary (a name written into StudyTime) is not judged by the attribute's rule
but removed, or emptied when the IOD requires it; a text or number value over
MAX_VALUE_BYTES quarantines (``oversized_element``).

Clean Descriptors rule (option 113105), two layers. First the archive's vocabulary
(``deid.freetext``): every token of a kept descriptor or free-text string that is not
known safe becomes ``___``. Then, as an extra layer: while walking, the values of the identifying
attributes being removed or replaced (name components, IDs, accession, institution,
addresses, original dates in several renderings) are collected as phrases. After the
walk, every kept descriptor (the option's set) and every kept free-text string that
the table does not list has each case-insensitive whole-token occurrence of a phrase
deleted, and runs of spaces collapsed. Deleting (rather than inserting a marker) can
only shorten a value, so the VR length limit always holds.
"""

from __future__ import annotations

from collections.abc import Callable

import pydicom

from cxr_dask.deid.freetext import Vocabulary
from cxr_dask.deid.header.actions import _required_tags, _restore_type2, shift_da, shift_dt
from cxr_dask.deid.header.filemeta import _check_encoding, _check_sop_instance, _fix_file_meta
from cxr_dask.deid.header.lookups import MAX_DEPTH, MAX_VALUE_BYTES, _key
from cxr_dask.deid.header.markers import _mark_deidentified
from cxr_dask.deid.header.phrases import STOP_WORDS, clean_text
from cxr_dask.deid.header.reader import FAST_READ_MAX_BYTES, fast_read, get_value
from cxr_dask.deid.header.state import FileIdentity, HeaderReport
from cxr_dask.deid.header.walk import _Walker
from cxr_dask.deid.header.words import descriptor_words
from cxr_dask.deid.profile import ProfileOptions, get_profile
from cxr_dask.dicom.codes import TOOL_NAME

__all__ = [
    "FAST_READ_MAX_BYTES",
    "MAX_DEPTH",
    "MAX_VALUE_BYTES",
    "STOP_WORDS",
    "TOOL_NAME",
    "FileIdentity",
    "HeaderReport",
    "clean_text",
    "deidentify_header",
    "descriptor_words",
    "fast_read",
    "get_value",
    "shift_da",
    "shift_dt",
]


def deidentify_header(
    ds: pydicom.Dataset,
    identity: FileIdentity,
    remap_uid: Callable[[str], str],
    options: ProfileOptions = ProfileOptions(),  # noqa: B008 - frozen, immutable default
    vocabulary: Vocabulary | None = None,
) -> HeaderReport:
    """De-identify ``ds`` (and its file meta) in place; returns the action counts.

    ``vocabulary``: the tokens free text may keep (``deid.freetext``); the pipeline always
    passes the archive's. None cleans descriptors by the phrase layer alone.

    Raises QuarantineError (reason class and keyword only) when the outcome would be
    uncertain; ``ds`` must then be discarded, as it may be half processed.
    """
    _check_sop_instance(ds)
    _check_encoding(ds)
    walker = _Walker(get_profile(options), identity, remap_uid, vocabulary)
    before = [tag for tag in _required_tags() if _key(tag) in ds._dict]
    walker.walk(ds, 0)
    _restore_type2(ds, before, walker.report)
    walker.clean_all()
    _mark_deidentified(ds, identity, options)
    _fix_file_meta(ds, walker.report)
    # The 128-byte preamble is outside the dataset and Annex E's table, yet free for any
    # use (a TIFF header in dual-format files, vendor text): it is written as zeros.
    ds.preamble = b"\x00" * 128
    return walker.report
