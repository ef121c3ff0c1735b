"""An auditor's check of a finished dataset: no PHI of the inputs anywhere in OUTPUT.

``verify(INPUT, OUTPUT, PRIVATE)`` re-reads every input header, gathers its identifying
values ("needles", see :mod:`cxr_dask.verify.needles`, by verify's own vocabulary in
:mod:`cxr_dask.verify.vocabulary`), then reads every object under OUTPUT once and
reports **findings** (exit 1) and **notes** (printed, exit 0). Every one names its kind,
where, and why; none carries a value.

Where it looks: every element of every output DICOM at any depth and its file meta, the
file's raw bytes outside the pixel data, the pixel containers (bits above BitsStored,
bytes past the last frame, JPEG COM/APPn and JPEG 2000 COM segments), the pixels
themselves (verify's own text-stroke screen on every image, then Tesseract on the
flagged regions, see :mod:`cxr_dask.verify.pixels`), every Parquet cell and column
name, every folder and file name, every other object's bytes. Besides the needles:
HIPAA-shaped identifiers (telephone, SSN, e-mail, URL, IP) in kept free text, private
elements, original UIDs, dates outside 2100-2200, ids out of range, not one to one or
not matching the crosswalk, intervals not kept, inputs with neither an output nor an
audit row.

Findings versus notes. A value that identifies one patient and turns up in *another*
patient's output, in an attribute where that output's own input held the same value
(a patient named ``KNEE`` and another film's BodyPartExamined ``KNEE``; an
InstitutionName ``GE MEDICAL SYSTEMS`` and another file's Manufacturer), is a
coincidence: a note. Anything else is a finding: a needle in its own patient's output, a
value no input held in that place, a hit in pixels, names, or bytes outside any
element. A check that cannot run (OCR missing, failing or timing out, pixels that cannot
be decoded) is a finding, ``pixel_check_failed``: it never passes by default.

The checks here are plain functions over one file's bytes (``check_dicom``,
``check_parquet``) or a run of keys (``harvest_partition``, ``check_partition``), and
``verify`` runs them through a ``Runner``: here, one file at a time (``InProcess``), or
on a Dask cluster (:mod:`cxr_dask.pipeline_verify`, where verify's graphs are built).
"""

from __future__ import annotations

import functools
import io
import json
import posixpath
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import pyarrow.parquet as pq
import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from cxr_dask import metadata, storage
from cxr_dask.dicom import vrs
from cxr_dask.dicom.codes import OWN_TEXTS
from cxr_dask.dicom.dates import as_date, date_digits, in_shifted_years, within_shifted_years
from cxr_dask.dicom.layout import DICOM_ID, IMAGE_PATH_FORM, parse_image_path
from cxr_dask.dicom.values import keyword_text, tag_name, value_strings
from cxr_dask.errors import ConfigError
from cxr_dask.identity import (
    STUDY_ID_RANGE,
    SUBJECT_ID_RANGE,
    IdentityMap,
    file_keys,
    load_crosswalk,
)
from cxr_dask.privacy import quiet_pydicom
from cxr_dask.storage import Location
from cxr_dask.verify import pixels
from cxr_dask.verify.needles import Needle, Needles, digest
from cxr_dask.verify.pixels import OcrFailure, OcrSettings
from cxr_dask.verify.vocabulary import (
    EQUIPMENT_COINCIDENCES,
    EQUIPMENT_KEYWORDS,
    IDENTIFIER_PATTERNS,
    SHAPES_OF_VALUE,
    TEXT_VRS,
    is_identifying,
)

_K = TypeVar("_K")
_V = TypeVar("_V")

DEFAULT_OCR = OcrSettings()
PIXEL_DATA = 0x7FE00010
MAX_LISTED = 50
#: The names the dataset's layout fixes (a hit there is the layout's word, not a leak).
LAYOUT_NAMES = frozenset({"files", "metadata.parquet", "record_list.parquet", "study_list.parquet"})
SCHEMA_COLUMNS = frozenset(
    metadata.METADATA_SCHEMA.names + metadata.RECORD_LIST_SCHEMA.names + metadata.STUDY_LIST_SCHEMA.names
)
#: Codestream segments a codec writes itself (searched, not flagged).
CODEC_SEGMENTS = {
    "JPEG APP0": (b"JFIF\0", b"JFXX\0"),
    "JPEG APP14": (b"Adobe",),
    "JPEG APP2": (b"ICC_PROFILE\0",),
    "J2K COM": (b"Created by OpenJPEG", b"Kakadu", b"Created by Grok", b"Created by JasPer"),
}

_PN_VRS = frozenset({"PN"})
_TOP_DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")


# ------------------------------------------------------------------------------ inputs


def _normal(value: str) -> str:
    return " ".join(value.upper().split()).strip("\0 ")


def _held(attribute: str, value: str) -> bytes:
    return digest(f"{attribute}\x1f{_normal(value)}").to_bytes(8, "big")


