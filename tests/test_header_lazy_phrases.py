"""Removed values are decoded for phrases only when a kept descriptor could hold one
(deid/header/phrases.py, ``collect_pending``): whatever is skipped must never have been a hit."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from dx_header import IDENTITY, deidentify, make_dx, read, remap, to_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement

from cxr_dask.deid.header import deidentify_header, phrases
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.dicom.dates import date_digits, date_renderings
from cxr_dask.errors import QuarantineError
from cxr_dask.privacy import quiet_pydicom

BIRTH = "19470312"  # make_dx's PatientBirthDate: emptied, so collected as a phrase


@pytest.mark.parametrize("rendering", date_renderings(BIRTH))
def test_every_rendering_of_a_removed_date_is_cleaned(rendering: str) -> None:
    ds = make_dx()
    ds.StudyDescription = f"CHEST {rendering} PA"
    out, data, _ = deidentify(ds)
    assert out.StudyDescription == "CHEST PA"
    assert rendering.encode() not in data


def test_a_removed_datetime_is_cleaned_from_a_code_meaning() -> None:
    ds = make_dx()  # AcquisitionDateTime 20190314081530...: shifted, its date collected
    ds.InstitutionName = "Saint Quimby Memorial"
    ds.ProcedureCodeSequence[0].CodeMeaning = "XR 03/14/2019 CHEST"
    out, _, _ = deidentify(ds)
    assert out.ProcedureCodeSequence[0].CodeMeaning == "XR CHEST"


def test_name_tokens_and_ids_are_cleaned_wherever_they_sit() -> None:
    ds = make_dx()
    ds.StudyDescription = "CHEST zelphine MRN99887766"  # a PN component and the patient id
    ds.SeriesDescription = "PA saint quimby memorial"  # the institution, another case
    out, _, _ = deidentify(ds)
    assert out.StudyDescription == "CHEST"
    assert out.SeriesDescription == "PA"


def test_non_ascii_values_and_descriptors_are_decoded_and_cleaned() -> None:
    ds = make_dx()  # ISO_IR 100
    ds.PatientName = "Quixbury^Zoë"
    ds.StudyDescription = "CHEST ZOË PA"  # only the decoded, lower-cased texts match
    out, data, _ = deidentify(ds)
    assert out.StudyDescription == "CHEST PA"
    assert "zoë".encode("latin-1") not in data.lower() and "ZOË".encode("latin-1") not in data


def test_values_no_descriptor_could_hold_are_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = []
    convert = phrases.convert_raw_data_element

    def counting(raw, **kwargs):
        decoded.append(raw.tag)
        return convert(raw, **kwargs)

    monkeypatch.setattr(phrases, "convert_raw_data_element", counting)
    ds = make_dx()
    ds.StudyDescription = ds.SeriesDescription = ds.PerformedProcedureStepDescription = "XR"
    for elem in ds.iterall():  # every code, at every depth
        if elem.keyword in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"):
            elem.value = "XR"
    out, _, report = deidentify(ds)
    # names, ids, addresses, dates: no value or name token occurs in the kept texts
    # ("xr", "acme", "us", ...) and none of those holds two adjacent digits
    assert decoded == []
    assert out.PatientName == f"{IDENTITY.subject_id}^" and report.removed > 10
    decoded.clear()
    ds.StudyDescription = "XR Quixbury"  # now the patient's surname could be there
    out, _, _ = deidentify(ds)
    assert 0x00100010 in decoded and out.StudyDescription == "XR"


@pytest.mark.parametrize(("lead", "trail"), [("\x1c", "\x1c"), ("", "\x00"), (" \t", " "), ("\x0b\x1f", "\x1e")])
def test_phrases_with_control_padding_are_still_found(lead: str, trail: str) -> None:
    """str.strip() drops every ASCII whitespace character (\\x1c-\\x1f too), pydicom trailing
    NULs: the check before decoding must drop them as well."""
    ds = make_dx()
    ds.InstitutionName = f"{lead}Saint Quimby Memorial{trail}"
    ds.StationName = f"{lead}XRAYROOM7Q{trail}"
    ds.StudyDescription = "CHEST saint quimby memorial xrayroom7q"
    out, _, _ = deidentify(ds)
    assert out.StudyDescription == "CHEST"


MARKERS = (
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "StudyID",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "LongitudinalTemporalInformationModified",
)


def _markers(ds) -> list:
    codes = [(i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning) for i in ds.DeidentificationMethodCodeSequence]
    return [(ds[k].VR, str(ds[k].value)) for k in MARKERS] + [codes, ds["DeidentificationMethodCodeSequence"].VR]


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"])
@pytest.mark.parametrize(
    "options",
    [ProfileOptions(), ProfileOptions(retain_modified_dates=False, clean_descriptors=frozenset())],
    ids=["default", "no-options"],
)
def test_markers_added_raw_decode_as_the_ones_built_in_memory(syntax: str, options: ProfileOptions) -> None:
    """The raw-encoded markers (a file read from bytes) equal those pydicom builds (a dataset
    made in memory), read back from the written file, in every little-endian syntax."""
    ds = make_dx()
    ds.file_meta.TransferSyntaxUID = syntax
    from_file = read(to_bytes(ds))
    assert from_file.original_encoding[1] is True
    in_memory = make_dx()
    in_memory.file_meta.TransferSyntaxUID = syntax
    in_memory.set_original_encoding(None, None, "iso8859")  # as a Dataset never read from bytes
    deidentify_header(from_file, IDENTITY, remap, options)
    assert isinstance(from_file.get_item("DeidentificationMethodCodeSequence"), RawDataElement)
    deidentify_header(in_memory, IDENTITY, remap, options)
    assert not isinstance(in_memory.get_item("DeidentificationMethodCodeSequence"), RawDataElement)
    assert _markers(read(to_bytes(from_file))) == _markers(read(to_bytes(in_memory)))
    assert _markers(from_file) == _markers(in_memory)  # read in place, before any writing


# ------------------------------------------- the lazy path against decoding every value

#: Removed values and descriptors share a small alphabet (name and value separators, NUL,
#: date punctuation, digits, a latin-1 letter), so descriptors often hold runs of them.
WORD = st.text("abZ19", min_size=3, max_size=6)
PIECE = st.one_of(
    st.lists(WORD, max_size=3).flatmap(lambda words: st.sampled_from("^= /.-\\\x00").map(lambda sep: sep.join(words))),
    st.text("ab Z19/.-^=\\\x00é", max_size=10),  # anything, a latin-1 letter too
)
DATE = st.one_of(
    st.text("0123456789.-", max_size=12),
    st.tuples(st.sampled_from(("", " ", "  ", "-", ".")), st.dates(), st.sampled_from(("%Y%m%d", "%Y.%m.%d"))).map(
        lambda parts: parts[0] + parts[1].strftime(parts[2])  # padding or a separator first: not at run 0
    ),
)


@st.composite
@quiet_pydicom()
def lazy_case(draw: st.DrawFn) -> bytes:
    """A DX file whose removed values (a name, ids, an institution, a birth date, a removed
    sequence's name and id) are drawn, and whose kept descriptors are made of pieces of
    them (any case) and drawn words."""
    ds = make_dx()
    ds.PatientName = draw(PIECE)
    ds.OtherPatientIDs = draw(PIECE)
    ds.InstitutionName = draw(PIECE)
    ds.ReferringPhysicianName = draw(PIECE)
    ds.PatientBirthDate = draw(DATE)
    other = ds.OtherPatientIDsSequence[0]  # removed whole: read from its bytes (``collect_light``)
    other.PatientID, other.PatientName = draw(PIECE), draw(PIECE)
    planted = [str(v) for v in (ds.PatientName, ds.OtherPatientIDs, ds.InstitutionName, ds.PatientBirthDate)]
    planted += [str(other.PatientID), str(other.PatientName)]

    def descriptor() -> str:
        words = []
        for _ in range(draw(st.integers(0, 4))):
            value = draw(st.sampled_from(planted))
            how = draw(st.sampled_from(("whole", "token", "slice", "drawn", "date")))
            digits = date_digits(str(ds.PatientBirthDate))
            if how == "date" and digits:  # the birth date as free text writes it
                value = draw(st.sampled_from(date_renderings(digits)))
            elif how == "token":  # a name component or a word of an id: what gets cleaned
                value = draw(st.sampled_from(re.split(r"[\^= /.\-\x00\\]", value)))
            elif how == "slice":
                start = draw(st.integers(0, len(value)))
                value = value[start : draw(st.integers(start, len(value)))]
            elif how == "drawn":
                value = draw(PIECE)
            words.append(value.upper() if draw(st.booleans()) else value)
        return " ".join(words).replace("\\", " ")

    ds.StudyDescription, ds.SeriesDescription = descriptor(), descriptor()
    return to_bytes(ds)


def _outcome(data: bytes, eager: bool, decoded: list[int]) -> tuple:
    """The header path's bytes and counts (or its reason); ``eager``: every removed value
    decoded (no descriptor text to skip by, no sequence read from its bytes)."""
    convert = phrases.convert_raw_data_element

    def counting(raw: RawDataElement, **kwargs: Any) -> Any:
        decoded.append(raw.tag)
        return convert(raw, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(phrases, "convert_raw_data_element", counting)
        if eager:
            patch.setattr(phrases._Phrases, "descriptor_texts", lambda self: None)
            patch.setattr(phrases._Phrases, "collect_light", lambda self, ds, tag: False)
        try:
            ds = read(data)
            report = deidentify_header(ds, IDENTITY, remap, ProfileOptions())
            return to_bytes(ds), report.as_dict()
        except QuarantineError as error:
            return ("quarantined", error.reason, error.detail)


def test_the_lazy_path_removes_exactly_what_decoding_every_value_removes() -> None:
    """``collect_pending``'s proof, as a property: skipping a value's decoding (it cannot
    occur in any descriptor) never changes what is removed, byte for byte."""
    seen: Counter[str] = Counter()

    @settings(max_examples=80, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(lazy_case())
    def check(data: bytes) -> None:
        lazy_decoded: list[int] = []
        eager_decoded: list[int] = []
        with quiet_pydicom():
            lazy = _outcome(data, False, lazy_decoded)
            assert lazy == _outcome(data, True, eager_decoded)
        seen["cleaned"] += len(lazy) == 2 and lazy[1]["descriptors_cleaned"] > 0
        seen["skipped"] += len(lazy_decoded) < len(eager_decoded)

    check()
    assert seen["cleaned"] >= 15 and seen["skipped"] >= 15, seen  # neither side vacuous
