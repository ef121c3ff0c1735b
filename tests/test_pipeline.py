"""End to end on a LocalCluster with 2 worker processes: the MIMIC-CXR dataset, no PHI left."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import pickle
import re
import subprocess
import zlib
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
from dciodvfy import new_messages
from utils import LAYOUT, REMAPPED_UID, output_files, run

from cxr_dask import pipeline
from cxr_dask.config import RunConfig
from cxr_dask.deid.containers import sanitised_pixel_data
from cxr_dask.dicom import layout
from cxr_dask.identity import load_crosswalk, load_or_create_secret
from cxr_dask.journal import RunJournal

pytestmark = pytest.mark.cluster


def without_pixel_data(data: bytes) -> bytes:
    """The file's bytes, inflated if deflated, with the PixelData value cut out.

    Every other byte is searched; a deflated body would hide any value from a byte search.
    """
    ds = pydicom.dcmread(io.BytesIO(data))
    if ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian:
        stream = io.BytesIO(data)
        pydicom.filereader.read_preamble(stream, False)
        pydicom.filereader._read_file_meta_info(stream)
        body_start = stream.tell()
        data = data[:body_start] + zlib.decompress(data[body_start:], -zlib.MAX_WBITS)
    assert data.count(ds.PixelData) == 1
    return data.replace(ds.PixelData, b"<pixel data>")


@pytest.fixture(scope="module")
def finished(corpus_run: dict) -> dict:
    """One run over the corpus plus planted bad files (the session's ``corpus_run``),
    shared by the assertions below."""
    return corpus_run


def test_every_image_is_written_once_in_the_mimic_layout(finished, corpus):
    files = finished["files"]
    assert len(files) == len(corpus.images)
    for path in files:
        match = LAYOUT.match(path)
        assert match, path
        assert match.group(2).startswith(match.group(1))
        assert 10_000_000 <= int(match.group(2)) <= 19_999_999
    summary = finished["summary"]
    assert summary.written == len(corpus.images)
    assert summary.patients == len(corpus.by_patient())


def test_a_run_leaves_the_callers_arrow_memory_pool_as_it_was(client, small_workspace):
    """The pool is process-wide: the CLI picks jemalloc for its own process, a library
    call (a notebook's ``pipeline.run``) does not switch the caller's."""
    import pyarrow as pa

    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())  # a caller's choice, whatever ran before
    try:
        assert run(client, small_workspace).written > 0
        assert pa.default_memory_pool().backend_name == "system"
    finally:
        pa.set_memory_pool(before)


def test_bad_files_are_quarantined_with_reasons_and_never_written(finished, corpus):
    summary = finished["summary"]
    assert summary.reasons == {
        "truncated_or_no_pixel_data": 1,
        "not_dicom": 1,
        "empty_file": 1,
        "no_patient_id": 1,
        "duplicate_sop_instance_uid": 1,
    }
    assert summary.quarantined == 5
    private = finished["workspace"]["private"]
    (run_folder,) = (private / "runs").iterdir()
    audit = pq.read_table(run_folder / "audit.parquet").to_pylist()
    assert len(audit) == summary.files_seen == len(corpus.images) + 5
    assert sorted(r["key_index"] for r in audit) == list(range(len(audit)))
    assert {r["status"] for r in audit} == {"written", "quarantined"}


def test_no_planted_phi_in_any_output_byte_parquet_value_or_name(finished, corpus):
    output = finished["workspace"]["output"]
    needles = {value for value in corpus.phi_values() if len(value) >= 6}
    needles |= {image.sop_instance_uid for image in corpus.images}
    needles |= {image.study_instance_uid for image in corpus.images}
    # Pixel data is image samples, carried through byte for byte (burned-in text is the
    # pixel cleaner's business): an 8-digit date can occur in compressed samples by chance.
    blobs = [(name, without_pixel_data(data)) for name, data in finished["files"].items()]
    for table in output.glob("*.parquet"):
        values = pq.read_table(table).to_pylist()
        blobs.append((table.name, repr(values).encode()))
    names = "\n".join(str(p.relative_to(output)) for p in output.rglob("*"))
    blobs.append(("names", names.encode()))
    for name, raw in blobs:
        # A remapped UID is 2.25.<~38 HMAC digits>: an 8-digit date can occur inside it by
        # chance (about once in a hundred runs) and carries nothing of the input.
        blob = REMAPPED_UID.sub(b"2.25.UID", raw)
        upper = blob.upper()
        for needle in needles:
            if needle.isdigit():
                # A leaked date or number starts a run of digits (a DA, the date of a DT, an
                # MRN); a shifted date followed by its time can hold one by chance mid-run.
                assert not re.search(rb"(?<![0-9])" + needle.encode(), blob), f"{needle!r} leaked into {name}"
                continue
            assert needle.encode() not in blob, f"{needle!r} leaked into {name}"
            assert needle.upper().encode() not in upper, f"{needle!r} leaked into {name}"


def test_output_headers_are_clean(finished):
    for name, data in finished["files"].items():
        assert data[:132] == b"\x00" * 128 + b"DICM"
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
        assert {"113100", "113105", "113107"} <= codes
        subject = LAYOUT.match(name).group(2)
        assert ds.PatientID == str(int(subject)) and str(ds.PatientName) == f"{int(subject)}^"
        assert ds.AccessionNumber == LAYOUT.match(name).group(3).lstrip("0")
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for element in ds.iterall():
            assert element.tag.group % 2 == 0, f"private element left in {name}"
            assert not (0x5000 <= element.tag.group <= 0x50FF or 0x6000 <= element.tag.group <= 0x60FF)
            if element.VR == "DA" and element.value:
                for value in element.value if element.VM > 1 else [element.value]:
                    assert 2100 <= int(str(value)[:4]) <= 2200, f"{element.keyword} in {name}"
            if element.VR == "DT" and element.value:
                assert 2100 <= int(str(element.value)[:4]) <= 2200
            if element.VR == "UI" and element.keyword in {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"}:
                assert str(element.value).startswith("2.25.")


def test_one_patient_gets_one_subject_and_one_shift_across_partitions_and_workers(finished, corpus):
    workspace = finished["workspace"]
    secret = load_or_create_secret(pipeline.Location(str(workspace["private"])))
    crosswalk = load_crosswalk(pipeline.Location(str(workspace["private"])), secret)
    by_dicom = {pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID: (p, d) for p, d in finished["files"].items()}
    subjects, shifts = defaultdict(set), defaultdict(set)
    for image in corpus.images:
        dicom_id, _, _ = crosswalk.images[image.sop_instance_uid]
        path = next(p for p, _ in by_dicom.values() if dicom_id in p)
        ds = pydicom.dcmread(io.BytesIO(finished["files"][path]))
        subjects[image.patient_id].add(int(ds.PatientID))
        shifted = dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
        shifts[image.patient_id].add((shifted - image.study_date).days)
    for patient, values in subjects.items():
        assert len(values) == 1, patient
        (shift,) = shifts[patient]
        assert shift % 7 == 0
    audit = pq.read_table(next((workspace["private"] / "runs").iterdir()) / "audit.parquet").to_pylist()
    workers_of = defaultdict(set)
    subject_of_dicom = {r["dicom_id"]: r["subject_id"] for r in audit if r["status"] == "written"}
    for r in audit:
        if r["status"] == "written":
            workers_of[subject_of_dicom[r["dicom_id"]]].add(r["worker"])
    assert any(len(w) == 2 for w in workers_of.values()), "no patient was split across both workers"


def test_metadata_tables_follow_mimic_cxr(finished, corpus):
    output = finished["workspace"]["output"]
    metadata = pq.read_table(output / "metadata.parquet")
    assert metadata.column_names == [
        "dicom_id",
        "subject_id",
        "study_id",
        "PerformedProcedureStepDescription",
        "ViewPosition",
        "Rows",
        "Columns",
        "StudyDate",
        "StudyTime",
        "ProcedureCodeSequence_CodeMeaning",
        "ViewCodeSequence_CodeMeaning",
        "PatientOrientationCodeSequence_CodeMeaning",
    ]
    assert metadata.num_rows == len(corpus.images)
    rows = metadata.to_pylist()
    assert all(21000101 <= r["StudyDate"] <= 22001231 for r in rows)
    assert {r["ViewPosition"] for r in rows} <= {"PA", "AP", "LATERAL", "LL", "RL"}
    records = pq.read_table(output / "record_list.parquet").to_pylist()
    assert {r["path"] for r in records} == set(finished["files"])
    studies = pq.read_table(output / "study_list.parquet").to_pylist()
    assert len(studies) == len({i.study_instance_uid for i in corpus.images})


def test_pixel_data_is_copied_byte_for_byte(finished, corpus):
    by_sop = {}
    for data in finished["files"].values():
        ds = pydicom.dcmread(io.BytesIO(data))
        by_sop[ds.SOPInstanceUID] = ds
    workspace = finished["workspace"]
    secret = load_or_create_secret(pipeline.Location(str(workspace["private"])))
    crosswalk = load_crosswalk(pipeline.Location(str(workspace["private"])), secret)
    seen_syntaxes = set()
    for image in corpus.images:
        source = pydicom.dcmread(Path(corpus.root) / image.relpath)
        out = by_sop[crosswalk.remap_uid(image.sop_instance_uid)]
        assert out.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        assert out.PixelData == sanitised_pixel_data(source)  # codestream comments removed
        seen_syntaxes.add(str(source.file_meta.TransferSyntaxUID))
    assert len(seen_syntaxes) >= 5


def test_dcmdump_reads_every_output(finished, tmp_path):
    for name, data in list(finished["files"].items())[:12]:
        path = tmp_path / "x.dcm"
        path.write_bytes(data)
        result = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, (name, result.stderr)
        assert "E:" not in result.stderr


def test_dciodvfy_finds_no_error_or_warning_the_input_did_not_have(finished, corpus, tmp_path):
    workspace = finished["workspace"]
    secret = load_or_create_secret(pipeline.Location(str(workspace["private"])))
    crosswalk = load_crosswalk(pipeline.Location(str(workspace["private"])), secret)
    checked = set()
    for image in corpus.images:
        if image.transfer_syntax in checked:
            continue
        checked.add(image.transfer_syntax)
        dicom_id, subject, study = crosswalk.images[image.sop_instance_uid]
        out = tmp_path / f"{dicom_id}.dcm"
        source = tmp_path / f"in-{dicom_id}.dcm"
        source.write_bytes((Path(corpus.root) / image.relpath).read_bytes())
        out.write_bytes(finished["files"][layout.image_path(subject, study, dicom_id)])
        new = new_messages(source, out, tmp_path)
        assert not new, (image.transfer_syntax, new)


def _installed_maps() -> list[str]:
    from cxr_dask import broadcast

    return sorted(broadcast._INSTALLED)


def test_broadcast_map_travels_once_not_per_task(client, tmp_path):
    from cxr_dask.broadcast import broadcast_identity
    from cxr_dask.identity import IdentityMap

    identity = IdentityMap(uid_key=b"k" * 32)
    identity.images = {f"1.2.{i}": (f"{i:040x}", 10_000_000, 50_000_000) for i in range(20_000)}
    config = RunConfig(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"), progress=False)
    items = [(i, f"k{i}") for i in range(400)]
    with broadcast_identity(client, identity) as ref:
        journal = RunJournal(config.private_location, "run")
        bag = pipeline.deidentify_bag(config, items, ref, partition_size=10, journal=journal)
        assert bag.npartitions == 40
        graph = dict(bag.__dask_graph__())
        assert len(pickle.dumps(graph)) < len(pickle.dumps(identity)) / 10
        installed = client.run(_installed_maps)
        assert len(installed) == 2 and all(ref.name in names for names in installed.values())
    assert not any(ref.name in names for names in client.run(_installed_maps).values())


def test_tasks_of_given_sizes_cut_the_work_in_order_and_name_their_items():
    """Pass 2's work cut by ``RunConfig.task_sizes_for`` (a size a task): every item once, in
    order, as a list and as a listing table; a failed task's items are found by its index."""
    files = [(f"p{i}/{i}.dcm", 10) for i in range(20)]
    items = [(i, key) for i, (key, _) in enumerate(files)]
    table = pipeline.listing_table(files).select(["key_index", "key"])
    sizes = [7, 7, 2, 2, 1, 1]
    for work in (items, table):
        chunks = pipeline.work_chunks(work, sizes)
        assert [len(pipeline.chunk_items(chunk)) for chunk in chunks] == sizes == pipeline.chunk_sizes(work, sizes)
        assert [item for chunk in chunks for item in pipeline.chunk_items(chunk)] == items
        assert pipeline._items_of_task(work, sizes, 3) == items[16:18]
        assert pipeline._items_of_task(work, 7, 2) == items[14:20]
    with pytest.raises(ValueError, match="add up to 19"):
        pipeline.work_chunks(items, [7, 7, 5])


def _held(chunks: list, event: str) -> int:
    """A task that waits for ``event``: its priority can be read while it is pending."""
    from distributed import Event

    Event(event).wait(timeout=60)
    return len(chunks[0])


def test_the_last_wave_s_small_tasks_are_submitted_after_the_others(client, tmp_path):
    """``_each_partition``: tasks smaller than the first go in after the others, at a lower
    priority (a bag's own order, ``dask.order``, may run them first)."""
    import threading
    import uuid

    from distributed import Event

    sizes = RunConfig(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c")).task_sizes_for(40, 2)
    assert sizes == [5] * 6 + [2] * 2 + [1] * 6  # the last wave: 10 files in 8 tasks
    event = f"held-{uuid.uuid4().hex}"
    chunks = pipeline.partitions(list(range(40)), sizes)
    config = RunConfig(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"), progress=False)
    scheduler = client.cluster.scheduler
    priorities: dict[int, tuple] = {}

    def read_priorities() -> None:
        try:
            for _ in range(600):
                tasks = [ts for ts in list(scheduler.tasks.values()) if ts.key.startswith("_held-")]
                if len(tasks) == len(sizes):
                    priorities.update({int(ts.key.rsplit("-", 1)[1]): ts.priority for ts in tasks})
                    return
                threading.Event().wait(0.05)
        finally:
            Event(event, client=client).set()

    reader = threading.Thread(target=read_priorities)
    reader.start()
    window = len(sizes)  # every task submitted at once, so their priorities can be read together
    done = dict(pipeline._each_partition(client, _held, chunks, sizes, "held", config, (event,), window))
    reader.join()
    assert sorted(done) == list(range(len(sizes)))
    assert sorted(priorities) == list(range(len(sizes)))
    assert max(priorities[i] for i in range(6)) < min(priorities[i] for i in range(6, len(sizes)))


def test_rerun_is_idempotent(client, small_workspace):
    workspace = small_workspace
    first = run(client, workspace)
    before = {p: hashlib.sha256(d).hexdigest() for p, d in output_files(workspace["output"]).items()}
    meta_before = pq.read_table(workspace["output"] / "metadata.parquet").to_pylist()
    second = run(client, workspace)
    after = {p: hashlib.sha256(d).hexdigest() for p, d in output_files(workspace["output"]).items()}
    assert first.written == second.written == len(before)
    assert before == after
    assert pq.read_table(workspace["output"] / "metadata.parquet").to_pylist() == meta_before
