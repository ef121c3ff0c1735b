"""Issue 12: PHI in attributes outside Table E.1-1, coded and numeric values used as
text, the file meta, and VRs that contradict the dictionary (``adversarial.attributes``).

Each case goes through pass 2's per-file function (``process.deidentify_bytes``) and all
of them at once through the pipeline on the LocalCluster: no planted string in any
rendering in any output file or table, no ``internal_error``, no file lost."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest

from cxr_dask import pipeline
from cxr_dask.adversarial import Case, find_planted
from cxr_dask.adversarial.attributes import CASES, SOP_AS_LO, STUDY_AS_LO
from cxr_dask.config import RunConfig
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.errors import QuarantineError
from cxr_dask.identity import IdentityMap, extend
from cxr_dask.inventory import scan_file, to_table
from cxr_dask.metadata import METADATA_SCHEMA
from cxr_dask.process import deidentify_bytes
from cxr_dask.storage import Location, list_files


def _identity(root: Path) -> IdentityMap:
    """Pass 1 over ``root``: the identity map the client would broadcast."""
    location = Location(str(root))
    records = [scan_file(location, key, i, size) for i, (key, size) in enumerate(list_files(location))]
    return extend(IdentityMap(uid_key=b"k" * 32), to_table(records))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_case_deidentified_per_file(case: Case, tmp_path: Path) -> None:
    source, output = tmp_path / "in", tmp_path / "out"
    case.write(source)
    identity = _identity(source)
    files = sorted(source.rglob("*.dcm"))
    assert files
    rows = []
    for path in files:
        try:
            result = deidentify_bytes(path.read_bytes(), identity, ProfileOptions())
        except QuarantineError as error:
            assert error.reason == case.reason, (path.name, error.reason)
            continue
        assert case.reason is None
        target = output / result.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(result.data)
        rows.append(result.metadata)
        again = pydicom.dcmread(target)
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"):
            assert again[keyword].VR == "UI" and str(again[keyword].value).strip(), keyword  # Type 1
    pq.write_table(pa.Table.from_pylist(rows, schema=METADATA_SCHEMA), output / "metadata.parquet")
    assert find_planted(output, case.planted) == []


def test_defined_terms_and_syntax_decide_what_stays(tmp_path: Path) -> None:
    """The cleaned header feeds metadata.parquet: a name in ViewPosition never gets there,
    ImageType keeps its defined values, the file meta is the standard's."""
    by_name = {case.name: case for case in CASES}
    for name in ("name_in_view_position", "name_in_image_type", "text_in_file_meta_version", "sop_instance_uid_as_lo"):
        by_name[name].write(tmp_path / "in")
    identity = _identity(tmp_path / "in")
    results = {
        path.stem: deidentify_bytes(path.read_bytes(), identity, ProfileOptions())
        for path in sorted((tmp_path / "in").rglob("*.dcm"))
    }
    assert results["name_in_view_position"].metadata["ViewPosition"] is None
    out = pydicom.dcmread(pydicom.filebase.DicomBytesIO(results["name_in_image_type"].data))
    assert list(out.ImageType) == ["ORIGINAL", "PRIMARY"]
    assert results["name_in_image_type"].report.invalid_values == 1
    meta = pydicom.dcmread(pydicom.filebase.DicomBytesIO(results["text_in_file_meta_version"].data)).file_meta
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert sorted(meta.keys()) == [0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013]
    sop = pydicom.dcmread(pydicom.filebase.DicomBytesIO(results["sop_instance_uid_as_lo"].data))
    assert sop["SOPInstanceUID"].VR == "UI" and sop.SOPInstanceUID == identity.remap_uid(SOP_AS_LO)
    assert sop.file_meta.MediaStorageSOPInstanceUID == sop.SOPInstanceUID


@pytest.mark.cluster
def test_all_cases_through_the_pipeline(client, tmp_path: Path) -> None:
    source, output, private = tmp_path / "in", tmp_path / "out", tmp_path / "private"
    for case in CASES:
        case.write(source / case.name)
    files = len(list(source.rglob("*.dcm")))
    summary = pipeline.run(client, RunConfig(str(source), str(output), str(private), progress=False))
    expected_quarantined = sum(1 for case in CASES if case.reason)
    assert summary.files_seen == files
    assert summary.written + summary.quarantined == files  # nothing lost
    assert summary.quarantined == expected_quarantined, summary.reasons
    assert "internal_error" not in summary.reasons
    planted = [text for case in CASES for text in case.planted]
    assert find_planted(output, planted) == []
    metadata = pq.read_table(output / "metadata.parquet")
    assert metadata.num_rows == summary.written
    uids = {str(pydicom.dcmread(path).StudyInstanceUID) for path in (output / "files").rglob("*.dcm")}
    assert all(uid.startswith("2.25.") for uid in uids) and STUDY_AS_LO not in uids
