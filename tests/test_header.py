"""The per-file header de-identifier: planted PHI at every depth must not survive."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import pydicom
import pytest
from dciodvfy import new_messages
from dx_header import (
    FOR_UID,
    IDENTITY,
    ORIGINAL_DATES,
    PIXELS,
    PLANTED,
    SERIES_UID,
    SOP_UID,
    STUDY_UID,
    code,
    deidentify,
    make_dx,
    read,
    remap,
    shifted,
    to_bytes,
)
from pydicom.data import get_testdata_files
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from cxr_dask.deid.header import (
    HeaderReport,
    clean_text,
    deidentify_header,
    shift_da,
    shift_dt,
)
from cxr_dask.deid.profile import ProfileOptions, load_defined_terms
from cxr_dask.errors import QuarantineError


@pytest.fixture(scope="module")
def result() -> tuple[FileDataset, bytes, HeaderReport]:
    return deidentify(make_dx())


def test_no_planted_value_survives_in_bytes(
    result: tuple[FileDataset, bytes, HeaderReport],
) -> None:
    _, data, _ = result
    lowered = data.lower()
    leaked = [value for value in PLANTED if value.lower().encode() in lowered]
    assert leaked == []


def test_no_planted_value_survives_in_any_element(
    result: tuple[FileDataset, bytes, HeaderReport],
) -> None:
    out, _, _ = result
    texts = [str(elem.value).lower() for elem in out.iterall() if elem.VR not in ("SQ", "OB", "OW")]
    texts += [str(elem.value).lower() for elem in out.file_meta]
    leaked = [value for value in PLANTED if any(value.lower() in text for text in texts)]
    assert leaked == []


def test_no_private_curve_or_overlay_element_anywhere(
    result: tuple[FileDataset, bytes, HeaderReport],
) -> None:
    out, _, report = result
    groups = {elem.tag.group for elem in out.iterall()}
    assert not [g for g in groups if g % 2 == 1]
    assert not [g for g in groups if 0x5000 <= g <= 0x50FF or 0x6000 <= g <= 0x60FF]
    assert report.private_removed == 6  # 3 creators + 3 private elements, at 3 depths


def test_dates_shifted_and_times_kept(result: tuple[FileDataset, bytes, HeaderReport]) -> None:
    out, _, report = result
    expected = {shifted(day) for day in ORIGINAL_DATES}
    das = [elem for elem in out.iterall() if elem.VR == "DA" and elem.value]
    assert das
    for elem in das:
        values = elem.value if elem.VM > 1 else [elem.value]
        assert set(values) <= expected, elem.keyword
    assert out.StudyDate == out.ContentDate == out.SeriesDate == shifted("20190314")
    assert list(out.DateOfLastCalibration) == [shifted("20190301"), shifted("20190305")]
    assert out.AcquisitionDateTime == shifted("20190314") + "081530.123456+0100"
    assert (out.StudyTime, out.ContentTime, out.AcquisitionTime) == ("081530", "081531.5", "081529")
    deep = out.ViewCodeSequence[0].ViewModifierCodeSequence[0]
    assert deep.ObservationDateTime == shifted("20180101") + "120000"
    assert "InstanceCreationDate" not in out  # malformed
    assert out.PatientBirthDate == ""
    assert report.dates_shifted >= 6


def test_uids_remapped_consistently(result: tuple[FileDataset, bytes, HeaderReport]) -> None:
    out, _, report = result
    assert out.StudyInstanceUID == remap(STUDY_UID)
    assert out.SeriesInstanceUID == remap(SERIES_UID)
    assert out.SOPInstanceUID == remap(SOP_UID)
    assert out.FrameOfReferenceUID == remap(FOR_UID)
    deep = out.ViewCodeSequence[0].ViewModifierCodeSequence[0]
    assert deep.ReferencedSOPInstanceUID == out.StudyInstanceUID
    assert out.SOPClassUID == DigitalXRayImageStorageForPresentation
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPClassUID == out.SOPClassUID
    assert "SourceApplicationEntityTitle" not in out.file_meta
    assert out.file_meta.ImplementationVersionName != "HOSPPACS"
    assert report.uids_remapped == 5


def test_replacements_and_markers(result: tuple[FileDataset, bytes, HeaderReport]) -> None:
    out, _, _ = result
    # the family name component (a bare "<id>" is PN's retired form to dciodvfy)
    assert out.PatientID == str(IDENTITY.subject_id) and out.PatientName == f"{IDENTITY.subject_id}^"
    assert out.AccessionNumber == out.StudyID == str(IDENTITY.study_id)
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    method = out.DeidentificationMethodCodeSequence
    codes = [(item.CodeValue, item.CodingSchemeDesignator) for item in method]
    assert codes == [("113100", "DCM"), ("113105", "DCM"), ("113107", "DCM")]
    assert all(len(text) <= 64 for text in out.DeidentificationMethod)
    assert out.AcquisitionContextSequence == []  # X/Z, Type 2 in DX: emptied
    for keyword in ("InstitutionName", "OtherPatientIDsSequence", "RequestAttributesSequence"):
        assert keyword not in out


def test_replacements_added_when_absent() -> None:
    ds = make_dx()
    for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyID"):
        delattr(ds, keyword)
    out, _, _ = deidentify(ds)
    assert out.PatientID == str(IDENTITY.subject_id)
    assert out.StudyID == str(IDENTITY.study_id)


def test_descriptors_cleaned_and_kept(result: tuple[FileDataset, bytes, HeaderReport]) -> None:
    out, _, report = result
    assert out.StudyDescription == "CHEST PA AND LAT"
    assert out.SeriesDescription == "CHEST PA"
    assert out.PerformedProcedureStepDescription == "CHEST PA AND LAT"
    assert out.ProcedureCodeSequence[0].CodeMeaning == "XR CHEST 2 VIEWS"
    # a scheduled-step sequence is outside Table E.1-1 and the keep-list: removed (issue 12)
    assert "ScheduledProtocolCodeSequence" not in out.ViewCodeSequence[0].ViewModifierCodeSequence[0]
    assert out.ViewCodeSequence[0].CodeMeaning == "postero-anterior"
    assert out.ViewPosition == "PA" and out.BodyPartExamined == "CHEST"
    assert report.descriptors_cleaned == 2


def test_descriptors_not_cleaned_without_the_option() -> None:
    options = ProfileOptions(clean_descriptors=frozenset())
    out, _, _ = deidentify(make_dx(), options)
    assert "StudyDescription" not in out
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107"]


def test_without_modified_dates_no_original_date_survives() -> None:
    options = ProfileOptions(retain_modified_dates=False)
    out, data, _ = deidentify(make_dx(), options)
    assert out.StudyDate == ""
    assert out.ContentDate == shifted("20190314")  # Z/D Type 1: dummy = the shifted date
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert not [day for day in ORIGINAL_DATES if day.encode() in data]


def test_pixel_data_and_burned_in_annotation_untouched(
    result: tuple[FileDataset, bytes, HeaderReport],
) -> None:
    out, _, _ = result
    assert out.PixelData == PIXELS
    assert out.BurnedInAnnotation == "NO"
    assert (out.Rows, out.Columns, out.BitsStored) == (64, 64, 12)


def test_implicit_vr_file() -> None:
    ds = make_dx()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out, data, _ = deidentify(ds)
    assert out.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert out.StudyDate == shifted("20190314")
    assert not [value for value in PLANTED if value.lower().encode() in data.lower()]


def test_quarantine_without_sop_instance_uid() -> None:
    ds = read(to_bytes(make_dx(with_sop_uid=False)))
    with pytest.raises(QuarantineError) as caught:
        deidentify_header(ds, IDENTITY, remap)
    assert caught.value.reason == "no_sop_instance_uid"
    message = str(caught.value)
    assert not [value for value in PLANTED if value.lower() in message.lower()]


def test_quarantine_on_undecodable_value() -> None:
    ds = read(to_bytes(make_dx()))
    raw = ds.get_item(0x00080020)
    ds._dict[0x00080020] = raw._replace(VR="SQ", value=b"\x01\x02\x03")  # cannot parse
    with pytest.raises(QuarantineError) as caught:
        deidentify_header(ds, IDENTITY, remap)
    assert caught.value.reason == "undecodable_value"
    assert caught.value.detail == "StudyDate"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20190314", "21190316"),
        ("2019.03.14", "21190316"),
        ("20190314-20190315", "21190316-21190317"),
        ("-20190314", "-21190316"),
    ],
)
def test_shift_da(value: str, expected: str) -> None:
    assert shift_da(value, 7 * 5218) == expected


@pytest.mark.parametrize("value", ["2019031", "20191399", "2019-03-14", "abcdefgh", "1-2-3"])
def test_shift_da_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        shift_da(value, 7)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20190314081530.123456+0100", "20190321081530.123456+0100"),
        ("20190314", "20190321"),
        ("201903", "201903"),
        ("2019", "2019"),
        ("2019123123-0500", "2020010723-0500"),
    ],
)
def test_shift_dt(value: str, expected: str) -> None:
    assert shift_dt(value, 7) == expected


@pytest.mark.parametrize("value", ["2019031", "20190314T0815", "201913", "20190314081530.1234567"])
def test_shift_dt_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        shift_dt(value, 7)


def test_clean_text_whole_tokens_only() -> None:
    phrases = ["doe", "2019-03-14"]
    assert clean_text("CHEST DOE PA", phrases) == "CHEST PA"
    assert clean_text("DOES NOT MATCH", phrases) == "DOES NOT MATCH"
    assert clean_text("XR 2019-03-14 chest", phrases) == "XR chest"


# ------------------------------------------------------------------- dciodvfy


def test_dciodvfy_no_new_errors_or_warnings(tmp_path: Path) -> None:
    before, after = tmp_path / "before.dcm", tmp_path / "after.dcm"
    before.write_bytes(to_bytes(make_dx()))
    after.write_bytes(deidentify(make_dx())[1])
    assert new_messages(before, after) == set()


# -------------------------------------------------------- pydicom's test files


def _testdata() -> list[str]:
    names = [p for p in get_testdata_files() if Path(p).is_file()]
    return sorted(p for p in names if p.endswith(".dcm") or "." not in Path(p).name)


def _file_id(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[parts.index("test_files") + 1 :]) if "test_files" in parts else path


@pytest.mark.parametrize("path", _testdata(), ids=_file_id)
def test_pydicom_testdata_deidentified_or_quarantined(path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            with open(path, "rb") as handle:
                assert handle.read(132)[128:] != b"DICM"  # genuinely not a DICOM file
            return
        planted = [str(ds.get(k, "") or "") for k in ("PatientName", "PatientID", "StudyDate")]
        pixels = ds.get_item(0x7FE00010)
        try:
            deidentify_header(ds, IDENTITY, remap)
        except QuarantineError as error:
            assert error.reason
            return
        data = to_bytes(ds)
        out = read(data)
    searchable = data
    if pixels is not None:
        searchable = searchable.replace(bytes(pixels.value), b"")
    for elem in out.iterall():  # remapped UIDs are random digits: do not search inside them
        if elem.VR == "UI" and elem.value:
            searchable = searchable.replace(str(elem.value).encode(), b"")
    leaked = [v for v in planted if len(v.strip()) >= 3 and v.strip().encode() in searchable]
    assert leaked == []
    assert out.PatientID == str(IDENTITY.subject_id)


def test_dates_that_would_land_outside_2100_2200_are_not_kept() -> None:
    ds = make_dx()
    ds.SeriesDate = "19000101"  # a device's placeholder: shifted, it lands in the 2040s
    ds.ContentDate = "20190314"
    ds.AcquisitionDateTime = "1900-0500"  # year precision with a UTC offset
    out, _, report = deidentify(ds)
    assert out.ContentDate == shifted("20190314")
    assert out.get("SeriesDate", "") == ""
    assert out.get("AcquisitionDateTime", "") == ""
    assert report.dates_out_of_range == 2
    for elem in out.iterall():
        if elem.VR in ("DA", "DT") and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            assert all(2100 <= int(str(v)[:4]) <= 2200 for v in values), elem.keyword


@pytest.mark.parametrize(
    ("tag", "vr", "value", "kept"),
    [
        (0x00080030, "PN", "Smithers^Wally", False),  # StudyTime (kept by the table) holding a name
        (0x00080030, "LO", "Smithers Wally", False),
        (0x00280030, "LO", "Smithers", False),  # PixelSpacing (not in the table) as free text
        (0x00080070, "PN", "Smithers^Wally", False),  # Manufacturer as a name
        (0x00280106, "SS", 0, True),  # "US or SS": either is the attribute's own VR
        (0x00180050, "DA", "19470312", False),  # SliceThickness holding a date: a valid DS too
        (0x00180050, "DT", "19470312", False),
        (0x00180050, "DS", "19470312", True),  # stored as a number, it is judged as one
    ],
)
def test_value_whose_vr_contradicts_the_dictionary_is_not_kept(tag: int, vr: str, value: object, kept: bool) -> None:
    """Found by fuzzing: the attribute's rule (keep a time, or a number) must not keep a
    name or a date."""
    from pydicom.dataelem import DataElement

    ds = make_dx()
    ds[tag] = DataElement(tag, vr, value)
    out, data, _ = deidentify(ds)
    assert b"smithers" not in data.lower()
    assert (b"19470312" in data) == (value == "19470312" and kept)
    assert (tag in out and out[tag].value not in ("", None)) == kept


def test_damaged_vr_is_quarantined_not_crashed() -> None:
    """Found by fuzzing: a VR of two damaged bytes made pydicom raise NotImplementedError."""
    data = to_bytes(make_dx())
    marker = b"\x10\x00\x10\x00PN"  # (0010,0010) PatientName, explicit VR
    assert data.count(marker) == 1
    ds = read(data.replace(marker, b"\x10\x00\x10\x00P\x00"))
    with pytest.raises(QuarantineError) as caught:
        deidentify_header(ds, IDENTITY, remap)
    assert caught.value.reason == "invalid_vr"
    assert caught.value.detail == "PatientName"


def test_replaced_attribute_with_a_wrong_vr_gets_the_research_id() -> None:
    from pydicom.dataelem import DataElement

    ds = make_dx()
    ds[0x00100010] = DataElement(0x00100010, "LO", "Quixbury Zelphine")
    out, data, _ = deidentify(ds)
    assert out["PatientName"].VR == "PN" and str(out.PatientName) == f"{IDENTITY.subject_id}^"
    assert b"quixbury" not in data.lower()


def test_damaged_pixel_representation_is_quarantined_not_crashed() -> None:
    """Found by fuzzing: pydicom decodes PixelRepresentation whenever a sequence is set."""
    data = to_bytes(make_dx())
    marker = b"\x28\x00\x03\x01US\x02\x00\x00\x00"  # (0028,0103) US, length 2, value 0
    assert data.count(marker) == 1
    ds = read(data.replace(marker, b"\x28\x00\x03\x01US\x01\x00\x00"))  # one byte: not a US
    with pytest.raises(QuarantineError) as caught:
        deidentify_header(ds, IDENTITY, remap)
    assert (caught.value.reason, caught.value.detail) == ("undecodable_value", "PixelRepresentation")


def test_preamble_is_zeroed() -> None:
    """The preamble can hold anything (pydicom's save_as would copy it): never the input's."""
    ds = make_dx()
    ds.preamble = b"Smithers^Wally MRN 80730215".ljust(128, b" ")
    original = read(to_bytes(ds))
    assert original.preamble.startswith(b"Smithers")
    deidentify_header(original, IDENTITY, remap)
    data = to_bytes(original)
    assert data[:128] == b"\x00" * 128 and data[128:132] == b"DICM"
    assert b"smithers" not in data.lower()


@pytest.mark.parametrize(
    "stored",
    [b"\x00Quixbury^Zelphine", b"Quixbury^Zelphine\x00", b"Quixbury\x00Zelphine ", b"\x00\x00Quixbury Zelphin"],
    ids=["leading-nul", "trailing-nul", "nul-separated", "two-leading-nuls"],
)
def test_nul_padded_name_is_still_cleaned_from_descriptions(stored: bytes) -> None:
    """NUL is padding or a separator for the cleaner: a leading NUL once hid the name."""
    ds = make_dx()
    ds.PatientName = "Quixbury^Zelphine"
    ds.StudyDescription = "CHEST QUIXBURY PA"
    data = to_bytes(ds)
    assert data.count(b"Quixbury^Zelphine ") == 1
    out, written, _ = deidentify(read(data.replace(b"Quixbury^Zelphine ", stored)))
    assert b"quixbury" not in written.lower()
    assert out.StudyDescription.split() == ["CHEST", "PA"]


def test_nul_led_id_is_still_cleaned_from_descriptions() -> None:
    ds = make_dx()
    ds.PatientID = "QX8073021"  # stored padded: "QX8073021 "
    ds.StudyDescription = "CHEST/QX8073021/PA"
    data = to_bytes(ds)
    assert data.count(b"QX8073021 ") == 1
    out, written, _ = deidentify(read(data.replace(b"QX8073021 ", b"\x00QX8073021")))
    assert "PatientID" in out
    assert b"qx8073021" not in written.lower()


# ------------------------------------------- keep-list, VR syntax, defined terms (issue 12)


@pytest.mark.parametrize("view", sorted(load_defined_terms()[0x00185101].terms))
def test_every_valid_view_position_survives(view: str) -> None:
    ds = make_dx()
    ds.ViewPosition = view
    out, _, report = deidentify(ds)
    assert out.ViewPosition == view and report.invalid_values == 0


def test_attributes_outside_table_and_keep_list_are_removed() -> None:
    ds = make_dx()
    ds.add_new(0x00201020, "LO", "Quixbury")  # Reference, retired
    ds.add_new(0x00410010, "LO", "Quixbury")  # unknown public group
    ds.WindowCenterWidthExplanation = "Quixbury"
    ds.KVP = "120"
    out, data, _ = deidentify(ds)
    assert 0x00201020 not in out and 0x00410010 not in out and "WindowCenterWidthExplanation" not in out
    assert out.KVP == "120"  # on the keep-list (acquisition)
    assert b"Quixbury" not in data


@pytest.mark.parametrize(
    ("keyword", "vr", "value", "kept"),
    [
        ("StudyTime", "TM", "Zelphine", ""),  # Type 2: emptied
        ("StudyTime", "TM", "101530.25", "101530.25"),
        ("SeriesNumber", "IS", "MRN99887766", ""),  # Type 2: emptied
        ("SeriesNumber", "IS", "99887766", ""),  # more digits than a count has
        ("SeriesNumber", "IS", "12", "12"),
        ("KVP", "DS", "12O", None),
        ("BodyPartExamined", "CS", "ZELPHINE", None),  # syntax fine, not a defined term
        ("BodyPartExamined", "CS", "chest", None),  # not CS syntax
        ("Laterality", "CS", "R", "R"),
        ("PatientOrientation", "CS", "P\\F", "P\\F"),
        ("PatientOrientation", "CS", "P\\ZELPHINE", ""),  # Type 2C in DX: emptied
    ],
)
def test_kept_values_match_their_vr_and_terms(keyword: str, vr: str, value: str, kept: str | None) -> None:
    ds = make_dx()
    tag = tag_for_keyword(keyword)
    ds.add(DataElement(tag, "LO", value))  # pydicom refuses to build an invalid IS or DS
    header = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    data = to_bytes(ds).replace(header + b"LO", header + vr.encode(), 1)  # as a device wrote it
    out, _, report = deidentify(read(data))
    if kept is None:
        assert keyword not in out
    else:
        element = out[keyword]
        text = "" if element.is_empty else "\\".join(str(v) for v in element.value) if element.VM > 1 else element.value
        assert str(text) == kept
    assert report.invalid_values == (0 if kept == value else 1)


def test_a_non_uid_in_a_uid_attribute_is_not_kept() -> None:
    ds = make_dx()
    ds.ReferencedSOPClassUID = "Quixbury Zelphine"  # not a UID: not remapped as if it were
    ds.FrameOfReferenceUID = "1.2.3.Quixbury"
    out, data, report = deidentify(ds)
    assert "ReferencedSOPClassUID" not in out and "FrameOfReferenceUID" not in out
    assert report.invalid_values == 2 and b"Quixbury" not in data


def test_uids_stored_as_lo_are_read_as_uids_and_remapped() -> None:
    ds = make_dx()
    ds[0x00080018] = DataElement(0x00080018, "LO", SOP_UID)
    ds[0x0020000D] = DataElement(0x0020000D, "LO", STUDY_UID)
    out, _, _ = deidentify(ds)
    assert out["SOPInstanceUID"].VR == out["StudyInstanceUID"].VR == "UI"
    assert out.SOPInstanceUID == remap(SOP_UID) and out.StudyInstanceUID == remap(STUDY_UID)
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_pixel_attribute_with_a_contradicting_vr_is_quarantined_as_vr_mismatch() -> None:
    ds = read(to_bytes(make_dx()))
    ds[0x00280010] = DataElement(0x00280010, "LO", "64")  # Rows written as text
    again = read(to_bytes(ds))
    with pytest.raises(QuarantineError) as caught:
        deidentify_header(again, IDENTITY, remap)
    assert caught.value.reason == "vr_mismatch" and caught.value.detail == "Rows"


def test_code_items_keep_their_codes_or_go_whole() -> None:
    ds = make_dx()
    ds.ProcedureCodeSequence = Sequence([code("IMG1234", "99LOCAL", "XR CHEST"), code("", "99LOCAL", "XR")])
    ds.ProcedureCodeSequence[1][0x00080100] = DataElement(0x00080100, "SH", "Quixbury")
    ds.ProcedureCodeSequence[1].CodeValue = "Q1"
    ds.ProcedureCodeSequence[1][0x00080102] = DataElement(0x00080102, "UT", "not a scheme")  # wrong VR: goes
    out, _, _ = deidentify(ds)
    items = out.ProcedureCodeSequence
    assert len(items) == 1 and items[0].CodeValue == "IMG1234" and items[0].CodingSchemeDesignator == "99LOCAL"


def test_file_meta_is_rebuilt_with_standard_values() -> None:
    ds = make_dx()
    ds.file_meta.FileMetaInformationVersion = b"Quixbury"
    ds.file_meta.SourceApplicationEntityTitle = "HOSP_AE_TITLE"
    ds.file_meta.PrivateInformationCreatorUID = "1.2.3.4"
    ds.file_meta.PrivateInformation = b"Zelphine"
    out, data, _ = deidentify(ds)
    meta = out.file_meta
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert sorted(int(e.tag) for e in meta if e.tag != 0x00020000) == [
        0x00020001,
        0x00020002,
        0x00020003,
        0x00020010,
        0x00020012,
        0x00020013,
    ]
    assert meta.MediaStorageSOPClassUID == out.SOPClassUID and meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert b"Quixbury" not in data and b"Zelphine" not in data and b"HOSP_AE" not in data


def test_a_coded_value_holding_the_patient_s_name_or_id_goes_with_its_item() -> None:
    """Coded values are kept verbatim, but a local code typed as free text can hold the
    patient's name or id (found by fuzzing): it goes whole, with the item it coded, and
    at the top level of the data set too; the other codes stay as they are."""
    ds = make_dx()
    ds.AnatomicRegionSequence = Sequence([code("QUIXBURY CHEST", "99LOCAL", "Chest"), code("T-D3000", "SRT", "Chest")])
    ds.CodeValue = "MRN99887766"  # a coded value outside any item
    out, data, _ = deidentify(ds)
    assert [item.CodeValue for item in out.AnatomicRegionSequence] == ["T-D3000"]
    assert "CodeValue" not in out
    assert b"QUIXBURY" not in data.upper() and b"99887766" not in data
    assert out.ProcedureCodeSequence[0].CodeValue == "CXR2V"  # no phrase in it: kept verbatim


def test_every_coded_value_kind_holding_the_patient_s_name_goes() -> None:
    """Not only CodeValue: the scheme, its version, the context and the mapping resource
    are kept verbatim too, and each can hold a name (found by fuzzing: a top-level
    CodingSchemeDesignator "qaaaaa aaa" kept a patient called Qaaaaa)."""
    ds = make_dx()
    ds.AnatomicRegionSequence = Sequence([code("T-D3000", "QUIXBURY", "Chest"), code("T-D3000", "SRT", "Chest")])
    ds.CodingSchemeDesignator = "quixbury aaa"
    ds.ContextIdentifier = "ZELPHINE"
    out, data, _ = deidentify(ds)
    assert [item.CodingSchemeDesignator for item in out.AnatomicRegionSequence] == ["SRT"]
    assert "CodingSchemeDesignator" not in out and "ContextIdentifier" not in out
    assert b"QUIXBURY" not in data.upper() and b"ZELPHINE" not in data.upper()
