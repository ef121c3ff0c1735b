"""An auditor's check of a finished dataset: no PHI of the inputs anywhere in OUTPUT.

``verify(INPUT, OUTPUT, PRIVATE)`` re-reads every input header, gathers its PHI values
("needles"), then reads every object under OUTPUT and reports *findings*:

- ``phi_in_element`` / ``phi_in_bytes``: a needle in a decoded element value (every
  element, every nested sequence item, file meta too) or in the file's raw bytes (the
  pixel data value is left out: burned-in text is the OCR check's job, and random pixel
  bytes would spell short tokens by chance);
- ``phi_in_parquet`` (every cell and column name of every Parquet file),
  ``phi_in_name`` (every folder and file name), ``phi_in_file`` (any other object),
  ``phi_in_pixels`` (OCR, see below);
- ``original_uid``: an input UID (not a standard one) in an output;
- ``private_element``, ``not_marked_deidentified``;
- ``date_out_of_range``: a DA/DT value (or a Parquet StudyDate) not in 2100-2200, or not
  a date at all;
- ``id_out_of_range``, ``id_mismatch`` (header vs path vs crosswalk),
  ``id_not_one_to_one`` (a research id shared by two real keys or the reverse, in the
  outputs or in the crosswalk), ``bad_path``, ``unknown_output`` (a DICOM the crosswalk
  never minted);
- ``interval_not_kept``: an output date minus its input date differs from the patient's
  shift in the crosswalk (so intervals within a patient are not kept).

Needles, and why (false positives from short values would bury real leaks):

- person names (any PN, at any depth): the whole value, and each component split on
  ``^``, ``=`` and spaces; dates (any DA/DT): ``YYYYMMDD`` and the renderings free text
  uses (``YYYY-MM-DD``, ``MM/DD/YYYY``, ...); UIDs (any UI except standard ones from
  pydicom's UID dictionary); whole values of identifying attributes (IDs, numbers,
  addresses, telephones, institution, station, department, comments, history) that the
  profile does not keep; whole string values of private elements, unless the same value
  is a public, non-identifying value of the same input file (vendors copy public
  attributes such as ``MONOCHROME2`` into private tags).
- matching is case-insensitive and whole-token: a needle must start and end at a
  boundary between letters/digits and anything else, so ``ANNA`` is not found in
  ``HOSANNA``; a concatenation such as ``SMITHJOHN`` is therefore not found (the full PN
  value and the components are).
- a needle needs at least 4 characters, 6 when it is all digits (``4096``, ``1234``
  are window widths and instance numbers); words of the de-identifier's stop list
  (``CHEST``, ``LATERAL``, ``PORTABLE``, ...) are never needles, exactly as the header
  cleaner never removes them.
- numbers that are part of a dotted UID are not compared as numbers (an 8-digit date
  may occur inside a random ``2.25.`` UID); UIDs are compared as whole dotted runs.
  Tokens that are research ids minted by the crosswalk (subject and study ids, dicom_id
  groups) are not PHI and are skipped.

The report never shows a PHI value: a finding names its kind, the output path (with
any path component that itself holds PHI redacted), the attribute keyword, tag or
column, the needle's category and the index of the input key it came from.

Pixels: where images were cleaned (BurnedInAnnotation NO and code 113101 in
DeidentificationMethodCodeSequence) and the pixel module ``cxr_dask.deid.pixels``
exists, the outputs are OCRed with Tesseract and the text searched for the needles;
otherwise the report says the check was skipped and why.

Without a Dask client it runs locally and sequentially, streaming one input header and
one output object at a time; with one (``cxr-dask verify --scheduler``/``--workers``)
the same partition functions run as Dask bag tasks. Memory on the client grows with the
number of distinct needles and input files (a few hundred bytes each), not with the data.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import io
import posixpath
import re
import shutil
import subprocess
import tempfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dask.bag as db
import numpy as np
import pyarrow.parquet as pq
import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import DeflatedExplicitVRLittleEndian, UID_dictionary

from cxr_dask import storage
from cxr_dask.deid.header import STOP_WORDS, date_renderings
from cxr_dask.deid.profile import Action, get_profile
from cxr_dask.errors import ConfigError
from cxr_dask.identity import (
    STUDY_ID_RANGE,
    SUBJECT_ID_RANGE,
    IdentityMap,
    load_crosswalk,
    patient_key,
    study_key,
)
from cxr_dask.privacy import quiet_pydicom
from cxr_dask.storage import Location

if TYPE_CHECKING:
    from distributed import Client

MIN_NEEDLE = 4
MIN_NUMERIC_NEEDLE = 6
DATE_YEARS = (2100, 2200)
PIXEL_MODULE = "cxr_dask.deid.pixels"
PIXELS_CLEANED_CODE = "113101"
PIXEL_DATA = 0x7FE00010
MAX_LISTED = 50

_TOKEN = re.compile(r"[^\W_]+")
_UID_RUN = re.compile(r"[0-9]+(?:\.[0-9]+)+")
_PN_SPLIT = re.compile(r"[\^=\s]+")
_DICOM_ID = re.compile(r"^[0-9a-f]{8}(?:-[0-9a-f]{8}){4}$")
_LAYOUT = re.compile(r"^files/p(\d{2})/p(\d{8})/s(\d{8})/([0-9a-f]{8}(?:-[0-9a-f]{8}){4})\.dcm$")
#: Keywords of attributes whose whole value identifies someone or somewhere.
_IDENTIFYING = re.compile(
    r"(ID|IDs|Number|Numbers|Address|Telephone\w*|Telecom\w*|Comments|InstitutionName|StationName"
    r"|DepartmentName|RegionOfResidence|CountryOfResidence|Locator|History|Occupation|MilitaryRank"
    r"|BranchOfService|MedicalAlerts|Allergies|Religious\w*|Sponsor\w*)$"
)
_STRING_VRS = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_TOP_DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")


# ------------------------------------------------------------------------------ needles


@dataclass
class Needles:
    """Every PHI value of the inputs, indexed for whole-token search in any text."""

    single: dict[str, tuple[str, int]] = field(default_factory=dict)  # token -> (category, input index)
    multi: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)  # first token -> [...]
    uids: dict[str, int] = field(default_factory=dict)
    dates: set[str] = field(default_factory=set)
    minted: set[str] = field(default_factory=set)

    def add(self, value: str, category: str, index: int) -> None:
        text = value.strip().upper()
        tokens = list(_TOKEN.finditer(text))
        if not tokens:
            return
        text = text[tokens[0].start() : tokens[-1].end()]  # from a letter/digit to a letter/digit
        if len(text) < MIN_NEEDLE or text.lower() in STOP_WORDS:
            return
        if text.isdigit() and len(text) < MIN_NUMERIC_NEEDLE:
            return
        if len(tokens) == 1:
            self.single.setdefault(text, (category, index))
            return
        entries = self.multi.setdefault(tokens[0].group(), [])
        if all(needle != text for needle, _, _ in entries):
            entries.append((text, category, index))

    def add_uid(self, uid: str, index: int) -> None:
        uid = uid.strip().rstrip("\0")
        if uid and uid not in UID_dictionary and _UID_RUN.fullmatch(uid):
            self.uids.setdefault(uid, index)

    def add_date(self, yyyymmdd: str, index: int) -> None:
        self.dates.add(yyyymmdd)
        for rendering in date_renderings(yyyymmdd):
            self.add(rendering, "date", index)

    def merge(self, other: Needles) -> None:
        """Add ``other``'s needles; where both have one, the earlier input index wins."""
        for token, found in other.single.items():
            if token not in self.single or found[1] < self.single[token][1]:
                self.single[token] = found
        for token, entries in other.multi.items():
            mine = self.multi.setdefault(token, [])
            known = {needle for needle, _, _ in mine}
            mine.extend(entry for entry in entries if entry[0] not in known)
        for uid, index in other.uids.items():
            self.uids[uid] = min(index, self.uids.get(uid, index))
        self.dates |= other.dates

    def find(self, text: str) -> Iterator[tuple[str, int]]:
        """``(category, input index)`` of every needle in ``text`` (whole tokens only)."""
        upper = text.upper()
        for match in _TOKEN.finditer(upper):
            token = match.group()
            if token in self.minted:
                continue
            start, end = match.start(), match.end()
            if token.isdigit():
                in_uid = (start >= 2 and upper[start - 1] == "." and upper[start - 2].isdigit()) or (
                    end + 1 < len(upper) and upper[end] == "." and upper[end + 1].isdigit()
                )
                if not in_uid:
                    if token in self.single:
                        yield self.single[token]
                    elif len(token) in (10, 12, 14) and token[:8] in self.dates:  # a DT's date part
                        yield self.single.get(token[:8], ("date", -1))
            elif token in self.single:
                yield self.single[token]
            for needle, category, index in self.multi.get(token, ()):
                stop = start + len(needle)
                if upper.startswith(needle, start) and (stop == len(upper) or not _is_word(upper[stop])):
                    yield category, index
        for match in _UID_RUN.finditer(text):
            index = self.uids.get(match.group())
            if index is not None:
                yield "uid", index


