"""``cxr-dask verify`` as a release gate: silent on clean outputs of a mixed archive, loud on every leak.

One mixed corpus per module: synthetic chest films, pydicom's and deid-data's real files, and
synthetic patients whose identifiers coincide with another file's kept values (a
patient named like a body part, an institution named like a manufacturer). A clean run
gives no finding; every kind of planted leak is caught, and no report shows a value.
"""

from __future__ import annotations

import importlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file

from cxr_dask import cli, pipeline
from cxr_dask.config import RunConfig
from cxr_dask.dicom.dates import date_renderings
from cxr_dask.dicom.layout import image_path
from cxr_dask.identity import load_crosswalk
from cxr_dask.pipeline_verify import verify_on
from cxr_dask.storage import Location
from cxr_dask.testing.synth import synthesize
from cxr_dask.verify import OcrSettings, verify
from cxr_dask.verify.vocabulary import name_renderings

#: pydicom's own test files with a PatientID and pixels (native, JPEG, JPEG 2000, RLE).
PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_RLE.dcm")
#: deid-data's real files (JPEG baseline CT heads with a PatientID, a photo "cookie").
DEID_DATA_FILES = ("humans/ctbrain1.dcm", "humans/ctbrain2.dcm", "dicom-cookies/image1.dcm")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"

#: The synthetic patients of the mix whose identifiers are also ordinary header words.
KNEE_PATIENT = ("KNEE^ROBERT", "MRN70000001")  # a surname that is a body part (and a cleaner stop word)
GE_PATIENT = ("VALDEZ^MARISOL", "MRN70000002")  # treated at an institution named like a manufacturer
SHORT_PATIENT = ("NG^AMY", "MRN70000003")  # name parts too short to search alone: only renderings
VENDOR_PATIENT = ("ORTEGA^LUCIA", "MRN70000004")  # a private product id inside the kept model name
TYPED_PATIENT = ("PERFUSION^ANNA", "MRN70000005")  # a surname that is a term of ImageType (pydicom's eCT file)


def _clone(source: Path, target: Path, name: str, patient_id: str, change: Callable | None = None) -> None:
    ds = pydicom.dcmread(source)
    ds.PatientName, ds.PatientID = name, patient_id
    ds.AccessionNumber = f"ACC{patient_id[-6:]}9"
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    if change:
        change(ds)
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)


@pytest.fixture(scope="module")
def mixed(client, tmp_path_factory) -> dict:
    """INPUT (mixed corpus), OUTPUT and PRIVATE of one clean run."""
    base = tmp_path_factory.mktemp("verify")
    raw = base / "raw"
    corpus = synthesize(str(raw / "synth"), patients=4, seed=5, rows=256, columns=192)
    for name in PYDICOM_FILES:
        target = raw / "pydicom" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(get_testdata_file(name), target)
    deid_data = Path(importlib.import_module("deid_data").__file__).parent / "data"
    for name in DEID_DATA_FILES:
        target = raw / "deid-data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(deid_data / name, target)
    native = next(i for i in corpus.images if i.transfer_syntax == pydicom.uid.ExplicitVRLittleEndian)
    film = raw / "synth" / native.relpath

    def knee_film(ds):  # another patient's knee film: BodyPartExamined KNEE
        ds.BodyPartExamined = "KNEE"

    def ge_institution(ds):
        ds.InstitutionName = "GE MEDICAL SYSTEMS"

    _clone(film, raw / "special" / "knee_film.dcm", "OTHER^PERSON", "MRN70000009", knee_film)
    _clone(film, raw / "special" / "knee_patient.dcm", *KNEE_PATIENT)
    _clone(film, raw / "special" / "ge_patient.dcm", *GE_PATIENT, ge_institution)
    _clone(film, raw / "special" / "short_name.dcm", *SHORT_PATIENT)

    def vendor_private_block(ds):  # as GE's MR files: ProductId SIGNA, model GENESIS_SIGNA
        ds.ManufacturerModelName = "GENESIS_SIGNA"
        ds.SoftwareVersions = "1.0.3.37"  # a version shaped like an IP address (Agfa's)
        ds.private_block(0x0009, "GEMS_IDEN_01", create=True).add_new(0x04, "SH", "SIGNA")

    _clone(film, raw / "special" / "vendor_private.dcm", *VENDOR_PATIENT, vendor_private_block)

    def perfusion_type(ds):  # as pydicom's eCT_Supplemental.dcm: "Perfusion^MCA Stroke", ImageType ...\PERFUSION
        ds.ImageType = ["DERIVED", "PRIMARY", "PERFUSION"]

    _clone(film, raw / "special" / "typed_patient.dcm", *TYPED_PATIENT, perfusion_type)
    workspace = {"input": raw, "output": base / "dataset", "private": base / "private", "corpus": corpus}
    config = RunConfig(str(raw), str(workspace["output"]), str(workspace["private"]), progress=False)
    summary = pipeline.run(client, config)
    assert summary.written >= len(corpus.images) + 5
    return workspace