def category_of(keyword: str) -> str:
    """The kind of identifier an attribute holds, for the report."""
    if keyword in ("PatientID", "OtherPatientIDs", "MedicalRecordLocator", "IssuerOfPatientID"):
        return "mrn"
    if keyword == "AccessionNumber":
        return "accession"
    if keyword.endswith("Address") or keyword in ("RegionOfResidence", "CountryOfResidence"):
        return "address"
    if "Telephone" in keyword or "Telecom" in keyword:
        return "telephone"
    if keyword in ("InstitutionName", "InstitutionalDepartmentName", "StationName"):
        return "place"
    return "id"


@dataclass
class InputRecord:
    """What verify remembers of one input file (in memory for the whole run)."""

    index: int
    patient: str
    patient_code: int
    study: str
    sop: str
    dates: dict[str, str]  # top-level DA keyword -> YYYYMMDD
    held: bytes = b""  # 8-byte digests of (attribute keyword, value), every value it held

    def holds(self, attribute: str, value: str) -> bool:
        """True when this input held ``value`` in ``attribute`` (at any depth)."""
        wanted = _held(attribute, value)
        view = memoryview(self.held)
        return any(view[i : i + 8] == wanted for i in range(0, len(view), 8))


def harvest(ds: Dataset, index: int, needles: Needles, patient: int) -> bytes:
    """Add every identifying value of one input to ``needles``; return what it held where."""
    held: set[bytes] = set()
    public_values: set[str] = set()
    private_values: list[str] = []
    for elem in walk(ds, skip_undecodable=True):  # undecodable: its raw bytes are searched whole
        vr = elem.VR or "UN"
        if vr == "SQ" or int(elem.tag) == PIXEL_DATA:
            continue
        textual = vr in TEXT_VRS | {"DA", "DT", "UI", "UN"}
        values = value_strings(elem.value) if textual else []
        if elem.tag.group & 1:
            if vr in TEXT_VRS or (vr == "UN" and all(v.isprintable() for v in values)):
                private_values.extend(values)
            continue
        keyword = elem.keyword or ""
        for value in values:
            held.add(_held(keyword, value))
            if vr not in ("PN", "DA", "DT", "UI"):
                public_values.add(_normal(value))
        if vr == "PN":
            for value in values:
                needles.add_name(value, index, patient)
        elif vr in ("DA", "DT"):
            for value in values:
                date = date_digits(value)
                if date:
                    needles.add_date(date, index, patient)
        elif vr == "UI":
            for value in values:
                needles.add_uid(value, index, patient)
        elif is_identifying(keyword):
            for value in values:
                needles.add(value, category_of(keyword), index, patient)
    for value in private_values:  # vendors copy public values (MONOCHROME2) into private tags
        if _normal(value) not in public_values:
            needles.add(value, "private", index, patient)
    return b"".join(sorted(held))


@dataclass
class Harvest:
    """One task's share of the inputs."""

    needles: Needles
    records: dict[str, InputRecord]  # by SOPInstanceUID, first file wins as in pass 1
    key_sops: list[tuple[str, str]]  # (key, SOPInstanceUID or "") of every input key
    read: int = 0
    unreadable: int = 0


@quiet_pydicom()
def harvest_partition(items: Iterable[tuple[int, str, int]], source: Location) -> Harvest:
    """Harvest the headers of ``(key_index, key, size)`` items (one task, or the whole run)."""
    result = Harvest(Needles(), {}, [])
    for index, key, size in items:
        sop = ""
        try:
            if size == 0:
                raise ValueError("empty")
            with storage.open_for_header(source, key) as handle:
                ds = pydicom.dcmread(handle, stop_before_pixels=True)
            keys = file_keys(functools.partial(keyword_text, ds))
            patient = keys.patient
            code = digest(patient)
            held = harvest(ds, index, result.needles, code)
        except Exception:
            result.unreadable += 1
            result.key_sops.append((key, sop))
            continue
        result.read += 1
        sop = keys.sop
        result.key_sops.append((key, sop))
        if not sop or sop in result.records:
            continue
        dates = {}
        for keyword in _TOP_DATES:
            value = date_digits(keyword_text(ds, keyword))
            if value:
                dates[keyword] = value
        result.records[sop] = InputRecord(
            index=index,
            patient=patient,
            patient_code=code,
            study=keys.study,
            sop=sop,
            dates=dates,
            held=held,
        )
    return result


# ----------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One finding or note; never carries a PHI value."""

    kind: str
    path: str  # the output key, PHI-bearing components redacted
    attribute: str = ""  # keyword, (gggg,eeee), Parquet column, "bytes" or a container
    category: str = ""  # name, date, mrn, accession, address, telephone, place, id, uid, private
    input_index: int | None = None
    reason: str = ""

    def line(self) -> str:
        source = f" input #{self.input_index}" if self.input_index is not None and self.input_index >= 0 else ""
        category = f" ({self.category})" if self.category else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{self.kind:24s} {self.path}  {self.attribute}{category}{source}{why}"