def _is_word(char: str) -> bool:
    return char.isalnum()


def _values(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v) for v in value]
    if isinstance(value, bytes):
        return [value.decode("latin-1").rstrip("\0 ")]
    return [str(value)]


def _date_part(text: str) -> str | None:
    digits = text.strip().replace(".", "")[:8]
    return digits if len(digits) == 8 and digits.isdigit() else None


@dataclass
class InputRecord:
    """What verify remembers of one input file (in memory for the whole run)."""

    index: int
    patient: str
    study: str
    sop: str
    dates: dict[str, str]  # top-level DA keyword -> YYYYMMDD


def harvest(ds: Dataset, index: int, needles: Needles) -> None:
    """Add every PHI value of one input dataset (and its file meta) to ``needles``."""
    profile = get_profile()
    public_values: set[str] = set()
    private_values: list[str] = []
    for elem in _walk(ds, skip_undecodable=True):  # undecodable: its raw bytes are searched whole
        vr = elem.VR or "UN"
        if vr == "SQ":
            continue
        private = bool(elem.tag.group & 1)
        values = _values(elem.value) if vr in _STRING_VRS | {"DA", "DT", "UI", "UN", "CS"} else []
        if private:
            if vr in _STRING_VRS or (vr == "UN" and all(v.isprintable() for v in values)):
                private_values.extend(values)
            continue
        if vr == "PN":
            for value in values:
                needles.add(value, "name", index)
                for part in _PN_SPLIT.split(value):
                    needles.add(part, "name", index)
        elif vr in ("DA", "DT"):
            for value in values:
                date = _date_part(value)
                if date:
                    needles.add_date(date, index)
        elif vr == "UI":
            for value in values:
                needles.add_uid(value, index)
        elif vr in _STRING_VRS:
            action = profile.action_for(int(elem.tag))
            identifying = action not in (None, Action.KEEP, Action.CLEAN) and _IDENTIFYING.search(elem.keyword)
            for value in values:
                if identifying:
                    needles.add(value, "id_or_text", index)
                else:
                    public_values.add(value.strip().upper())
        elif vr == "CS":
            public_values.update(v.strip().upper() for v in values)
    for value in private_values:
        if value.strip().upper() not in public_values:
            needles.add(value, "private", index)


