"""``cxr-dask verify``: zero findings on a clean run, every planted leak found, no PHI printed."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest

from cxr_dask import cli, pipeline
from cxr_dask.config import RunConfig
from cxr_dask.identity import load_crosswalk
from cxr_dask.metadata import image_path
from cxr_dask.storage import Location
from cxr_dask.synth import SynthCorpus, SynthImage
from cxr_dask.verify import Needles, verify


@pytest.fixture(scope="module")
def clean_run(client, corpus: SynthCorpus, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("verify")
    workspace = {"input": base / "raw", "output": base / "dataset", "private": base / "private"}
    shutil.copytree(corpus.root, workspace["input"])
    config = RunConfig(*(str(workspace[k]) for k in ("input", "output", "private")), progress=False)
    summary = pipeline.run(client, config)
    assert summary.written == len(corpus.images)
    return workspace


def audit(workspace: dict[str, Path], output: Path | None = None):
    return verify(
        Location(str(workspace["input"])),
        Location(str(output or workspace["output"])),
        Location(str(workspace["private"])),
    )


def output_of(workspace: dict[str, Path], output: Path, image: SynthImage) -> Path:
    identity = load_crosswalk(Location(str(workspace["private"])), b"")
    dicom_id, subject, study = identity.images[image.sop_instance_uid]
    return output / image_path(subject, study, dicom_id)


def test_clean_run_has_zero_findings_and_cli_exits_0(clean_run, corpus, capsys):
    report = audit(clean_run)
    assert report.findings == []
    assert report.inputs_read == len(corpus.images)
    assert report.outputs["DICOM"] == len(corpus.images)
    assert report.outputs["Parquet"] == 3
    assert any("pixel OCR check" in reason for reason in report.skipped)
    args = ["verify", str(clean_run["input"]), str(clean_run["output"]), "--private", str(clean_run["private"])]
    assert cli.main(args) == 0
    assert "findings: 0" in capsys.readouterr().out


def _edit_dicom(path: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def name_in_free_text(workspace, output, corpus):
    image = corpus.images[0]
    surname = image.patient_name.split("^")[0]

    def change(ds):
        ds.ImageComments = f"film repeated, {surname.title()} moved"

    _edit_dicom(output_of(workspace, output, image), change)
    return surname


def private_element(workspace, output, corpus):
    def change(ds):
        ds.private_block(0x0009, "SOME VENDOR 1.0", create=True).add_new(0x01, "LO", "calibration ok")

    _edit_dicom(output_of(workspace, output, corpus.images[1]), change)
    return None


def unshifted_date(workspace, output, corpus):
    image = corpus.images[2]
    original = image.study_date.strftime("%Y%m%d")

    def change(ds):
        ds.StudyDate = original

    _edit_dicom(output_of(workspace, output, image), change)
    return original


def phi_in_parquet_cell(workspace, output, corpus):
    table = pq.read_table(output / "metadata.parquet")
    column = table.column("PerformedProcedureStepDescription").to_pylist()
    column[0] = f"CHEST (PA) {corpus.images[3].patient_id}"
    table = table.set_column(3, "PerformedProcedureStepDescription", pa.array(column, pa.string()))
    pq.write_table(table, output / "metadata.parquet")
    return corpus.images[3].patient_id


def phi_in_file_name(workspace, output, corpus):
    surname = corpus.images[4].patient_name.split("^")[0]
    (output / "files" / f"notes_{surname.lower()}.txt").write_text("nothing to see\n")
    return surname


def original_uid_left(workspace, output, corpus):
    image = corpus.images[5]

    def change(ds):
        ds.SeriesInstanceUID = image.series_instance_uid

    _edit_dicom(output_of(workspace, output, image), change)
    return image.series_instance_uid


def duplicate_subject_id(workspace, output, corpus):
    groups = list(corpus.by_patient().values())
    first, second = groups[0][0], groups[1][0]
    identity = load_crosswalk(Location(str(workspace["private"])), b"")
    other_subject = identity.images[second.sop_instance_uid][1]

    def change(ds):
        ds.PatientID = ds.PatientName = str(other_subject)

    _edit_dicom(output_of(workspace, output, first), change)
    return None


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (name_in_free_text, {"phi_in_element"}),
        (private_element, {"private_element"}),
        (unshifted_date, {"date_out_of_range", "interval_not_kept", "phi_in_element"}),
        (phi_in_parquet_cell, {"phi_in_parquet"}),
        (phi_in_file_name, {"phi_in_name"}),
        (original_uid_left, {"original_uid"}),
        (duplicate_subject_id, {"id_mismatch", "id_not_one_to_one"}),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_planted_leak_is_found_and_never_printed(clean_run, corpus, tmp_path, capsys, tamper, expected):
    output = tmp_path / "dataset"
    shutil.copytree(clean_run["output"], output)
    planted = tamper(clean_run, output, corpus)
    report = audit(clean_run, output)
    assert set(report.counts()) == expected
    args = ["verify", str(clean_run["input"]), str(output), "--private", str(clean_run["private"])]
    assert cli.main(args) == 1
    printed = capsys.readouterr().out
    assert "findings: 0" not in printed
    if planted:
        assert planted.upper() not in printed.upper()


def test_needles_match_whole_tokens_only():
    needles = Needles(minted={"19860512"})
    needles.add("Quixbury^Anna", "name", 3)
    needles.add("ANNA", "name", 3)
    needles.add("1234", "id_or_text", 4)  # too short for a number: instance numbers, widths
    needles.add("chest", "name", 5)  # a stop word is never a needle
    needles.add_date("19860512", 6)
    needles.add_uid("1.2.826.0.1.3680043.8.498.77", 7)
    needles.add_uid("1.2.840.10008.5.1.4.1.1.1.1", 7)  # a standard UID is not PHI

    def found(text: str) -> set[tuple[str, int]]:
        return set(needles.find(text))

    assert found("seen by quixbury^anna") == {("name", 3)}
    assert found("HOSANNA") == set()
    assert found("Anna.") == {("name", 3)}
    assert found("window 1234 chest") == set()
    assert found("on 05/12/1986") == {("date", 6)}
    assert found("19860512093000") == {("date", 6)}  # the date part of a DT
    assert found("2.25.19860512") == set()  # digits inside a UID are not a date
    assert found("subject 19860512") == set()  # a research id that looks like a date
    assert found("ref 1.2.826.0.1.3680043.8.498.77") == {("uid", 7)}
    assert found("ref 1.2.826.0.1.3680043.8.498.777") == set()
    assert found("1.2.840.10008.5.1.4.1.1.1.1") == set()


def test_dask_bag_verify_finds_what_the_local_one_finds(clean_run, corpus, client, tmp_path):
    output = tmp_path / "dataset"
    shutil.copytree(clean_run["output"], output)
    name_in_free_text(clean_run, output, corpus)
    duplicate_subject_id(clean_run, output, corpus)
    locations = [Location(str(p)) for p in (clean_run["input"], output, clean_run["private"])]
    local = verify(*locations)
    distributed = verify(*locations, client=client, partition_size=7)
    assert set(local.counts()) == {"phi_in_element", "id_mismatch", "id_not_one_to_one"}
    assert sorted(distributed.findings, key=repr) == sorted(local.findings, key=repr)
    assert (distributed.inputs_read, distributed.outputs) == (local.inputs_read, local.outputs)


def test_ocr_hook_searches_cleaned_images_and_skips_explicitly_otherwise(clean_run, corpus, tmp_path):
    """The plumbing of the pixel check; Tesseract itself is the pixel module's business."""
    from cxr_dask.verify import (
        PIXEL_MODULE,
        _Audit,
        _ocr_outputs,
        _pixel_check_plan,
        harvest_partition,
        pixels_cleaned,
    )

    output = tmp_path / "dataset"
    shutil.copytree(clean_run["output"], output)
    image = corpus.images[0]
    path = output_of(clean_run, output, image)

    def mark_cleaned(ds):
        code = pydicom.Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113101", "DCM", "Clean Pixel Data Option"
        ds.DeidentificationMethodCodeSequence.append(code)

    ds = pydicom.dcmread(path)
    assert not pixels_cleaned(ds)
    _edit_dicom(path, mark_cleaned)
    assert pixels_cleaned(pydicom.dcmread(path))
    installed = importlib.util.find_spec(PIXEL_MODULE) is not None
    assert ("no output image carries" if installed else "is not installed") in (_pixel_check_plan(0, None) or "")

    source = Location(str(clean_run["input"]))
    items = [(i, key, size) for i, (key, size) in enumerate(pipeline.storage.list_files(source))]
    needles = harvest_partition(items, source)[0]
    audit = _Audit(needles)
    surname = image.patient_name.split("^")[0]
    key = str(path.relative_to(output))
    _ocr_outputs(audit, Location(str(output)), [key], lambda ds: f"PORTABLE\n{surname}\nAP")
    assert [(f.kind, f.path, f.category) for f in audit.report.findings] == [("phi_in_pixels", key, "name")]
    assert surname.upper() not in "\n".join(audit.report.lines()).upper()
    clean = _Audit(needles)
    _ocr_outputs(clean, Location(str(output)), [key], lambda ds: "PORTABLE AP UPRIGHT")
    assert clean.report.findings == []


@pytest.mark.parametrize("syntax", [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.DeflatedExplicitVRLittleEndian])
def test_pixel_samples_are_not_searched_as_text(clean_run, corpus, tmp_path, syntax):
    """Samples that happen to spell an input's date are image data: OCR judges pixels.

    (Found on a 200-patient run: decoding every element before cutting the pixel data
    out of the raw bytes searched the samples of a deflated file.)
    """
    output = tmp_path / "dataset"
    shutil.copytree(clean_run["output"], output)
    image = next(i for i in corpus.images if i.transfer_syntax == str(syntax))
    date = image.study_date.strftime("%Y%m%d").encode()

    def spell_the_date(ds):
        samples = bytearray(ds.PixelData)
        samples[64 : 64 + len(date) + 2] = b" " + date + b" "
        ds.PixelData = bytes(samples)

    _edit_dicom(output_of(clean_run, output, image), spell_the_date)
    assert audit(clean_run, output).findings == []