@dataclass
class Report:
    """The outcome of a verification: counts, findings and notes, all safe to print."""

    inputs_read: int = 0
    inputs_unreadable: int = 0
    outputs: Counter = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    not_compared: int = 0
    pixels: Counter = field(default_factory=Counter)  # images screened, flagged, OCR calls
    inputs_listed: list[str] = field(default_factory=list)  # keys, redacted
    outputs_listed: list[str] = field(default_factory=list)
    private_read: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.findings))

    def note_counts(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.notes))

    def lines(self, max_listed: int = MAX_LISTED) -> list[str]:
        out = [
            f"inputs: {self.inputs_read} headers read, {self.inputs_unreadable} unreadable",
            "outputs: " + ", ".join(f"{n} {kind}" for kind, n in sorted(self.outputs.items())),
            "pixels: " + ", ".join(f"{n} {kind}" for kind, n in sorted(self.pixels.items())),
        ]
        if self.not_compared:
            out.append(f"  {self.not_compared} output images have no input in INPUT (not compared)")
        out += [f"skipped: {reason}" for reason in self.skipped]
        for title, items, counts in (
            ("findings", self.findings, self.counts()),
            ("notes", self.notes, self.note_counts()),
        ):
            out.append(f"{title}: {len(items)}")
            out += [f"  {kind:24s} {n}" for kind, n in sorted(counts.items())]
            if items:
                out.append(f"  {title[:-1]}: kind, output, attribute (category), input key index: why")
                out += ["  " + f.line() for f in items[:max_listed]]
                if len(items) > max_listed:
                    out.append(f"  ... and {len(items) - max_listed} more")
        return out

    def as_json(self) -> dict[str, Any]:
        """The machine-readable report: no values, only kinds, places, counts and reasons."""
        return {
            "ok": self.ok,
            "counts": {
                "findings": self.counts(),
                "notes": self.note_counts(),
                "inputs_read": self.inputs_read,
                "inputs_unreadable": self.inputs_unreadable,
                "outputs": dict(self.outputs),
                "pixels": dict(self.pixels),
                "not_compared": self.not_compared,
            },
            "findings": [asdict(f) for f in self.findings],
            "notes": [asdict(f) for f in self.notes],
            "skipped": list(self.skipped),
            "files_read": {
                "input": list(self.inputs_listed),
                "output": list(self.outputs_listed),
                "private": list(self.private_read),
            },
        }

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.as_json(), handle, indent=1, sort_keys=True)
            handle.write("\n")


class Audit:
    """Accumulates findings, notes and the id relations seen across outputs."""

    def __init__(self, needles: Needles) -> None:
        self.needles = needles
        self.report = Report()
        self.subject_of: defaultdict[str, set[int]] = defaultdict(set)  # patient key -> subject ids
        self.patient_of: defaultdict[int, set[str]] = defaultdict(set)
        self.study_of: defaultdict[str, set[int]] = defaultdict(set)
        self.study_key_of: defaultdict[int, set[str]] = defaultdict(set)
        self.sop_paths: dict[str, str] = {}
        self.where: dict[tuple[str, object], str] = {}
        self.sops_written: set[str] = set()  # input SOPs whose output was found

    def merge(self, other: Audit) -> None:
        """Fold in a partition's audit (findings, notes, counts and the id relations it saw)."""
        self.report.findings += other.report.findings
        self.report.notes += other.report.notes
        self.report.outputs.update(other.report.outputs)
        self.report.pixels.update(other.report.pixels)
        self.report.not_compared += other.report.not_compared
        self.report.outputs_listed += other.report.outputs_listed
        _union_into(self.subject_of, other.subject_of)
        _union_into(self.patient_of, other.patient_of)
        _union_into(self.study_of, other.study_of)
        _union_into(self.study_key_of, other.study_key_of)
        for sop, path in other.sop_paths.items():
            if sop in self.sop_paths:
                self.add("id_not_one_to_one", path, "SOPInstanceUID", reason="two outputs share a SOPInstanceUID")
            else:
                self.sop_paths[sop] = path
        for found, path in other.where.items():
            self.where.setdefault(found, path)
        self.sops_written |= other.sops_written

    def add(
        self,
        kind: str,
        path: str,
        attribute: str = "",
        category: str = "",
        index: int | None = None,
        reason: str = "",
    ) -> None:
        self.report.findings.append(Finding(kind, redact(path, self.needles), attribute, category, index, reason))

    def note(self, kind: str, path: str, attribute: str, category: str, index: int | None, reason: str) -> None:
        self.report.notes.append(Finding(kind, redact(path, self.needles), attribute, category, index, reason))

    def search(
        self,
        kind: str,
        path: str,
        attribute: str,
        text: str,
        seen: set | None = None,
        record: InputRecord | None = None,
        held_as: str | None = None,
    ) -> bool:
        """Judge every needle in ``text``, once per (path, attribute); True when any was found.

        ``held_as``: the attribute keyword under which ``text`` is a kept value; a needle of
        another patient there is a note when ``record`` (this output's input) held the
        same ``text`` in that attribute.
        """
        found = False
        for needle in self.needles.find(text):
            found = True
            mark = (needle.category, needle.index)
            if seen is not None:
                if mark in seen:
                    continue
                seen.add(mark)
            self.judge(kind, path, attribute, needle, record, held_as, text)
        return found

    def judge(
        self,
        kind: str,
        path: str,
        attribute: str,
        needle: Needle,
        record: InputRecord | None,
        held_as: str | None,
        text: str,
    ) -> None:
        """A finding, or a note when the hit is another patient's value that this file's input held here."""
        own = record is not None and record.patient_code in needle.patients
        # a place (an institution named like its vendor) or a private value (a product id
        # inside the model name) that is also the equipment's name the input held there
        # or a device id or a person-name field the device filled with its own name
        # (fo-dicom's GH064: ContentCreatorName "Achieva", the model; dwv's OsiriX capture)
        vendor = needle.category in EQUIPMENT_COINCIDENCES and held_as in EQUIPMENT_KEYWORDS
        if vendor and needle.category == "name" and record is not None and record.holds("PatientName", text):
            vendor = False  # the patient's whole name in an equipment attribute is a leak, whoever wrote it
        # a name that is also a defined term of the image's type (pydicom's enhanced CT
        # "Perfusion^MCA Stroke", ImageType DERIVED\PRIMARY\PERFUSION) the input held there
        typed = needle.category == "name" and held_as in IMAGE_TYPE_KEYWORDS
        if own and (vendor or typed) and record is not None and held_as is not None and record.holds(held_as, text):
            what = {"place": "a place name", "private": "a private value", "id": "an id"}.get(needle.category, "a name")
            whose = "a term of the image's type" if typed else "the vendor's name"
            self.note(
                "coincidence",
                path,
                attribute,
                needle.category,
                needle.index,
                f"{what} of this patient's that is also {whose} its input held in {held_as}",
            )
        elif own:
            self.add(kind, path, attribute, needle.category, needle.index, "identifies this output's own patient")
        elif record is not None and held_as is not None and record.holds(held_as, text):
            self.note(
                "coincidence",
                path,
                attribute,
                needle.category,
                needle.index,
                f"identifies another patient; this image's own input held the same value in {held_as}",
            )
        elif record is None:
            self.add(kind, path, attribute, needle.category, needle.index, "identifies a patient of the inputs")
        else:
            self.add(
                kind,
                path,
                attribute,
                needle.category,
                needle.index,
                "identifies another patient; this image's input never held this value here",
            )