def locations(workspace: dict, output: Path | None = None) -> list[Location]:
    return [Location(str(p)) for p in (workspace["input"], output or workspace["output"], workspace["private"])]


def output_of(workspace: dict, output: Path, sop: str) -> Path:
    dicom_id, subject, study = load_crosswalk(Location(str(workspace["private"])), b"").images[sop]
    return output / image_path(subject, study, dicom_id)


def special_output(workspace: dict, output: Path, name: str) -> Path:
    sop = pydicom.dcmread(workspace["input"] / "special" / name, stop_before_pixels=True).SOPInstanceUID
    return output_of(workspace, output, sop)


def _edit(path: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def _copy(workspace: dict, tmp_path: Path) -> Path:
    output = tmp_path / "dataset"
    shutil.copytree(workspace["output"], output)
    return output


def test_clean_mixed_run_has_zero_findings_and_notes_explain_coincidences(mixed, tmp_path, capsys):
    """The real OCR path included; the CLI exits 0 and writes a value-free JSON report."""
    report = verify(*locations(mixed))
    assert report.findings == [], "\n".join(report.lines())
    assert report.pixels["images screened"] == report.outputs["DICOM"]
    assert all(note.kind == "coincidence" and note.reason for note in report.notes)
    # the knee film keeps BodyPartExamined KNEE (when the profile keeps it): a note, not a finding
    knee_film = pydicom.dcmread(special_output(mixed, mixed["output"], "knee_film.dcm"), stop_before_pixels=True)
    if knee_film.get("BodyPartExamined") == "KNEE":
        assert any(n.attribute == "BodyPartExamined" and n.category == "name" for n in report.notes)
    ct = output_of(mixed, mixed["output"], pydicom.dcmread(get_testdata_file("CT_small.dcm")).SOPInstanceUID)
    if pydicom.dcmread(ct, stop_before_pixels=True).get("Manufacturer") == "GE MEDICAL SYSTEMS":
        assert any(n.attribute == "Manufacturer" and n.category == "place" for n in report.notes)
    # a private value (ProductId SIGNA) inside the model name the input held there: a note
    assert any(n.attribute == "ManufacturerModelName" and n.category == "private" for n in report.notes)
    # the patient's surname as a term of the image's type the input held there: a note
    typed = pydicom.dcmread(special_output(mixed, mixed["output"], "typed_patient.dcm"), stop_before_pixels=True)
    if "PERFUSION" in typed.get("ImageType", []):
        assert any(n.attribute == "ImageType" and n.category == "name" for n in report.notes)

    report_file = tmp_path / "report.json"  # the locations and the JSON report from the run's config file
    settings = tmp_path / "run.toml"
    locations_of = "".join(f"{key} = {json.dumps(str(mixed[key]))}\n" for key in ("input", "output", "private"))
    settings.write_text(f"{locations_of}[verify]\njson = {json.dumps(str(report_file))}\n")
    assert cli.main(["verify", "--config", str(settings)]) == 0
    printed = capsys.readouterr().out
    assert "findings: 0" in printed
    data = json.loads(report_file.read_text())
    assert data["ok"] is True and data["findings"] == []
    assert data["counts"]["outputs"]["DICOM"] == report.outputs["DICOM"]
    assert len(data["files_read"]["input"]) == report.inputs_read + report.inputs_unreadable
    text = report_file.read_text().upper() + printed.upper()
    for image in mixed["corpus"].images:
        assert image.patient_id.upper() not in text
        assert image.patient_name.split("^")[0].upper() not in text


def _plant_in_comments(text_of: Callable[[dict], str], name: str = "knee_patient.dcm"):
    def plant(workspace: dict, output: Path) -> str:
        value = text_of(workspace)

        def change(ds):
            ds.ImageComments = f"film repeated; {value} moved"

        _edit(special_output(workspace, output, name), change)
        return value

    return plant


def _synth(workspace: dict, attribute: str) -> str:
    return getattr(workspace["corpus"].images[0], attribute)


def _plant_in_synth(value_of: Callable[[dict], str], attribute: str = "ImageComments"):
    def plant(workspace: dict, output: Path) -> str:
        image = workspace["corpus"].images[0]
        value = value_of(workspace)

        def change(ds):
            setattr(ds, attribute, f"see {value}")

        _edit(output_of(workspace, output, image.sop_instance_uid), change)
        return value

    return plant


def private_element(workspace: dict, output: Path) -> str:
    def change(ds):
        ds.private_block(0x0009, "SOME VENDOR 1.0", create=True).add_new(0x01, "LO", "calibration ok")

    _edit(output_of(workspace, output, workspace["corpus"].images[1].sop_instance_uid), change)
    return ""


def original_uid(workspace: dict, output: Path) -> str:
    image = workspace["corpus"].images[2]

    def change(ds):
        ds.SeriesInstanceUID = image.series_instance_uid

    _edit(output_of(workspace, output, image.sop_instance_uid), change)
    return image.series_instance_uid


def parquet_cell(workspace: dict, output: Path) -> str:
    table = pq.read_table(output / "metadata.parquet")
    at = table.schema.get_field_index("PerformedProcedureStepDescription")
    column = table.column(at).to_pylist()
    value = workspace["corpus"].images[3].patient_id
    column[0] = f"CHEST (PA) {value}"
    pq.write_table(
        table.set_column(at, "PerformedProcedureStepDescription", pa.array(column, pa.string())),
        output / "metadata.parquet",
    )
    return value


def file_name(workspace: dict, output: Path) -> str:
    surname = workspace["corpus"].images[4].patient_name.split("^")[0]
    (output / "files" / f"notes_{surname.lower()}.txt").write_text("nothing to see\n")
    return surname


def folder_name(workspace: dict, output: Path) -> str:
    value = workspace["corpus"].images[4].accession_number
    (output / "files" / value).mkdir()
    (output / "files" / value / "readme.txt").write_text("empty\n")
    return value


def address(workspace: dict, output: Path) -> str:
    ds = pydicom.dcmread(workspace["input"] / "synth" / workspace["corpus"].images[0].relpath, stop_before_pixels=True)
    return _plant_in_synth(lambda _: str(ds.PatientAddress))(workspace, output)


PLANTED = {
    "name_stop_word_of_cleaner": (_plant_in_comments(lambda _: "Knee"), "phi_in_element", "name"),
    "mrn": (_plant_in_synth(lambda w: _synth(w, "patient_id")), "phi_in_element", "mrn"),
    "accession": (
        _plant_in_synth(lambda w: _synth(w, "accession_number"), "StudyDescription"),
        "phi_in_element",
        "accession",
    ),
    "address": (address, "phi_in_element", "address"),
    "private_element": (private_element, "private_element", ""),
    "original_uid": (original_uid, "original_uid", "uid"),
    "parquet_cell": (parquet_cell, "phi_in_parquet", "mrn"),
    "file_name": (file_name, "phi_in_name", "name"),
    "folder_name": (folder_name, "phi_in_name", "accession"),
    # HIPAA's identifier shapes in kept free text, whatever the inputs held
    "ip_address": (_plant_in_synth(lambda _: "10.21.4.117"), "identifier_pattern", "ip_address"),
    "telephone": (_plant_in_synth(lambda _: "(617) 555-0142"), "identifier_pattern", "telephone"),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_planted_leak_is_found_and_never_printed(mixed, tmp_path, capsys, case):
    plant, kind, category = PLANTED[case]
    output = _copy(mixed, tmp_path)
    value = plant(mixed, output)
    report = verify(*locations(mixed, output), ocr=None)
    assert any(f.kind == kind and f.category == category and f.reason for f in report.findings), report.lines()
    args = ["verify", str(mixed["input"]), str(output), "--private", str(mixed["private"])]
    assert cli.main(args) == 1
    printed = capsys.readouterr().out
    assert "findings: 0" not in printed
    if value:
        assert value.upper() not in printed.upper()


def _synth_name(workspace: dict) -> str:
    return workspace["corpus"].images[0].patient_name


@pytest.mark.parametrize("rendering", range(len(name_renderings("NG^AMY"))))
def test_each_rendering_of_a_name_is_found(mixed, tmp_path, rendering):
    """NG and AMY are too short to search alone: only the renderings of the whole name catch them."""
    written = name_renderings(SHORT_PATIENT[0])[rendering]
    output = _copy(mixed, tmp_path)
    _plant_in_comments(lambda _: written.title(), "short_name.dcm")(mixed, output)
    report = verify(*locations(mixed, output), ocr=None)
    if len("".join(ch for ch in written if ch.isalnum())) < 4:  # "NG", "AMY", "A. NG": too short to be safe
        assert report.findings == []
    else:
        assert [(f.kind, f.category) for f in report.findings] == [("phi_in_element", "name")]


@pytest.mark.parametrize("rendering", range(len(date_renderings("19910508"))))
def test_each_rendering_of_a_date_is_found(mixed, tmp_path, rendering):
    image = mixed["corpus"].images[0]
    written = date_renderings(image.study_date.strftime("%Y%m%d"))[rendering]
    output = _copy(mixed, tmp_path)
    _plant_in_synth(lambda _: written.title())(mixed, output)
    report = verify(*locations(mixed, output), ocr=None)
    assert ("phi_in_element", "date") in {(f.kind, f.category) for f in report.findings}, written


def _draw(path: Path, text: str, frames: int = 1) -> None:
    """Paint ``text`` into an output's pixels with Pillow and re-save it uncompressed; with
    ``frames``, as the last frame of a loop whose earlier frames are the image as it was."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.astype(np.float64)
    canvas = Image.new("L", (pixels.shape[1], pixels.shape[0]), 0)
    ImageDraw.Draw(canvas).text((8, 8), text, fill=255, font=ImageFont.truetype(FONT, 22))
    mask = np.asarray(canvas) > 127
    drawn = pixels.copy()
    drawn[mask] = pixels.max()
    drawn[~mask & (np.arange(pixels.shape[0])[:, None] < 40)] = pixels.min()
    loop = np.stack([pixels] * (frames - 1) + [drawn])
    ds.PixelData = loop.astype(ds.pixel_array.dtype).tobytes()
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def test_text_put_back_into_pixels_is_read_by_the_real_ocr(mixed, tmp_path, capsys):
    image = next(i for i in mixed["corpus"].images if i.transfer_syntax == pydicom.uid.ExplicitVRLittleEndian)
    surname = image.patient_name.split("^")[0]
    output = _copy(mixed, tmp_path)
    _draw(output_of(mixed, output, image.sop_instance_uid), surname)
    report = verify(*locations(mixed, output))
    assert {(f.kind, f.category) for f in report.findings} == {("phi_in_pixels", "name")}, report.lines()
    assert surname.upper() not in "\n".join(report.lines()).upper()


def test_text_in_a_later_frame_is_read_and_a_repeated_region_once(mixed, tmp_path):
    image = next(i for i in mixed["corpus"].images if i.transfer_syntax == pydicom.uid.ExplicitVRLittleEndian)
    surname = image.patient_name.split("^")[0]
    output = _copy(mixed, tmp_path)
    path = output_of(mixed, output, image.sop_instance_uid)
    _draw(path, surname, frames=3)
    report = verify(*locations(mixed, output))
    assert {(f.kind, f.category) for f in report.findings} == {("phi_in_pixels", "name")}, report.lines()
    # the same text in every frame of a loop: its region is read once
    ds = pydicom.dcmread(path)
    frame = ds.pixel_array[-1]
    ds.PixelData = np.stack([frame] * 3).tobytes()
    ds.save_as(path, enforce_file_format=True)
    regions = verify(*locations(mixed, output)).pixels["regions flagged"]
    ds.PixelData, ds.NumberOfFrames = frame.tobytes(), 1
    ds.save_as(path, enforce_file_format=True)
    assert verify(*locations(mixed, output)).pixels["regions flagged"] == regions


@pytest.mark.parametrize(
    "command",
    [["/nonexistent/tesseract"], ["false"], ["sh", "-c", "sleep 5", "--"]],
    ids=["missing", "exit-status", "timeout"],
)
def test_ocr_that_cannot_read_is_a_finding_never_a_pass(mixed, tmp_path, command):
    script = tmp_path / "ocr.sh"
    script.write_text("#!/bin/sh\nexec " + " ".join(command) + ' "$@"\n')
    script.chmod(0o755)
    settings = OcrSettings(command=command[0] if command[0].startswith("/nonexistent") else str(script), timeout=1.5)
    report = verify(*locations(mixed), ocr=settings)
    failed = [f for f in report.findings if f.kind == "pixel_check_failed"]
    assert failed and all(f.reason for f in failed)
    assert {f.kind for f in report.findings} == {"pixel_check_failed"}


def test_an_input_without_output_or_audit_row_is_a_finding(mixed, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(mixed["input"], raw)
    shutil.copy(raw / "special" / "knee_film.dcm", raw / "special" / "zz_late_arrival.dcm")
    _edit(raw / "special" / "zz_late_arrival.dcm", lambda ds: setattr(ds, "SOPInstanceUID", pydicom.uid.generate_uid()))
    report = verify(Location(str(raw)), *locations(mixed)[1:], ocr=None)
    assert [f.kind for f in report.findings] == ["input_unaccounted"]


def _inputs_edited(workspace: dict, tmp_path: Path, name: str, change: Callable) -> Location:
    """A copy of INPUT with one special input's header changed (no new run: verify only
    harvests the inputs' values)."""
    raw = tmp_path / "raw"
    shutil.copytree(workspace["input"], raw)
    _edit(raw / "special" / name, change)
    return Location(str(raw))


def test_the_method_record_this_tool_writes_is_no_leak_but_its_words_elsewhere_are(mixed, tmp_path):
    def vendor_word(ds):  # a private value that is a word of every output's method record
        ds.private_block(0x0009, "SOME VENDOR 1.0", create=True).add_new(0x02, "LO", "Descriptors")

    raw = _inputs_edited(mixed, tmp_path, "knee_film.dcm", vendor_word)
    report = verify(raw, *locations(mixed)[1:], ocr=None)
    assert report.findings == [] and report.notes == verify(*locations(mixed), ocr=None).notes, report.lines()
    output = _copy(mixed, tmp_path)
    _plant_in_synth(lambda _: "descriptors")(mixed, output)
    report = verify(raw, *locations(mixed, output)[1:], ocr=None)
    assert [(f.kind, f.category) for f in report.findings] == [("phi_in_element", "private")], report.lines()


def test_a_name_field_the_device_filled_with_its_model_is_a_note(mixed, tmp_path):
    """fo-dicom's GH064: ContentCreatorName "Achieva", the model name the output keeps."""

    def device_as_creator(ds):
        ds.ContentCreatorName = str(ds.ManufacturerModelName)

    raw = _inputs_edited(mixed, tmp_path, "vendor_private.dcm", device_as_creator)
    report = verify(raw, *locations(mixed)[1:], ocr=None)
    assert report.findings == [], report.lines()
    notes = [n for n in report.notes if n.attribute == "ManufacturerModelName" and n.category == "name"]
    assert notes and "vendor's name" in notes[0].reason


def test_the_patients_whole_name_in_a_kept_equipment_attribute_is_a_finding(mixed, tmp_path):
    """The note above is for a device naming itself, never for a patient's name a device wrote there."""

    def name_as_model(ds):
        ds.PatientName = str(ds.ManufacturerModelName)

    raw = _inputs_edited(mixed, tmp_path, "vendor_private.dcm", name_as_model)
    report = verify(raw, *locations(mixed)[1:], ocr=None)
    hits = [(f.kind, f.attribute, f.category) for f in report.findings]
    assert ("phi_in_element", "ManufacturerModelName", "name") in hits, report.lines()


def test_distributed_verify_finds_what_the_local_one_finds(mixed, client, tmp_path):
    output = _copy(mixed, tmp_path)
    PLANTED["mrn"][0](mixed, output)
    private_element(mixed, output)
    local = verify(*locations(mixed, output), ocr=None)
    distributed = verify_on(client, *locations(mixed, output), ocr=None, partition_size=5)
    assert {f.kind for f in local.findings} == {"phi_in_element", "private_element"}
    assert sorted(distributed.findings, key=repr) == sorted(local.findings, key=repr)
    assert sorted(distributed.notes, key=repr) == sorted(local.notes, key=repr)
    assert (distributed.inputs_read, distributed.outputs) == (local.inputs_read, local.outputs)
    # the command on a given scheduler (``VerifySettings.cluster``), OCR included: the same findings
    report_file = tmp_path / "on-cluster.json"
    places = [str(mixed["input"]), str(output), "--private", str(mixed["private"])]
    assert cli.main(["verify", *places, "--scheduler", client.scheduler.address, "--json", str(report_file)]) == 1
    assert json.loads(report_file.read_text())["counts"]["findings"] == local.counts()


def test_pixel_containers_are_searched_and_flagged(mixed, tmp_path):
    """An MRN in the bits above BitsStored and past the last frame: both places flagged and searched."""
    image = next(i for i in mixed["corpus"].images if i.transfer_syntax == pydicom.uid.ExplicitVRLittleEndian)
    output = _copy(mixed, tmp_path)
    path = output_of(mixed, output, image.sop_instance_uid)
    message = f" {image.patient_id} ".encode()

    def hide(ds):
        assert ds.BitsAllocated == 16
        samples = np.frombuffer(ds.PixelData, "<u2").copy() >> max(0, int(ds.BitsStored) - 12)
        ds.BitsStored, ds.HighBit = 12, 11  # a 12-bit image, as most detectors write
        for at, byte in enumerate(message):
            samples[2 * at] |= (byte >> 4) << 12
            samples[2 * at + 1] |= (byte & 0xF) << 12
        trailing = message + b"\0" * (len(message) % 2)
        ds.PixelData = samples.tobytes() + trailing

    _edit(path, hide)
    report = verify(*locations(mixed, output), ocr=None)
    kinds = {(f.kind, f.category, f.attribute) for f in report.findings}
    assert kinds == {
        ("hidden_pixel_bits", "", "PixelData"),
        ("trailing_pixel_bytes", "", "PixelData"),
        ("phi_in_pixel_container", "mrn", "PixelData high bits"),
        ("phi_in_pixel_container", "mrn", "PixelData trailing bytes"),
    }


def test_codestream_comments_are_found_in_jpeg_and_jpeg_2000():
    from cxr_dask.verify.pixels import j2k_comments, jpeg_segments

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    jpeg = b"\xff\xd8" + segment(0xE0, b"JFIF\0rest") + segment(0xFE, b"Smith") + segment(0xE5, b"x") + b"\xff\xda"
    assert jpeg_segments(jpeg) == [("JPEG APP0", b"JFIF\0rest"), ("JPEG COM", b"Smith"), ("JPEG APP5", b"x")]
    siz = b"\xff\x51" + (8).to_bytes(2, "big") + b"\0" * 6
    com = b"\xff\x64" + (9).to_bytes(2, "big") + b"\x00\x01Smith"
    sot = b"\xff\x90" + (10).to_bytes(2, "big") + b"\0\0" + (24).to_bytes(4, "big") + b"\0\0"
    tile_com = b"\xff\x64" + (8).to_bytes(2, "big") + b"\x00\x01John"
    j2k = b"\xff\x4f" + siz + com + sot + tile_com + b"\xff\x93" + b"\0" * 4 + b"\xff\xd9"
    assert j2k_comments(j2k) == [("J2K COM", b"Smith"), ("J2K COM", b"John")]


def test_export_mappings_writes_what_the_midi_b_validator_reads(mixed, tmp_path, capsys):
    import csv

    dest = tmp_path / "mappings"
    assert cli.main(["export-mappings", str(mixed["private"]), str(dest)]) == 0
    with open(dest / "uid_mapping.csv", newline="") as handle:
        uid_rows = list(csv.DictReader(handle))
    with open(dest / "patid_mapping.csv", newline="") as handle:
        patid_rows = list(csv.DictReader(handle))
    assert set(uid_rows[0]) == set(patid_rows[0]) == {"id_old", "id_new"}
    uids = {row["id_old"]: row["id_new"] for row in uid_rows}
    patids = {row["id_old"]: row["id_new"] for row in patid_rows}
    for image in mixed["corpus"].images:
        written = pydicom.dcmread(output_of(mixed, mixed["output"], image.sop_instance_uid), stop_before_pixels=True)
        assert uids[image.sop_instance_uid] == written.SOPInstanceUID
        assert uids[image.study_instance_uid] == written.StudyInstanceUID
        assert uids[image.series_instance_uid] == written.SeriesInstanceUID
        assert patids[image.patient_id] == written.PatientID
    assert (dest / "uid_mapping.csv").stat().st_mode & 0o077 == 0

    capsys.readouterr()
    inside = mixed["output"] / "mappings"
    assert cli.main(["export-mappings", str(mixed["private"]), str(inside)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "inside the dataset" in error
    assert not inside.exists()
    elsewhere = tmp_path / "elsewhere"
    args = ["export-mappings", str(mixed["private"]), str(elsewhere), "--output", str(elsewhere.parent)]
    assert cli.main(args) == 2


def test_graphs_are_built_only_by_the_orchestration_modules():
    """verify's checks are plain functions: its bag tasks are built in ``pipeline_verify``."""
    import re

    import cxr_dask

    root = Path(cxr_dask.__file__).parent
    builds = re.compile(r"dask\.bag|dask\.delayed|\.compute\(|\.submit\(|from_sequence|\.map_partitions\(")
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if builds.search(p.read_text()))
    assert found == ["pipeline.py", "pipeline_verify.py"]