def harvest_partition(
    items: Iterable[tuple[int, str, int]], source: Location
) -> tuple[Needles, dict[str, InputRecord], int, int]:
    """Harvest the headers of ``(key_index, key, size)`` items (one task, or the whole run).

    Returns the needles, the records by SOPInstanceUID (first file wins, as in pass 1),
    the number of headers read and of unreadable files.
    """
    quiet_pydicom()
    needles = Needles()
    by_sop: dict[str, InputRecord] = {}
    read = unreadable = 0
    for index, key, size in items:
        if size == 0:
            continue
        try:
            with storage.open_for_header(source, key) as handle:
                ds = pydicom.dcmread(handle, stop_before_pixels=True)
            harvest(ds, index, needles)
        except Exception:
            unreadable += 1
            continue
        read += 1
        sop = _text(ds, "SOPInstanceUID")
        if not sop or sop in by_sop:
            continue
        patient = patient_key(_text(ds, "PatientID"), _text(ds, "IssuerOfPatientID"))
        dates = {}
        for keyword in _TOP_DATES:
            value = _date_part(_text(ds, keyword))
            if value:
                dates[keyword] = value
        by_sop[sop] = InputRecord(
            index=index,
            patient=patient,
            study=study_key(patient, _text(ds, "AccessionNumber"), _text(ds, "StudyInstanceUID")),
            sop=sop,
            dates=dates,
        )
    return needles, by_sop, read, unreadable


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    return str(value).strip() if value is not None else ""