#: Attributes of the method record this tool writes (``codes.OWN_TEXTS``).
METHOD_KEYWORDS = frozenset({"DeidentificationMethod", "CodeMeaning"})

#: Coded attributes whose values are the standard's defined terms for the image's type.
IMAGE_TYPE_KEYWORDS = frozenset({"ImageType", "FrameType"})


def _union_into(mine: defaultdict[_K, set[_V]], theirs: Mapping[_K, set[_V]]) -> None:
    for key, values in theirs.items():
        mine[key] |= values


def redact(path: str, needles: Needles) -> str:
    """``path`` with every component that holds a needle replaced by ``<redacted>``."""
    parts = path.split("/")
    return "/".join(part if part in LAYOUT_NAMES or not needles.any_in(part) else "<redacted>" for part in parts)


def walk(ds: Dataset, skip_undecodable: bool = False) -> Iterator[DataElement]:
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


def pixel_span(data: bytes, ds: Dataset) -> tuple[bytes, bytes]:
    """The file's bytes (inflated when deflated) without the pixel data value, and that value."""
    try:
        meta = ds.file_meta
        body_start = 132 + 12 + int(meta.FileMetaInformationGroupLength)
        body = data[body_start:]
        deflated = meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
        if deflated:
            body = zlib.decompress(body, -zlib.MAX_WBITS)
        raw = ds.get_item(PIXEL_DATA)
        if isinstance(raw, RawDataElement) and raw.value is not None and raw.value_tell is not None:
            start = raw.value_tell - (0 if deflated else body_start)
            return data[:body_start] + body[:start] + body[start + len(raw.value) :], bytes(raw.value)
        return data[:body_start] + body, b""
    except Exception:
        return data, b""  # search everything rather than nothing


def _check_date(audit: Audit, path: str, elem: DataElement) -> None:
    for value in value_strings(elem.value):
        if not within_shifted_years(value, elem.VR):
            audit.add("date_out_of_range", path, tag_name(elem.tag), reason="not a shifted date (2100-2200)")
            return


def _without_own_texts(text: str) -> str:
    """``text`` with the method record this tool writes blanked (``codes.OWN_TEXTS``): the
    raw-byte search skips it as the element search does, and nothing else."""
    for own in OWN_TEXTS:
        text = text.replace(own, " " * len(own))
    return text


@dataclass
class Shared:
    """What every output check needs: broadcast once per worker."""

    needles: Needles
    identity: IdentityMap
    dicom_to_sop: dict[str, str]
    inputs: dict[str, InputRecord]
    ocr: OcrSettings | None


