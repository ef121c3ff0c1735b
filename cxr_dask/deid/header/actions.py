"""What each profile action does to one element (remove, empty, dummy, shift a date, remap
a UID), and Type 1/2 restoration."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, MutableSequence
from functools import lru_cache

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

from cxr_dask.deid.header.decisions import _kept_raw, _kept_values
from cxr_dask.deid.header.lookups import (
    _CODE_TAGS,
    _REPLACED,
    _delete,
    _dictionary_vr,
    _empty_element,
    _empty_value,
    _has_code,
    _key,
    _keyword,
    _put,
)
from cxr_dask.deid.header.phrases import _Phrases
from cxr_dask.deid.header.reader import _note_pixel_representation
from cxr_dask.deid.header.state import HeaderReport
from cxr_dask.deid.profile import (
    Action,
    load_type2_requirements,
    required_type,
)
from cxr_dask.dicom import vrs
from cxr_dask.dicom.dates import within_shifted_years
from cxr_dask.dicom.values import tag_name, value_strings
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason

_DUMMY_TEXT = "ANONYMIZED"


_DUMMY_BY_VR: dict[str, object] = {
    "AE": _DUMMY_TEXT,
    "AS": "000D",
    "CS": _DUMMY_TEXT,
    "DS": "0",
    "IS": "0",
    "LO": _DUMMY_TEXT,
    "LT": _DUMMY_TEXT,
    "PN": _DUMMY_TEXT,
    "SH": _DUMMY_TEXT,
    "ST": _DUMMY_TEXT,
    "TM": "000000",
    "UC": _DUMMY_TEXT,
    "UT": _DUMMY_TEXT,
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
}
_DT = re.compile(
    r"^(?P<y>\d{4})(?:(?P<m>\d{2})(?:(?P<d>\d{2})"
    r"(?P<time>\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?(?P<tz>[+-]\d{4})?$"
)


@lru_cache(maxsize=16384)  # a file holds the same date many times, a study's files too
def shift_da(text: str, days: int) -> str:
    """Shift one DA value ('YYYYMMDD', legacy 'YYYY.MM.DD', or a range 'A-B').

    Raises ValueError when the value is not a date.
    """
    text = text.strip()
    if "-" in text:
        parts = text.split("-")
        if len(parts) != 2:
            raise ValueError("bad range")
        return "-".join(shift_da(part, days) if part.strip() else "" for part in parts)
    if len(text) == 10 and text[4] == "." and text[7] == ".":
        text = text[:4] + text[5:7] + text[8:]
    if len(text) != 8 or not text.isdigit():
        raise ValueError("not a DA")
    day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    return (day + dt.timedelta(days=days)).strftime("%Y%m%d")


@lru_cache(maxsize=16384)
def shift_dt(text: str, days: int) -> str:
    """Shift the date part of one DT value of any precision; time and offset are kept.

    A value with year or month precision is shifted from the first day of its period and
    written back at the same precision. Raises ValueError when the value is not a DT.
    """
    match = _DT.match(text.strip())
    if match is None:
        raise ValueError("not a DT")
    year, month, day = match.group("y"), match.group("m"), match.group("d")
    start = dt.date(int(year), int(month or 1), int(day or 1))
    shifted = start + dt.timedelta(days=days)
    date_part = f"{shifted.year:04d}"
    if month:
        date_part += f"{shifted.month:02d}"
    if day:
        date_part += f"{shifted.day:02d}"
    return date_part + (match.group("time") or "") + (match.group("tz") or "")


class _Actions(_Phrases):
    """What each profile action does to one element."""

    def empty_sequence(self, ds: Dataset, tag: int) -> bool:
        """A kept explicit VR sequence of length 0 stays as read: it has no item to walk,
        and its 12 bytes are those pydicom's empty Sequence is written as. What reading
        it would do to ``ds`` (its pixel representation noted) is done."""
        raw = ds._dict.get(_key(tag))
        if raw.__class__ is not RawDataElement or not self.fast or raw.VR != "SQ" or raw.length != 0:
            return False
        if raw.is_implicit_VR or not raw.is_little_endian or raw.value != b"":
            return False
        _note_pixel_representation(ds)
        return True

    def reread(self, ds: Dataset, tag: int, raw: DataElement | RawDataElement, vr: str) -> DataElement | RawDataElement:
        """The element stored again with the VR it is read by (``_read_as``): the same
        bytes, judged and written under the dictionary's VR."""
        if raw.__class__ is RawDataElement:
            element: DataElement | RawDataElement = raw._replace(VR=vr)
        else:
            value = raw.value
            if not isinstance(value, (str, bytes)):
                raise QuarantineError(Reason.VR_MISMATCH, tag_name(tag))
            element = DataElement(tag, vr, value.decode("latin-1") if isinstance(value, bytes) else value)
        ds._dict[_key(tag)] = element
        return element

    def check_kept(self, ds: Dataset, tag: int, vr: str, raw: DataElement | RawDataElement) -> None:
        """A kept value must match its VR's syntax and, when coded, its defined terms;
        otherwise only its valid values stay (or none: emptied when the IOD needs it)."""
        value = raw.value
        if raw.__class__ is RawDataElement and isinstance(value, bytes):
            kept = _kept_raw(tag, vr, value)
        else:
            kept = _kept_values(tag, vr, tuple(self.values(ds, tag)))
        if kept is None:
            return
        self.report.invalid_values += 1
        if tag in _CODE_TAGS:
            self.code_changed.add(id(ds))
        if kept:
            ds[tag] = DataElement(tag, vr, list(kept) if len(kept) > 1 else kept[0])
        elif required_type(_keyword(tag)):
            _put(ds, _empty_element(tag, vr, self.fast))
            self.report.emptied += 1
        else:
            _delete(ds, tag)
            self.report.removed += 1

    def apply(self, ds: Dataset, tag: int, vr: str, action: Action, depth: int) -> None:
        """Carry out one element's action."""
        if vr == "SQ" and action in (Action.KEEP, Action.CLEAN, Action.DUMMY, Action.UID):
            if self.empty_sequence(ds, tag):
                return
            items: MutableSequence[Dataset] = self.element(ds, tag).value or []
            for item in items:
                self.parents[id(item)] = items
                self.walk(item, depth + 1)
            if self.code_changed:
                # a code item whose code the walk took out breaks the IOD: the item goes
                lost = [i for i, item in enumerate(items) if id(item) in self.code_changed and not _has_code(item)]
                for index in reversed(lost):
                    del items[index]
                    self.report.removed += 1
        elif action is Action.KEEP:
            return
        elif action is Action.REMOVE:
            self.collect(ds, tag, vr)
            _delete(ds, tag)
            self.report.removed += 1
            if tag in _CODE_TAGS:
                self.code_changed.add(id(ds))
        elif action is Action.EMPTY:
            if tag in _CODE_TAGS:
                self.code_changed.add(id(ds))
            self.collect(ds, tag, vr)
            _put(ds, _empty_element(tag, vr, self.fast))
            self.report.emptied += 1
        elif action is Action.SHIFT_DATE:
            self.shift(ds, tag, vr)
        elif action is Action.UID:
            self.uid(ds, tag, vr)
        elif action is Action.DUMMY:
            self.dummy(ds, tag, vr)
        elif action is Action.CLEAN:
            if vr in vrs.TEXT:
                self.to_clean.append((ds, tag))
        else:  # pragma: no cover - every Action is handled above
            raise QuarantineError(Reason.UNHANDLED_ACTION, tag_name(tag))

    def shift(self, ds: Dataset, tag: int, vr: str) -> None:
        """Shift every value; an unparseable one takes the whole element out."""
        if vr not in ("DA", "DT"):
            self.apply(ds, tag, vr, Action.REMOVE, 0)
            return
        elem = self.element(ds, tag)
        values = value_strings(elem.value)
        if not values:
            return
        shifted = self.shifted(values, vr)
        for value in values:
            self.add_date(value)
        if shifted is None:
            self.drop_unparseable(ds, tag, vr)
            return
        self.assign(elem, shifted)
        self.report.dates_shifted += 1

    def shifted(self, values: Iterable[str], vr: str) -> list[str] | None:
        """The shifted values, or None when one is not a date or lands outside 2100-2200.

        A shifted date outside the dataset's years (a placeholder such as 19000101, an
        old study of a patient whose shift was minted from a later one) would break the
        promise every date makes, so it is treated like an unparseable one.
        """
        shift = shift_da if vr == "DA" else shift_dt
        try:
            shifted = [shift(value, self.shift_days) if value.strip() else "" for value in values]
        except (ValueError, OverflowError):
            return None
        if not all(within_shifted_years(value, vr) for value in shifted):
            self.report.dates_out_of_range += 1
            return None
        return shifted

    def drop_unparseable(self, ds: Dataset, tag: int, vr: str) -> None:
        """An unparseable date is never kept: emptied when the IOD needs it, else removed."""
        if required_type(_keyword(tag)):
            _put(ds, _empty_element(tag, vr, self.fast))  # DA, DT: ''
            self.report.emptied += 1
        else:
            _delete(ds, tag)
            self.report.removed += 1

    def uid(self, ds: Dataset, tag: int, vr: str) -> None:
        """Remap every UID value except well-known standard UIDs (SOP classes, ...)."""
        if vr != "UI":
            self.apply(ds, tag, vr, Action.REMOVE, 0)
            return
        elem = self.element(ds, tag)
        values = value_strings(elem.value)
        if required_type(_keyword(tag)) != 1 and _kept_values(tag, vr, tuple(values)) is not None:
            # not a UID (a Type 1 UID is remapped whatever it holds: its key, never lost)
            self.report.invalid_values += 1
            self.apply(ds, tag, vr, Action.EMPTY if required_type(_keyword(tag)) else Action.REMOVE, 0)
            return
        new = [v if (not v or v in UID_dictionary) else self.remap_uid(v) for v in values]
        if new != values:
            self.assign(elem, new)
            self.report.uids_remapped += 1

    def dummy(self, ds: Dataset, tag: int, vr: str) -> None:
        """Replace with a value valid for the VR (dates: the shifted value where possible)."""
        if vr == "UI":
            self.uid(ds, tag, vr)
            return
        self.collect(ds, tag, vr)
        if vr in ("DA", "DT"):
            shifted = self.shifted(self.values(ds, tag), vr) or []
            ds[tag] = DataElement(tag, vr, shifted[0] if len(shifted) == 1 else shifted)
        else:
            ds[tag] = DataElement(tag, vr, _DUMMY_BY_VR.get(vr, _empty_value(vr)))
        self.report.dummied += 1