# ----------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One problem; never carries a PHI value."""

    kind: str
    path: str  # the output key, PHI-bearing components redacted
    attribute: str = ""  # keyword, (gggg,eeee), Parquet column or "bytes"
    category: str = ""  # name, date, uid, id_or_text, private
    input_index: int | None = None

    def line(self) -> str:
        source = f" input #{self.input_index}" if self.input_index is not None and self.input_index >= 0 else ""
        category = f" ({self.category})" if self.category else ""
        return f"{self.kind:24s} {self.path}  {self.attribute}{category}{source}"


@dataclass
class Report:
    """The outcome of a verification: counts and findings, all safe to print."""

    inputs_read: int = 0
    inputs_unreadable: int = 0
    outputs: Counter = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    not_compared: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.findings))

    def lines(self, max_listed: int = MAX_LISTED) -> list[str]:
        out = [
            f"inputs: {self.inputs_read} headers read, {self.inputs_unreadable} unreadable",
            "outputs: " + ", ".join(f"{n} {kind}" for kind, n in sorted(self.outputs.items())),
        ]
        if self.not_compared:
            out.append(f"  {self.not_compared} output images have no input in INPUT (not compared)")
        out += [f"skipped: {reason}" for reason in self.skipped]
        out.append(f"findings: {len(self.findings)}")
        out += [f"  {kind:24s} {n}" for kind, n in sorted(self.counts().items())]
        if self.findings:
            out.append("kind                     output  attribute (category) input key index")
            out += ["  " + f.line() for f in self.findings[:max_listed]]
            if len(self.findings) > max_listed:
                out.append(f"  ... and {len(self.findings) - max_listed} more")
        return out


class _Audit:
    """Accumulates findings and the id relations seen across outputs."""

    def __init__(self, needles: Needles) -> None:
        self.needles = needles
        self.report = Report()
        self.subject_of: dict[str, set[int]] = defaultdict(set)  # patient key -> subject ids
        self.patient_of: dict[int, set[str]] = defaultdict(set)
        self.study_of: dict[str, set[int]] = defaultdict(set)
        self.study_key_of: dict[int, set[str]] = defaultdict(set)
        self.sop_paths: dict[str, str] = {}
        self.where: dict[tuple[str, object], str] = {}
        self.cleaned: list[str] = []  # outputs whose pixels the de-identifier cleaned

    def merge(self, other: _Audit) -> None:
        """Fold in a partition's audit (findings, counts and the id relations it saw)."""
        self.report.findings += other.report.findings
        self.report.outputs.update(other.report.outputs)
        self.report.not_compared += other.report.not_compared
        for mine, theirs in (
            (self.subject_of, other.subject_of),
            (self.patient_of, other.patient_of),
            (self.study_of, other.study_of),
            (self.study_key_of, other.study_key_of),
        ):
            for key, values in theirs.items():
                mine[key] |= values
        for sop, path in other.sop_paths.items():
            if sop in self.sop_paths:
                self.add("id_not_one_to_one", path, "SOPInstanceUID")
            else:
                self.sop_paths[sop] = path
        for key, path in other.where.items():
            self.where.setdefault(key, path)
        self.cleaned += other.cleaned

    def add(self, kind: str, path: str, attribute: str = "", category: str = "", index: int | None = None) -> None:
        self.report.findings.append(Finding(kind, redact(path, self.needles), attribute, category, index))

    def search(self, kind: str, path: str, attribute: str, text: str, seen: set | None = None) -> bool:
        """Report every needle in ``text`` once per (path, attribute); True when any was found."""
        found = False
        for category, index in self.needles.find(text):
            found = True
            if seen is not None:
                if (category, index) in seen:
                    continue
                seen.add((category, index))
            self.add(kind, path, attribute, category, index)
        return found


def redact(path: str, needles: Needles) -> str:
    """``path`` with every component that holds a needle replaced by ``<redacted>``."""
    parts = path.split("/")
    return "/".join("<redacted>" if next(needles.find(part), None) else part for part in parts)


def _tag_name(elem: DataElement) -> str:
    return elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"