def check_dicom(audit: Audit, path: str, data: bytes, shared: Shared) -> None:
    """All checks on one output DICOM, from the one read of its bytes."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception:
        audit.add("unreadable_output", path, reason="not a readable DICOM")
        audit.search("phi_in_bytes", path, "bytes", data.decode("latin-1"))
        return
    layout = parse_image_path(path)
    sop = shared.dicom_to_sop.get(layout.dicom_id) if layout else None
    record = shared.inputs.get(sop) if sop else None
    # Before the walk: decoding the elements turns the raw PixelData element (which knows
    # where its value lies in the file) into a plain one, and the pixels would be searched.
    outside, pixel_bytes = pixel_span(data, ds)
    seen: set = set()  # (category, input index) of every needle found in an element
    for elem in walk(ds):
        name = tag_name(elem.tag)
        if elem.tag.group & 1:
            audit.add("private_element", path, name, reason="private elements are removed")
        if elem.VR in ("DA", "DT"):
            _check_date(audit, path, elem)
        if elem.VR == "SQ" or int(elem.tag) == PIXEL_DATA:
            continue
        if elem.VR == "UI":
            for value in value_strings(elem.value):
                needle = audit.needles.uids.get(value.strip().rstrip("\0"))
                if needle is not None:
                    audit.add("original_uid", path, name, "uid", needle.index, "an input's UID was not replaced")
                    seen.add(("uid", needle.index))
            continue
        local: set = set()
        if isinstance(elem.value, bytes) and elem.VR != "UN" and elem.VR not in TEXT_VRS:
            continue  # binary (OB/OW/...): covered by the raw byte search
        keyword = elem.keyword or None
        for value in value_strings(elem.value):
            if keyword in METHOD_KEYWORDS and value in OWN_TEXTS:
                continue  # the method record this tool writes: fixed text in every output, no one's
            audit.search("phi_in_element", path, name, value, local, record, keyword)
            if elem.VR in vrs.TEXT:
                for pattern, regex in IDENTIFIER_PATTERNS.items():
                    if pattern in SHAPES_OF_VALUE.get(keyword or "", ()):
                        continue  # the attribute's own syntax, not an identifier (version 1.0.3.37)
                    if regex.search(value):
                        audit.add("identifier_pattern", path, name, pattern, reason=f"free text holds a {pattern}")
        seen |= local
    audit.search("phi_in_bytes", path, "bytes", _without_own_texts(outside.decode("latin-1")), seen, record)
    if keyword_text(ds, "PatientIdentityRemoved") != "YES":
        audit.add("not_marked_deidentified", path, "PatientIdentityRemoved", reason="must be YES")
    if sop is not None and record is not None:
        audit.sops_written.add(sop)
    _check_ids(audit, path, ds, shared, record)
    check_pixels(audit, path, ds, pixel_bytes, shared.ocr, record)


def check_pixels(
    audit: Audit, path: str, ds: Dataset, pixel_bytes: bytes, ocr: OcrSettings | None, record: InputRecord | None
) -> None:
    """Containers (hidden bits, trailing bytes, codestream segments), then text in the pixels."""
    if "PixelData" not in ds:
        return
    value = pixel_bytes or (ds.PixelData if isinstance(ds.PixelData, bytes) else b"")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        _check_containers(audit, path, ds, value, syntax, record)
    except Exception:
        audit.add("pixel_check_failed", path, "PixelData", reason="the pixel container could not be parsed")
    audit.report.pixels["images screened"] += 1
    if ocr is None:
        return
    try:
        frames = pixels.frames_as_grey(pixels.stored_values(ds), int(ds.get("SamplesPerPixel", 1) or 1))
        regions = pixels.flagged_crops(frames)
    except Exception:
        audit.add("pixel_check_failed", path, "PixelData", reason="the pixels could not be decoded")
        return
    if not regions:
        return
    audit.report.pixels["images flagged"] += 1
    audit.report.pixels["regions flagged"] += len(regions)
    texts = []
    for page in pixels.pages(regions):
        try:
            audit.report.pixels["OCR calls"] += 1
            texts.append(ocr.read(page))
        except OcrFailure as failure:
            audit.add("pixel_check_failed", path, "PixelData", reason=str(failure))
            return
    text = "\n".join(texts)
    audit.search("phi_in_pixels", path, "PixelData", text, set(), record)


def _check_containers(
    audit: Audit, path: str, ds: Dataset, value: bytes, syntax: object, record: InputRecord | None
) -> None:
    compressed = bool(syntax is not None and pydicom.uid.UID(str(syntax)).is_compressed)
    if not compressed:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        allocated = int(ds.get("BitsAllocated", 8) or 8)
        stored = int(ds.get("BitsStored", allocated) or allocated)
        expected = (rows * columns * samples * frames * allocated + 7) // 8
        trailing = value[expected:]
        if len(trailing) > 1 or trailing.strip(b"\0"):
            audit.add("trailing_pixel_bytes", path, "PixelData", reason=f"{len(trailing)} bytes past the last frame")
            audit.search("phi_in_pixel_container", path, "PixelData trailing bytes", trailing.decode("latin-1"))
        if allocated in (16, 32) and stored < allocated:
            signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
            hidden = hidden_bits(value[:expected], allocated, stored, signed)
            if hidden:
                audit.add("hidden_pixel_bits", path, "PixelData", reason="bits above BitsStored are set")
                audit.search("phi_in_pixel_container", path, "PixelData high bits", hidden.decode("latin-1"))
        return
    from pydicom.encaps import generate_fragmented_frames

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    for frame in generate_fragmented_frames(value, number_of_frames=frames):
        stream = b"".join(frame)
        for name, payload in pixels.jpeg_segments(stream) + pixels.j2k_comments(stream):
            audit.search("phi_in_pixel_container", path, name, payload.decode("latin-1"), None, record)
            if not payload.startswith(CODEC_SEGMENTS.get(name, (b"\xff\xff\xff",))):
                audit.add("codestream_segment", path, name, reason="a comment or application segment no viewer shows")


def hidden_bits(value: bytes, allocated: int, stored: int, signed: bool) -> bytes:
    """What the bits above BitsStored spell, when any is set beyond a sign extension (else b"")."""
    width = allocated // 8
    samples = np.frombuffer(value[: len(value) // width * width], dtype=f"<u{width}").astype(np.uint64)
    high = samples >> np.uint64(stored)
    if signed:
        sign = (samples >> np.uint64(stored - 1)) & np.uint64(1)
        ones = np.uint64((1 << (allocated - stored)) - 1)
        wrong = high != np.where(sign == 1, ones, np.uint64(0))
    else:
        wrong = high != 0
    if not wrong.any():
        return b""
    per_sample = (high & np.uint64(0xFF)).astype(np.uint8).tobytes()
    nibbles = (high & np.uint64(0xF)).astype(np.uint8)
    packed = [  # two nibbles a byte, from an even or an odd sample
        ((nibbles[start:-1:2] << 4) | nibbles[start + 1 :: 2][: len(nibbles[start:-1:2])]).tobytes() for start in (0, 1)
    ]
    return b"\n".join([per_sample, *packed])


def _check_ids(audit: Audit, path: str, ds: Dataset, shared: Shared, record: InputRecord | None) -> None:
    layout = parse_image_path(path)
    if layout is None:
        audit.add("bad_path", path, reason=f"not {IMAGE_PATH_FORM}")
        return
    subject, study, dicom_id = layout.subject_id, layout.study_id, layout.dicom_id
    if not layout.prefix_matches:
        audit.add("bad_path", path, reason="the pNN folder is not the subject id's first digits")
    if not SUBJECT_ID_RANGE[0] <= subject <= SUBJECT_ID_RANGE[1]:
        audit.add("id_out_of_range", path, "subject_id", reason="outside the subject id range")
    if not STUDY_ID_RANGE[0] <= study <= STUDY_ID_RANGE[1]:
        audit.add("id_out_of_range", path, "study_id", reason="outside the study id range")
    for keyword, expected in (
        ("PatientID", subject),
        ("PatientName", subject),
        ("AccessionNumber", study),
        ("StudyID", study),
    ):
        if keyword_text(ds, keyword).rstrip("^") != str(expected):  # PatientName: "<subject>^"
            audit.add("id_mismatch", path, keyword, reason="the header disagrees with the path")
    sop_out = keyword_text(ds, "SOPInstanceUID")
    if sop_out in audit.sop_paths:
        audit.add("id_not_one_to_one", path, "SOPInstanceUID", reason="two outputs share a SOPInstanceUID")
    audit.sop_paths[sop_out] = path
    header_subject = keyword_text(ds, "PatientID")
    header_study = keyword_text(ds, "AccessionNumber")
    sop = shared.dicom_to_sop.get(dicom_id)
    if sop is None:
        audit.add("unknown_output", path, "dicom_id", reason="the crosswalk never minted this dicom_id")
        return
    _, minted_subject, minted_study = shared.identity.images[sop]
    if (minted_subject, minted_study) != (subject, study):
        audit.add("id_mismatch", path, "path", reason="the path disagrees with the crosswalk")
    if record is None:
        audit.report.not_compared += 1
        return
    for real, text, forward, backward in (
        (record.patient, header_subject, audit.subject_of, audit.patient_of),
        (record.study, header_study, audit.study_of, audit.study_key_of),
    ):
        if text.isdigit():
            forward[real].add(int(text))
            backward[int(text)].add(real)
            audit.where.setdefault(("real", real), path)
            audit.where.setdefault(("id", int(text)), path)
    patient = shared.identity.patients.get(record.patient)
    if patient is None:
        audit.add("unknown_output", path, "PatientID", index=record.index, reason="the patient is not in the crosswalk")
        return
    shift = patient[1]
    for keyword, original in record.dates.items():
        shifted = date_digits(keyword_text(ds, keyword))
        if shifted is None:
            continue
        try:
            delta = (as_date(shifted) - as_date(original)).days
        except ValueError:
            delta = None
        if delta != shift:
            audit.add(
                "interval_not_kept", path, keyword, index=record.index, reason="not the patient's shift of its input"
            )


def _one_to_one(audit: Audit) -> None:
    for name, forward, backward in (
        ("subject_id", audit.subject_of, audit.patient_of),
        ("study_id", audit.study_of, audit.study_key_of),
    ):
        for real, ids in forward.items():
            if len(ids) > 1:
                audit.add("id_not_one_to_one", audit.where[("real", real)], name, reason="one real key, several ids")
        for research_id, reals in backward.items():
            if len(reals) > 1:
                audit.add("id_not_one_to_one", audit.where[("id", research_id)], name, reason="one id, several keys")


def check_crosswalk(audit: Audit, identity: IdentityMap) -> None:
    """Research ids in PRIVATE's crosswalk: in range, never shared, well formed."""
    where = "PRIVATE/crosswalk"
    subjects = Counter(subject for subject, _ in identity.patients.values())
    for subject, n in subjects.items():
        if n > 1:
            audit.add("id_not_one_to_one", where, "subject_id", reason="a subject id minted twice")
        if not SUBJECT_ID_RANGE[0] <= subject <= SUBJECT_ID_RANGE[1]:
            audit.add("id_out_of_range", where, "subject_id", reason="outside the subject id range")
    studies = Counter(study for _, study in identity.studies.values())
    for study, n in studies.items():
        if n > 1:
            audit.add("id_not_one_to_one", where, "study_id", reason="a study id minted twice")
        if not STUDY_ID_RANGE[0] <= study <= STUDY_ID_RANGE[1]:
            audit.add("id_out_of_range", where, "study_id", reason="outside the study id range")
    dicom_ids = Counter(dicom for dicom, _, _ in identity.images.values())
    for dicom_id, n in dicom_ids.items():
        if n > 1:
            audit.add("id_not_one_to_one", where, "dicom_id", reason="a dicom_id minted twice")
        if not DICOM_ID.match(dicom_id):
            audit.add("id_out_of_range", where, "dicom_id", reason="not a well-formed dicom_id")