@lru_cache(maxsize=1)
def _required_tags() -> tuple[int, ...]:
    """Every tag of the Type 1/2 requirements table but the research ids."""
    return tuple(sorted(set().union(*(r.tags for r in load_type2_requirements())) - _REPLACED))


def _restore_type2(ds: Dataset, before: list[int], report: HeaderReport) -> None:
    """Empty (Type 2) or dummy (Type 1), rather than remove, the attributes this data
    set's IOD requires (``type2-required.json``; PS3.15 E.1.1 allows Z or D where X
    would break the IOD). ``before``: the table's tags the input had."""
    missing = {tag for tag in before if tag not in ds._dict}
    if not missing:
        return
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    animal = 0x00102201 in ds._dict or 0x00102202 in ds._dict  # species description or code
    for requirement in load_type2_requirements():
        if not requirement.applies(sop_class, animal):
            continue
        for tag in sorted(requirement.tags & missing):
            missing.discard(tag)
            vr = _dictionary_vr(tag).split(" or ")[0]
            report.removed -= 1
            if requirement.type == 1:
                ds[tag] = DataElement(tag, vr, _DUMMY_BY_VR.get(vr, _empty_value(vr)))
                report.dummied += 1
            else:
                ds[tag] = DataElement(tag, vr, _empty_value(vr))
                report.emptied += 1