def _walk(ds: Dataset, skip_undecodable: bool = False) -> Iterator[DataElement]:
    """Every element at every depth, file meta included, values decoded where possible.

    An element whose value cannot be decoded comes as UN with its raw bytes, or not at
    all with ``skip_undecodable``.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        yield from meta
    stack: list[Dataset] = [ds]
    while stack:
        current = stack.pop()
        for tag in list(current.keys()):
            try:
                elem = current[tag]
            except Exception:
                if skip_undecodable:
                    continue
                raw = current.get_item(tag)
                elem = DataElement(tag, "UN", raw.value if isinstance(raw, RawDataElement) else b"")
            yield elem
            if elem.VR == "SQ":
                stack.extend(elem.value or ())


def searchable_bytes(data: bytes, ds: Dataset) -> bytes:
    """The file's bytes (inflated when deflated) without the pixel data value."""
    try:
        meta = ds.file_meta
        body_start = 132 + 12 + int(meta.FileMetaInformationGroupLength)
        body = data[body_start:]
        if meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian:
            body = zlib.decompress(body, -zlib.MAX_WBITS)
        raw = ds.get_item(PIXEL_DATA)
        if isinstance(raw, RawDataElement) and raw.value is not None and raw.value_tell is not None:
            start = raw.value_tell - (0 if meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian else body_start)
            body = body[:start] + body[start + len(raw.value) :]
        return data[:body_start] + body
    except Exception:
        return data  # search everything rather than nothing


def _check_date(audit: _Audit, path: str, elem: DataElement) -> None:
    for value in _values(elem.value):
        for part in value.split("-") if elem.VR == "DA" else [value]:
            text = part.strip()
            if not text:
                continue
            year = text[:4]
            if not (year.isdigit() and DATE_YEARS[0] <= int(year) <= DATE_YEARS[1]):
                audit.add("date_out_of_range", path, _tag_name(elem))
                return


