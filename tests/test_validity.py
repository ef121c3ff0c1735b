"""Issue 13 item 3: an output never has a dciodvfy error or warning its input did not have.

Every image of pydicom's test files that pass 2 would take (an image SOP class with the
ids it needs) is de-identified as pass 2 does it (header, pixel-container check, file
writer) and validated against its input (``dciodvfy.new_messages``); so is every file of
a synthetic corpus (``cxr-dask synth``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import warnings
from pathlib import Path

import pydicom
import pytest
from dciodvfy import new_messages
from pydicom.data import get_testdata_files

from cxr_dask import encode
from cxr_dask.adversarial import as_bytes, base_image
from cxr_dask.deid.containers import sanitise
from cxr_dask.deid.header import FileIdentity, deidentify_header
from cxr_dask.errors import QuarantineError
from cxr_dask.inventory import classify_header


def remap(uid: str) -> str:
    return "2.25." + str(int(hashlib.sha256(uid.encode()).hexdigest()[:30], 16))


def _identity(ds: pydicom.Dataset) -> FileIdentity:
    """Ids as the client mints them: a whole-week shift that moves the study into 2150."""
    text = str(ds.get("StudyDate") or ds.get("ContentDate") or "20000101").strip()
    try:
        day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        day = dt.date(2000, 1, 1)
    shift = (dt.date(2150, 1, 1) - day).days // 7 * 7
    return FileIdentity(14_142_135, 53_000_777, "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", shift)


def deidentified(path: Path) -> bytes | None:
    """The output pass 2 writes for ``path``, or None when it quarantines the file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            return None
        if classify_header(ds) or "PixelData" not in ds:
            return None
        try:
            deidentify_header(ds, _identity(ds), remap)
            sanitise(ds)
        except QuarantineError:
            return None
        return b"".join(encode.encode_parts(ds))


def _pydicom_images() -> list[Path]:
    names = [Path(p) for p in get_testdata_files() if Path(p).is_file()]
    return sorted(p for p in names if p.suffix == ".dcm" or "." not in p.name)


def _new_messages_of(paths: list[Path], scratch: Path) -> tuple[int, dict[str, set[str]]]:
    checked, found = 0, {}
    for index, path in enumerate(paths):
        data = deidentified(path)
        if data is None:
            continue
        output = scratch / f"out-{index}.dcm"
        output.write_bytes(data)
        checked += 1
        new = new_messages(path, output, scratch)
        if new:
            found[path.name] = new
    return checked, found


def test_pydicom_test_files_gain_no_dciodvfy_message(tmp_path: Path) -> None:
    checked, found = _new_messages_of(_pydicom_images(), tmp_path)
    assert checked >= 80  # CR, CT, MR, US, NM, SC, Enhanced CT, RT images
    assert found == {}


def test_synthetic_corpus_gains_no_dciodvfy_message(corpus, tmp_path: Path) -> None:
    paths = sorted(Path(corpus.root).rglob("*.dcm"))
    checked, found = _new_messages_of(paths, tmp_path)
    assert checked == len(paths) and checked >= 20
    assert found == {}


@pytest.mark.parametrize(
    ("sop_class", "condition", "keyword"),
    [
        ("1.2.840.10008.5.1.4.1.1.481.1", None, "OperatorsName"),  # RT Image: RT Series, Type 2
        ("1.2.840.10008.5.1.4.1.1.1.1", "animal", "ResponsiblePerson"),
        ("1.2.840.10008.5.1.4.1.1.1.1", "animal", "ResponsibleOrganization"),
        ("1.2.840.10008.5.1.4.1.1.1.1", "animal", "PatientSexNeutered"),
    ],
)
def test_type2_attributes_an_iod_requires_are_emptied_not_removed(sop_class, condition, keyword) -> None:
    ds = base_image(3)
    ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    if condition == "animal":
        ds.PatientSpeciesDescription = "Canine"
    setattr(ds, keyword, "Quixbury^Halvard" if keyword != "PatientSexNeutered" else "ALTERED")
    again = pydicom.dcmread(io.BytesIO(as_bytes(ds)))  # as read from a file
    deidentify_header(again, _identity(again), remap)
    assert keyword in again and again[keyword].is_empty
    human = base_image(3)
    setattr(human, keyword, "Quixbury^Halvard" if keyword != "PatientSexNeutered" else "ALTERED")
    deidentify_header(human, _identity(human), remap)
    assert keyword not in human  # a human patient's DX image: removed (Type 3 or absent there)