def _column_attribute(name: str) -> str:
    """The DICOM keyword a Parquet column holds (``X_CodeMeaning`` holds a CodeMeaning)."""
    return name.rsplit("_", 1)[-1] if name.endswith("_CodeMeaning") else name


def check_parquet(audit: Audit, path: str, data: bytes, shared: Shared) -> None:
    """Every column name and cell of a Parquet file; id and date columns checked."""
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception:
        audit.add("unreadable_output", path, reason="not a readable Parquet file")
        audit.search("phi_in_file", path, "bytes", data.decode("latin-1"))
        return
    dicom_ids = table.column("dicom_id").to_pylist() if "dicom_id" in table.column_names else None
    for name in table.column_names:
        if audit.needles.any_in(name):
            if name in SCHEMA_COLUMNS:
                for needle in audit.needles.find(name):
                    why = "a column name of the dataset's schema"
                    audit.note("coincidence", path, name, needle.category, needle.index, why)
            else:
                audit.search("phi_in_parquet", path, "<column name>", name)
        label = name if not audit.needles.any_in(name) else "<redacted>"
        column = table.column(name)
        distinct = column.unique().to_pylist() if column.num_chunks else []
        hits = {value for value in distinct if value is not None and audit.needles.any_in(str(value))}
        if hits:
            values = column.to_pylist()
            for row, value in enumerate(values):
                if value not in hits:
                    continue
                sop = shared.dicom_to_sop.get(dicom_ids[row]) if dicom_ids is not None else None
                record = shared.inputs.get(sop) if sop else None
                audit.search("phi_in_parquet", path, label, str(value), set(), record, _column_attribute(name))
        for value in distinct:
            problem = _column_problem(name, value)
            if problem:
                audit.add(problem, path, name, reason=f"a bad {name} value")
        if name == "dicom_id" and len(distinct) != table.num_rows:
            audit.add("id_not_one_to_one", path, name, reason="a dicom_id on two rows")