def check_dicom(
    audit: _Audit,
    path: str,
    data: bytes,
    identity: IdentityMap,
    dicom_to_sop: dict[str, str],
    inputs: dict[str, InputRecord],
) -> Dataset | None:
    """All checks on one output DICOM; returns the dataset for the pixel check."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception:
        audit.add("unreadable_output", path)
        audit.search("phi_in_bytes", path, "bytes", data.decode("latin-1"))
        return None
    # Before the walk: decoding the elements turns the raw PixelData element (which knows
    # where its value lies in the file) into a plain one, and the pixels would be searched.
    searchable = searchable_bytes(data, ds).decode("latin-1")
    seen: set = set()
    for elem in _walk(ds):
        name = _tag_name(elem)
        if elem.tag.group & 1:
            audit.add("private_element", path, name)
        if elem.VR in ("DA", "DT"):
            _check_date(audit, path, elem)
        if elem.VR == "SQ" or int(elem.tag) == PIXEL_DATA:
            continue
        if elem.VR == "UI":
            for value in _values(elem.value):
                index = audit.needles.uids.get(value.strip().rstrip("\0"))
                if index is not None:
                    audit.add("original_uid", path, name, "uid", index)
                    seen.add(("uid", index))
            continue
        if isinstance(elem.value, bytes) and elem.VR not in ("UN",) and elem.VR not in _STRING_VRS:
            continue  # binary (OB/OW/...): covered by the raw byte search
        for value in _values(elem.value):
            audit.search("phi_in_element", path, name, value, seen)
    audit.search("phi_in_bytes", path, "bytes", searchable, seen)
    if _text(ds, "PatientIdentityRemoved") != "YES":
        audit.add("not_marked_deidentified", path, "PatientIdentityRemoved")
    _check_ids(audit, path, ds, identity, dicom_to_sop, inputs)
    return ds


def _check_ids(
    audit: _Audit,
    path: str,
    ds: Dataset,
    identity: IdentityMap,
    dicom_to_sop: dict[str, str],
    inputs: dict[str, InputRecord],
) -> None:
    layout = _LAYOUT.match(path)
    if layout is None:
        audit.add("bad_path", path)
        return
    prefix, subject_text, study_text, dicom_id = layout.groups()
    subject, study = int(subject_text), int(study_text)
    if not subject_text.startswith(prefix):
        audit.add("bad_path", path)
    if not SUBJECT_ID_RANGE[0] <= subject <= SUBJECT_ID_RANGE[1]:
        audit.add("id_out_of_range", path, "subject_id")
    if not STUDY_ID_RANGE[0] <= study <= STUDY_ID_RANGE[1]:
        audit.add("id_out_of_range", path, "study_id")
    for keyword, expected in (
        ("PatientID", subject),
        ("PatientName", subject),
        ("AccessionNumber", study),
        ("StudyID", study),
    ):
        if _text(ds, keyword).rstrip("^") != str(expected):  # PatientName: "<subject>^"
            audit.add("id_mismatch", path, keyword)
    sop_out = _text(ds, "SOPInstanceUID")
    if sop_out in audit.sop_paths:
        audit.add("id_not_one_to_one", path, "SOPInstanceUID")
    audit.sop_paths[sop_out] = path
    header_subject = _text(ds, "PatientID")
    header_study = _text(ds, "AccessionNumber")
    sop = dicom_to_sop.get(dicom_id)
    if sop is None:
        audit.add("unknown_output", path, "dicom_id")
        return
    _, minted_subject, minted_study = identity.images[sop]
    if (minted_subject, minted_study) != (subject, study):
        audit.add("id_mismatch", path, "path")
    record = inputs.get(sop)
    if record is None:
        audit.report.not_compared += 1
        return
    # one-to-one, as the outputs say it (a tampered header shows up here)
    for real, text, forward, backward in (
        (record.patient, header_subject, audit.subject_of, audit.patient_of),
        (record.study, header_study, audit.study_of, audit.study_key_of),
    ):
        if text.isdigit():
            forward[real].add(int(text))
            backward[int(text)].add(real)
            audit.where.setdefault(("real", real), path)
            audit.where.setdefault(("id", int(text)), path)
    patient = identity.patients.get(record.patient)
    if patient is None:
        audit.add("unknown_output", path, "PatientID", index=record.index)
        return
    shift = patient[1]
    for keyword, original in record.dates.items():
        shifted = _date_part(_text(ds, keyword))
        if shifted is None:
            continue
        try:
            delta = (_as_date(shifted) - _as_date(original)).days
        except ValueError:
            audit.add("interval_not_kept", path, keyword, index=record.index)
            continue
        if delta != shift:
            audit.add("interval_not_kept", path, keyword, index=record.index)


def _as_date(yyyymmdd: str) -> dt.date:
    return dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))


def _one_to_one(audit: _Audit) -> None:
    for name, forward, backward in (
        ("subject_id", audit.subject_of, audit.patient_of),
        ("study_id", audit.study_of, audit.study_key_of),
    ):
        for real, ids in forward.items():
            if len(ids) > 1:
                audit.add("id_not_one_to_one", audit.where[("real", real)], name)
        for research_id, reals in backward.items():
            if len(reals) > 1:
                audit.add("id_not_one_to_one", audit.where[("id", research_id)], name)


def check_crosswalk(audit: _Audit, identity: IdentityMap) -> None:
    """Research ids in PRIVATE's crosswalk: in range, never shared, well formed."""
    where = "PRIVATE/crosswalk"
    subjects = Counter(subject for subject, _ in identity.patients.values())
    for subject, n in subjects.items():
        if n > 1:
            audit.add("id_not_one_to_one", where, "subject_id")
        if not SUBJECT_ID_RANGE[0] <= subject <= SUBJECT_ID_RANGE[1]:
            audit.add("id_out_of_range", where, "subject_id")
    studies = Counter(study for _, study in identity.studies.values())
    for study, n in studies.items():
        if n > 1:
            audit.add("id_not_one_to_one", where, "study_id")
        if not STUDY_ID_RANGE[0] <= study <= STUDY_ID_RANGE[1]:
            audit.add("id_out_of_range", where, "study_id")
    dicom_ids = Counter(dicom for dicom, _, _ in identity.images.values())
    for dicom_id, n in dicom_ids.items():
        if n > 1:
            audit.add("id_not_one_to_one", where, "dicom_id")
        if not _DICOM_ID.match(dicom_id):
            audit.add("id_out_of_range", where, "dicom_id")


