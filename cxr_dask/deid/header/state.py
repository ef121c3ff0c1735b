"""One file's walk state: the research ids, the counts, and reading values fail closed."""

from __future__ import annotations

from collections.abc import Callable, MutableSequence
from dataclasses import asdict, dataclass

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from cxr_dask.deid.freetext import Vocabulary
from cxr_dask.deid.header import reader
from cxr_dask.deid.header.lookups import _assign, _key, _set_values
from cxr_dask.deid.header.reader import _fast_element, _fast_sequence, _ItemCharset
from cxr_dask.deid.profile import (
    Profile,
)
from cxr_dask.dicom.values import tag_name, value_strings
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason


@dataclass(frozen=True)
class FileIdentity:
    """The research ids of one file, minted by the client from the inventory."""

    subject_id: int  # 10_000_000..19_999_999
    study_id: int  # 50_000_000..59_999_999
    dicom_id: str  # '02aa804e-bde0afdd-112c0b34-7bc16630-4e384014'
    shift_days: int  # multiple of 7, added to every DA/DT


@dataclass
class HeaderReport:
    """How many elements each action touched (one audit column each, no values)."""

    removed: int = 0
    emptied: int = 0
    dummied: int = 0
    dates_shifted: int = 0
    uids_remapped: int = 0
    private_removed: int = 0
    descriptors_cleaned: int = 0
    dates_out_of_range: int = 0
    #: kept CS, IS, DS, TM or UI values that broke their VR's syntax or defined terms
    invalid_values: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _WalkState:
    """One file's walk: its profile, counts and phrases, and how it reads values (fail closed)."""

    def __init__(
        self,
        profile: Profile,
        identity: FileIdentity,
        remap_uid: Callable[[str], str],
        vocabulary: Vocabulary | None = None,
    ) -> None:
        self.profile = profile
        self.vocabulary = vocabulary
        self.shift_days = identity.shift_days
        self.remap_uid = remap_uid
        self.report = HeaderReport()
        self.phrases: set[str] = set()
        self.to_clean: list[tuple[Dataset, int]] = []
        #: removed values not decoded yet: (dataset, tag, VR, kind, raw element)
        self.pending: list[tuple[Dataset | _ItemCharset, int, str, str, RawDataElement]] = []
        #: ids of the items where the walk removed, emptied or cut a coded value
        self.code_changed: set[int] = set()
        #: kept coded values (dataset id, tag), looked at by Clean Descriptors as a whole
        self.codes: set[tuple[int, int]] = set()
        #: the items list each walked sequence item sits in, by the item's id
        self.parents: dict[int, MutableSequence[Dataset]] = {}
        #: pydicom is set up as ``_fast_element`` and ``_fast_sequence`` assume (per file:
        #: callers and tests may change pydicom's settings)
        self.fast = reader._pydicom_defaults()

    # -- reading values, fail closed
    def element(self, ds: Dataset, tag: int) -> DataElement:
        """The decoded element; anything pydicom cannot convert quarantines the file.

        A raw element of the common kinds (``_fast_element``, ``_fast_sequence``) is
        decoded here to the same element ``ds[tag]`` stores, without pydicom's generic
        conversion; any other takes ``ds[tag]``.
        """
        raw = ds._dict.get(_key(tag))
        if raw.__class__ is DataElement:
            return raw  # all ``ds[tag]`` does for an element already decoded
        if raw.__class__ is RawDataElement and self.fast and not (tag >> 16) & 1:
            if raw.VR == "SQ":
                elem = _fast_sequence(ds, raw)
                if elem is not None:
                    ds[raw.tag] = elem  # as ``ds[tag]`` stores a converted sequence (and
                    return elem  # sets the pixel representation, ``_set_pixel_representation``)
            else:
                elem = _fast_element(tag, raw, ds)
                if elem is not None:
                    ds._dict[raw.tag] = elem  # all ``ds[tag]`` does for a public non-SQ element
                    return elem
        try:
            return ds[tag]
        except Exception:
            raise QuarantineError(Reason.UNDECODABLE_VALUE, tag_name(tag)) from None

    def assign(self, elem: DataElement, values: list[str]) -> None:
        (_assign if self.fast else _set_values)(elem, values)

    def values(self, ds: Dataset, tag: int) -> list[str]:
        return value_strings(self.element(ds, tag).value)

    def walk(self, ds: Dataset, depth: int) -> None:
        """Apply the profile to every element of ``ds`` and its items (``walk._Walker``):
        the actions recurse into a kept sequence's items through it."""
        raise NotImplementedError