def _column_problem(name: str, value: Any) -> str | None:
    """The finding kind for a bad value in a known id or date column, else None."""
    if value is None:
        return None
    try:
        if name == "subject_id":
            return None if SUBJECT_ID_RANGE[0] <= int(value) <= SUBJECT_ID_RANGE[1] else "id_out_of_range"
        if name == "study_id":
            return None if STUDY_ID_RANGE[0] <= int(value) <= STUDY_ID_RANGE[1] else "id_out_of_range"
        if name == "StudyDate":
            return None if in_shifted_years(int(value) // 10000) else "date_out_of_range"
    except (TypeError, ValueError):
        return "id_out_of_range" if name != "StudyDate" else "date_out_of_range"
    if name == "dicom_id" and not DICOM_ID.match(str(value)):
        return "id_out_of_range"
    return None


# ---------------------------------------------------------------------------------- run


@quiet_pydicom()
def check_partition(keys: Iterable[str], output: Location, shared: Shared | Any) -> Audit:
    """Every check on a run of output keys (one task, or the whole output); each read once."""
    from cxr_dask.broadcast import resolve

    shared = resolve(shared)
    audit = Audit(shared.needles)
    for key in keys:
        for part in key.split("/"):
            if part and part not in LAYOUT_NAMES:
                audit.search("phi_in_name", key, "name", part)
        audit.report.outputs_listed.append(redact(key, shared.needles))
        data = storage.read_bytes(output, key)
        if key.endswith(".dcm"):
            audit.report.outputs["DICOM"] += 1
            check_dicom(audit, key, data, shared)
        elif key.endswith(".parquet"):
            audit.report.outputs["Parquet"] += 1
            check_parquet(audit, key, data, shared)
        else:
            audit.report.outputs["other"] += 1
            audit.search("phi_in_file", key, "bytes", data.decode("latin-1"))
    audit.needles = Needles()  # the caller has them: do not ship them back
    return audit


def accounted_keys(private: Location) -> tuple[set[str], list[str]]:
    """Input keys with an audit row in any committed run in PRIVATE, and the files read."""
    keys: set[str] = set()
    read: list[str] = []
    for audit_key in storage.list_keys(private, "runs"):
        if not audit_key.endswith("/audit.parquet") or audit_key.count("/") != 2:
            continue
        inventory_key = posixpath.join(posixpath.dirname(audit_key), "inventory.parquet")
        if not storage.exists(private, inventory_key):
            continue
        audit_table = pq.read_table(io.BytesIO(storage.read_bytes(private, audit_key)), columns=["key_index"])
        inventory = pq.read_table(io.BytesIO(storage.read_bytes(private, inventory_key)), columns=["key_index", "key"])
        indexes, names = inventory.column("key_index").to_pylist(), inventory.column("key").to_pylist()
        by_index = dict(zip(indexes, names, strict=True))
        keys.update(by_index[i] for i in audit_table.column("key_index").to_pylist() if i in by_index)
        read += [audit_key, inventory_key]
    return keys, read


class Runner(Protocol):
    """How ``verify`` runs its two passes over keys: each returns one result per share of them."""

    def harvest(self, items: list[tuple[int, str, int]], source: Location) -> list[Harvest]:
        """``harvest_partition`` over the inputs' ``(key_index, key, size)`` items."""
        ...

    def check(self, keys: list[str], output: Location, shared: Shared) -> list[Audit]:
        """``check_partition`` over the output's keys, each share given ``shared``."""
        ...


class InProcess:
    """Both passes here, one file at a time: what ``verify`` does without a cluster."""

    def harvest(self, items: list[tuple[int, str, int]], source: Location) -> list[Harvest]:
        return [harvest_partition(items, source)]

    def check(self, keys: list[str], output: Location, shared: Shared) -> list[Audit]:
        return [check_partition(keys, output, shared)]


@quiet_pydicom()
def verify(
    source: Location,
    output: Location,
    private: Location,
    ocr: OcrSettings | None = DEFAULT_OCR,
    runner: Runner | None = None,
) -> Report:
    """Search OUTPUT for every identifying value of INPUT; check ids, dates, pixels, coverage.

    ``ocr=None`` leaves the pixel text check out (the report says so under "skipped");
    the CLI always runs it. ``runner`` runs the reads (default ``InProcess``; on a cluster,
    ``pipeline_verify.verify_on``).
    """
    runner = InProcess() if runner is None else runner
    storage.require_folder(source)
    storage.require_folder(output)
    identity = load_crosswalk(private, b"")  # the UID key is not needed: nothing is minted here
    if not identity.patients:
        raise ConfigError("no crosswalk in the private location: run cxr-dask run first")
    items = [(index, key, size) for index, (key, size) in enumerate(storage.list_files(source))]
    harvested = runner.harvest(items, source)
    needles, key_sops, read, unreadable = Needles(), [], 0, 0
    inputs: dict[str, InputRecord] = {}
    for part in harvested:
        needles.merge(part.needles)
        for sop, record in part.records.items():
            if sop not in inputs or record.index < inputs[sop].index:
                inputs[sop] = record
        key_sops += part.key_sops
        read, unreadable = read + part.read, unreadable + part.unreadable
    for subject, _ in identity.patients.values():
        needles.minted.add(str(subject))
    for _, study in identity.studies.values():
        needles.minted.add(str(study))
    for dicom_id, _, _ in identity.images.values():
        needles.minted.update(dicom_id.upper().split("-"))

    audit = Audit(needles)
    report = audit.report
    report.inputs_read, report.inputs_unreadable = read, unreadable
    report.inputs_listed = [redact(key, needles) for key, _ in key_sops]
    report.private_read = ["crosswalk/patients.parquet", "crosswalk/studies.parquet", "crosswalk/images.parquet"]
    check_crosswalk(audit, identity)
    if ocr is not None:
        try:
            ocr.check_available()
        except OcrFailure as failure:
            audit.add("pixel_check_failed", "OUTPUT", "PixelData", reason=str(failure))
            ocr = None
    else:
        report.skipped.append("pixel text check (OCR turned off by the caller)")
    shared = Shared(needles, identity, {d: sop for sop, (d, _, _) in identity.images.items()}, inputs, ocr)
    keys = [key for key, _ in storage.list_files(output)]
    for checked in runner.check(keys, output, shared):
        audit.merge(checked)
    _one_to_one(audit)
    _check_accounted(audit, private, key_sops, identity)
    return report


def _check_accounted(audit: Audit, private: Location, key_sops: list[tuple[str, str]], identity: IdentityMap) -> None:
    """Every input has an output or an audit row (a quarantine says why); else a finding."""
    accounted, read = accounted_keys(private)
    audit.report.private_read += read
    for index, (key, sop) in enumerate(key_sops):
        if key in accounted or (sop and sop in audit.sops_written):
            continue
        audit.add("input_unaccounted", "INPUT/" + key, "", "", index, "no output and no audit row for this input")