def check_parquet(audit: _Audit, path: str, data: bytes) -> None:
    """Every column name and distinct cell of a Parquet file; id and date columns checked."""
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception:
        audit.add("unreadable_output", path)
        audit.search("phi_in_file", path, "bytes", data.decode("latin-1"))
        return
    for name in table.column_names:
        audit.search("phi_in_parquet", path, "<column name>", name)
        seen: set = set()
        column = table.column(name)
        distinct = column.unique().to_pylist() if column.num_chunks else []
        label = name if not next(audit.needles.find(name), None) else "<redacted>"
        for value in distinct:
            if value is None:
                continue
            audit.search("phi_in_parquet", path, label, str(value), seen)
            problem = _column_problem(name, value)
            if problem:
                audit.add(problem, path, name)
        if name == "dicom_id" and len(distinct) != table.num_rows:
            audit.add("id_not_one_to_one", path, name)


def _column_problem(name: str, value: object) -> str | None:
    """The finding kind for a bad value in a known id or date column, else None."""
    try:
        if name == "subject_id":
            return None if SUBJECT_ID_RANGE[0] <= int(value) <= SUBJECT_ID_RANGE[1] else "id_out_of_range"
        if name == "study_id":
            return None if STUDY_ID_RANGE[0] <= int(value) <= STUDY_ID_RANGE[1] else "id_out_of_range"
        if name == "StudyDate":
            return None if DATE_YEARS[0] <= int(value) // 10000 <= DATE_YEARS[1] else "date_out_of_range"
    except (TypeError, ValueError):
        return "id_out_of_range" if name != "StudyDate" else "date_out_of_range"
    if name == "dicom_id" and not _DICOM_ID.match(str(value)):
        return "id_out_of_range"
    return None


# ------------------------------------------------------------------------------- pixels


def pixels_cleaned(ds: Dataset) -> bool:
    """True when the de-identifier says it cleaned burned-in text (113101, BIA NO)."""
    codes = {_text(item, "CodeValue") for item in ds.get("DeidentificationMethodCodeSequence") or ()}
    return PIXELS_CLEANED_CODE in codes and _text(ds, "BurnedInAnnotation") == "NO"


