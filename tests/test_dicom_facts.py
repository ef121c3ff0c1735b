"""The DICOM facts every stage reads (cxr_dask/dicom): dates, codes and the output layout."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from cxr_dask.dicom import codes, layout
from cxr_dask.dicom.dates import date_digits, date_renderings, parse_da, within_shifted_years


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("19910508", "19910508"),
        (" 1991.05.08 ", "19910508"),  # ACR-NEMA
        ("1991-05-08", "19910508"),
        ("19910508-19920101", "19910508"),  # a DA range: its first date
        ("19910508120000.5-0500", "19910508"),  # a DT with an offset
        ("1991", None),
        ("1991050X", None),
        ("", None),
    ],
)
def test_date_digits(text: str, digits: str | None) -> None:
    assert date_digits(text) == digits


def test_parse_da_refuses_days_the_calendar_lacks() -> None:
    assert parse_da("20240229") == dt.date(2024, 2, 29)
    assert parse_da("20230229") is None
    assert parse_da(None) is None


@pytest.mark.parametrize(
    ("value", "vr", "inside"),
    [
        ("21500508", "DA", True),
        ("21500508-21510101", "DA", True),
        ("21500508-19910101", "DA", False),
        ("21500508120000-0500", "DT", True),  # the offset is not a second date
        ("19910508", "DA", False),
        ("XXXX0508", "DA", False),
        ("", "DA", True),
    ],
)
def test_within_shifted_years(value: str, vr: str, inside: bool) -> None:
    assert within_shifted_years(value, vr) is inside


def test_every_rendering_holds_the_year_s_last_two_digits() -> None:
    """``header.phrases._date_could_occur`` skips a text without them: this keeps it sound."""
    for date in ("19470312", "20011231", "19990101"):
        assert all(date[2:4] in rendering for rendering in date_renderings(date))


def test_a_damaged_month_has_only_numeric_renderings() -> None:
    renderings = date_renderings("19471312")
    assert "19471312" in renderings and all(
        r.replace("/", "").replace("-", "").replace(".", "").isdigit() for r in renderings
    )


def test_the_layout_reads_back_what_it_writes() -> None:
    path = layout.image_path(12345678, 50000001, layout.format_dicom_id(bytes(range(20))))
    assert path == "files/p12/p12345678/s50000001/00010203-04050607-08090a0b-0c0d0e0f-10111213.dcm"
    parsed = layout.parse_image_path(path)
    assert parsed == (12345678, 50000001, "00010203-04050607-08090a0b-0c0d0e0f-10111213", True)
    assert layout.DICOM_ID.match(parsed.dicom_id)


@pytest.mark.parametrize(
    "path",
    [
        "files/p12/p12345678/s50000001/x.dcm",
        "files/p12/p12345678/50000001/00010203-04050607-08090a0b-0c0d0e0f-10111213.dcm",
        "p12/p12345678/s50000001/00010203-04050607-08090a0b-0c0d0e0f-10111213.dcm",
    ],
)
def test_paths_outside_the_layout_are_refused(path: str) -> None:
    assert layout.parse_image_path(path) is None


def test_a_wrong_pnn_folder_is_told_apart() -> None:
    parsed = layout.parse_image_path("files/p13/p12345678/s50000001/00010203-04050607-08090a0b-0c0d0e0f-10111213.dcm")
    assert parsed is not None and not parsed.prefix_matches


def test_study_folders_over_columns_equal_the_scalar_form() -> None:
    pairs = [(10000001, 50000005), (12345678, 59999999), (19999999, 50000000)]
    subjects = pa.chunked_array([[s for s, _ in pairs]], pa.int64())
    studies = pa.chunked_array([[s for _, s in pairs]], pa.int64())
    assert layout.study_folders(subjects, studies).to_pylist() == [layout.study_folder(*p) for p in pairs]


def test_codes_unpack_in_code_sequence_order() -> None:
    value, scheme, meaning = codes.CLEAN_PIXEL_DATA
    assert (value, scheme) == ("113101", "DCM") and meaning.startswith("Clean Pixel Data")


def test_vr_classes_agree_with_pydicom() -> None:
    from cxr_dask.dicom import vrs

    assert {"LO", "SH", "ST", "LT", "UC", "UT"} == vrs.TEXT
    assert vrs.FREE_TEXT < vrs.TEXT < vrs.STRING
    assert vrs.DEFAULT_CHARSET_STRINGS < vrs.STRING and not vrs.DEFAULT_CHARSET_STRINGS & vrs.TEXT
    assert not vrs.BINARY & vrs.STRING
    assert {vr.decode() for vr in vrs.LONG_LENGTH_CODES} == vrs.LONG_LENGTH >= vrs.BINARY | {"SQ", "UT"}


def test_transfer_syntax_families() -> None:
    from pydicom import uid

    from cxr_dask.dicom import syntaxes

    assert not syntaxes.LOSSLESS & syntaxes.LOSSY_METHOD.keys()
    assert syntaxes.DCMDJPEG_READS <= syntaxes.JPEG | syntaxes.RETIRED_JPEG
    assert not syntaxes.JPEG & syntaxes.RETIRED_JPEG
    assert uid.HTJ2KLossless in syntaxes.JPEG_2000 and uid.JPEGLSNearLossless in syntaxes.JPEG_LS
    assert len(syntaxes.RETIRED_JPEG) == 14