def tesseract_text(ds: Dataset) -> str:
    """The text Tesseract reads in the first frame, scaled to 8 bits (PGM, no extra deps)."""
    frame = np.asarray(ds.pixel_array, dtype=np.float64)
    if frame.ndim > 2 and int(ds.get("SamplesPerPixel", 1)) == 1:
        frame = frame[0]
    if frame.ndim > 2:
        frame = frame.mean(axis=-1)
    low, high = float(frame.min()), float(frame.max())
    scaled = ((frame - low) * (255.0 / max(high - low, 1e-9))).astype(np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        image = posixpath.join(folder, "frame.pgm")
        with open(image, "wb") as handle:
            handle.write(f"P5 {scaled.shape[1]} {scaled.shape[0]} 255\n".encode())
            handle.write(scaled.tobytes())
        result = subprocess.run(["tesseract", image, "stdout"], capture_output=True, text=True, check=False)
    return result.stdout


OcrFunction = Callable[[Dataset], str]


def _pixel_check_plan(cleaned: int, ocr: OcrFunction | None) -> str | None:
    """Why the OCR check cannot run, or None when it should."""
    if importlib.util.find_spec(PIXEL_MODULE) is None:
        return f"pixel OCR check ({PIXEL_MODULE} is not installed: pixels are not cleaned by this build)"
    if cleaned == 0:
        return f"pixel OCR check (no output image carries code {PIXELS_CLEANED_CODE})"
    return None


# ---------------------------------------------------------------------------------- run


def check_partition(
    keys: Iterable[str],
    output: Location,
    needles: Needles,
    identity: IdentityMap,
    dicom_to_sop: dict[str, str],
    inputs: dict[str, InputRecord],
) -> _Audit:
    """Every check on a run of output keys (one task, or the whole output)."""
    quiet_pydicom()
    audit = _Audit(needles)
    for key in keys:
        for part in _components(key):
            audit.search("phi_in_name", key, "name", part)
        data = storage.read_bytes(output, key)
        if key.endswith(".dcm"):
            audit.report.outputs["DICOM"] += 1
            ds = check_dicom(audit, key, data, identity, dicom_to_sop, inputs)
            if ds is not None and pixels_cleaned(ds):
                audit.cleaned.append(key)
        elif key.endswith(".parquet"):
            audit.report.outputs["Parquet"] += 1
            check_parquet(audit, key, data)
        else:
            audit.report.outputs["other"] += 1
            audit.search("phi_in_file", key, "bytes", data.decode("latin-1"))
    audit.needles = Needles()  # the caller has them: do not ship them back
    return audit


def verify(
    source: Location,
    output: Location,
    private: Location,
    ocr: OcrFunction | None = tesseract_text,
    client: Client | None = None,
    partition_size: int = 100,
) -> Report:
    """Search OUTPUT for every PHI value of INPUT and check ids, dates and intervals.

    Without ``client`` everything runs here, one file at a time. With a client, the
    input headers and the output objects are read by Dask bag tasks of
    ``partition_size`` keys; the needles, crosswalk and input records travel to each
    worker once (broadcast), and only findings and id relations come back.
    """
    quiet_pydicom()
    storage.require_folder(source)
    storage.require_folder(output)
    identity = load_crosswalk(private, b"")  # the UID key is not needed: nothing is minted here
    if not identity.patients:
        raise ConfigError("no crosswalk in the private location: run cxr-dask run first")
    items = [(index, key, size) for index, (key, size) in enumerate(storage.list_files(source))]
    if client is None:
        harvested = [harvest_partition(items, source)]
    else:
        bag = db.from_sequence(items, partition_size=partition_size)
        harvested = client.compute(bag.map_partitions(_as_list(harvest_partition), source)).result()
    needles, inputs, read, unreadable = Needles(), {}, 0, 0
    for part_needles, part_inputs, part_read, part_unreadable in harvested:
        needles.merge(part_needles)
        for sop, record in part_inputs.items():
            if sop not in inputs or record.index < inputs[sop].index:
                inputs[sop] = record
        read, unreadable = read + part_read, unreadable + part_unreadable
    for subject, _ in identity.patients.values():
        needles.minted.add(str(subject))
    for _, study in identity.studies.values():
        needles.minted.add(str(study))
    for dicom_id, _, _ in identity.images.values():
        needles.minted.update(dicom_id.upper().split("-"))

    audit = _Audit(needles)
    audit.report.inputs_read, audit.report.inputs_unreadable = read, unreadable
    check_crosswalk(audit, identity)
    dicom_to_sop = {dicom_id: sop for sop, (dicom_id, _, _) in identity.images.items()}
    keys = [key for key, _ in storage.list_files(output)]
    if client is None:
        audit.merge(check_partition(keys, output, needles, identity, dicom_to_sop, inputs))
    else:
        # one list, so scatter does not take the dicts for mappings of many values
        shared = client.scatter([needles, identity, dicom_to_sop, inputs], broadcast=True, hash=False)
        bag = db.from_sequence(keys, partition_size=partition_size)
        for part in client.compute(bag.map_partitions(_as_list(check_partition), output, *shared)).result():
            audit.merge(part)
    _one_to_one(audit)

    skip = _pixel_check_plan(len(audit.cleaned), ocr)
    if skip is not None:
        audit.report.skipped.append(skip)
    else:
        _ocr_outputs(audit, output, audit.cleaned, ocr)
    return audit.report


def _as_list(function: Callable[..., object]) -> Callable[..., list[object]]:
    """A partition function whose one result becomes the partition's only element."""
    return functools.partial(_one_element, function)


def _one_element(function: Callable[..., object], *args: object) -> list[object]:
    return [function(*args)]


def _ocr_outputs(audit: _Audit, output: Location, keys: Iterable[str], ocr: OcrFunction | None) -> None:
    if ocr is None or (ocr is tesseract_text and shutil.which("tesseract") is None):
        audit.add("ocr_unavailable", "OUTPUT", "tesseract")
        return
    for key in keys:
        ds = pydicom.dcmread(io.BytesIO(storage.read_bytes(output, key)))
        try:
            text = ocr(ds)
        except Exception:
            audit.add("ocr_failed", key, "PixelData")
            continue
        audit.search("phi_in_pixels", key, "PixelData", text, set())


def _components(key: str) -> list[str]:
    return [part for part in key.split("/") if part]
