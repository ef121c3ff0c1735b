"""Nothing lost: a killed client resumes, a killed worker is survived, a poison file is
quarantined, a later batch keeps every earlier assignment, a locked PRIVATE is refused.

Faults are real: the client is a ``cxr-dask run`` process killed with SIGKILL, workers are
real processes that SIGKILL themselves. ``Sabotage`` is a Dask worker plugin that injects
those faults (and, for the client-kill test, a delay that holds pass 2 open long enough
to kill it) around ``process.deidentify_bytes`` in the worker processes.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cloudpickle
import dask
import pyarrow.parquet as pq
import pydicom
import pytest
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from cxr_dask import cli, journal, lock, pipeline
from cxr_dask.config import RunConfig
from cxr_dask.identity import load_crosswalk, load_or_create_secret
from cxr_dask.storage import Location

pytestmark = pytest.mark.cluster
cloudpickle.register_pickle_by_value(sys.modules[__name__])
SECRET = "resume-tests-secret-0123456789"


class Sabotage(WorkerPlugin):
    """Fault injection in pass 2: SIGKILL the worker on files holding ``marker``.

    ``once_flag``: only the first worker to claim this flag file dies (a transient
    failure); without it every attempt dies (a poison input). ``delay`` slows every file.
    """

    name = "sabotage"

    def __init__(self, marker: bytes | None = None, once_flag: str | None = None, delay: float = 0.0, watch: str = ""):
        self.marker, self.once_flag, self.delay, self.watch = marker, once_flag, delay, watch

    def setup(self, worker) -> None:
        from cxr_dask import process

        original = process.deidentify_bytes
        self._original = original

        def sabotaged(data, *args, **kwargs):
            time.sleep(self.delay)
            if isinstance(data, bytes):
                raw = data
            else:  # an open file
                raw = data.read()
                data.seek(0)
            if self.marker is not None and self.marker in raw and self._claim():
                os.kill(os.getpid(), signal.SIGKILL)
            return original(data, *args, **kwargs)

        process.deidentify_bytes = sabotaged

    def _claim(self) -> bool:
        if self.once_flag is None:
            return True
        try:
            descriptor = os.open(self.once_flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        written = sum(1 for p in Path(self.watch).rglob("*.dcm")) if self.watch else 0
        os.write(descriptor, f"{os.getpid()} {written}".encode())
        os.close(descriptor)
        return True

    def teardown(self, worker) -> None:
        from cxr_dask import process

        process.deidentify_bytes = self._original


@pytest.fixture(scope="module")
def fragile_client():
    """Two worker processes; a task may take part in one worker death, not two."""
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv("CXR_DASK_SECRET", SECRET)


def run(client, workspace, **overrides) -> pipeline.RunSummary:
    config = RunConfig(
        str(workspace["input"]), str(workspace["output"]), str(workspace["private"]), progress=False, **overrides
    )
    return pipeline.run(client, config)


def dataset(output: Path) -> dict[str, bytes]:
    return {str(p.relative_to(output)): p.read_bytes() for p in sorted(output.rglob("*")) if p.is_file()}


def audit_of(private: Path) -> list[dict]:
    (folder,) = (private / "runs").iterdir()
    return pq.read_table(folder / "audit.parquet").to_pylist()


def sop_uid(path: Path) -> bytes:
    return pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID.encode()


def test_killed_client_resumes_to_the_outputs_of_an_uninterrupted_run(fragile_client, workspace, tmp_path, secret):
    reference = {"input": workspace["input"], "output": tmp_path / "ref-out", "private": tmp_path / "ref-private"}
    run(fragile_client, reference)
    n_keys = len(list(workspace["input"].rglob("*.dcm")))

    fragile_client.register_plugin(Sabotage(delay=0.15))
    command = [
        *(sys.executable, "-m", "cxr_dask.cli", "run", str(workspace["input"]), str(workspace["output"])),
        *("--private", str(workspace["private"]), "--scheduler", fragile_client.scheduler.address),
        *("--partition-size", "2", "--no-progress"),
    ]
    client_process = subprocess.Popen(command, start_new_session=True, env=os.environ | {"CXR_DASK_SECRET": SECRET})
    parts = workspace["private"] / "runs"
    deadline = time.monotonic() + 120
    while len(list(parts.rglob("*.audit.parquet"))) < 3 and time.monotonic() < deadline:
        assert client_process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.02)
    os.killpg(client_process.pid, signal.SIGKILL)
    client_process.wait()
    fragile_client.unregister_worker_plugin(Sabotage.name)

    finished_parts = len(list(parts.rglob("*.audit.parquet")))
    assert 3 <= finished_parts < n_keys / 2, "the kill did not land in the middle of pass 2"
    assert not (workspace["output"] / pipeline.METADATA_FILE).exists()
    for path in (workspace["output"] / "files").rglob("*"):
        if path.is_file():  # whatever the killed run left at a final name is complete
            assert pydicom.dcmread(path).PixelData

    resumed = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=os.environ | {"CXR_DASK_SECRET": SECRET}
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed run" in resumed.stdout
    assert dataset(workspace["output"]) == dataset(reference["output"])
    assert not (workspace["output"] / ".partial").exists()
    audit = audit_of(workspace["private"])
    assert sorted(row["key_index"] for row in audit) == list(range(n_keys))
    assert {row["status"] for row in audit} == {"written"}
    assert not (workspace["private"] / journal.ACTIVE_KEY).exists()
    assert not (workspace["private"] / lock.LOCK_KEY).exists()


def test_worker_killed_mid_pass_two_loses_nothing(fragile_client, workspace, tmp_path):
    keys = sorted(workspace["input"].rglob("*.dcm"))
    flag = tmp_path / "killed"
    plugin = Sabotage(marker=sop_uid(keys[-3]), once_flag=str(flag), watch=str(workspace["output"]))
    fragile_client.register_plugin(plugin)
    try:
        summary = run(fragile_client, workspace, partition_size=2)
    finally:
        fragile_client.unregister_worker_plugin(Sabotage.name)

    killed_pid, written_before = flag.read_text().split()
    assert int(written_before) > 0, "the worker died before any output existed"
    assert summary.written == len(keys) and summary.quarantined == 0
    audit = audit_of(workspace["private"])
    assert Counter(row["key_index"] for row in audit) == Counter(range(len(keys)))
    assert {row["status"] for row in audit} == {"written"}
    assert not any(row["worker"].endswith(f":{killed_pid}") for row in audit if row["key_index"] == len(keys) - 3)
    files = [p for p in (workspace["output"] / "files").rglob("*") if p.is_file()]
    assert len(files) == len(keys)
    table = pq.read_table(workspace["output"] / pipeline.METADATA_FILE)
    assert table.num_rows == len(keys) == len(set(table.column("dicom_id").to_pylist()))


def test_poison_file_is_quarantined_and_the_run_completes(fragile_client, workspace):
    keys = sorted(workspace["input"].rglob("*.dcm"))
    poison = pydicom.dcmread(keys[0])
    poison.SOPInstanceUID = poison.SOPInstanceUID + ".7"
    poison.private_block(0x0013, "POISON", create=True).add_new(0x01, "LO", "POISON-PILL")
    poison.save_as(workspace["input"] / "poison.dcm")
    fragile_client.register_plugin(Sabotage(marker=b"POISON-PILL"))
    try:
        summary = run(fragile_client, workspace, partition_size=3)
    finally:
        fragile_client.unregister_worker_plugin(Sabotage.name)

    assert summary.reasons == {"worker_crash": 1}
    assert summary.written == len(keys)
    audit = audit_of(workspace["private"])
    all_keys = sorted(str(p.relative_to(workspace["input"])) for p in workspace["input"].rglob("*.dcm"))
    (crashed,) = [row for row in audit if row["status"] == "quarantined"]
    assert all_keys[crashed["key_index"]] == "poison.dcm"
    assert len(audit) == len(all_keys)


def test_later_batch_keeps_every_earlier_assignment_and_never_reuses_an_id(client, corpus, tmp_path):
    patients = sorted(corpus.by_patient().items())
    old, new = patients[: len(patients) // 2], patients[len(patients) // 2 :]
    first_batch, second_batch = [], []
    for _, images in old:  # old patients: first study now, later studies in batch two
        first_date = min(image.study_date for image in images)
        for image in images:
            (first_batch if image.study_date == first_date else second_batch).append(image)
    second_batch += [image for _, images in new for image in images]
    assert any(image.study_date != min(i.study_date for i in imgs) for _, imgs in old for image in imgs)

    def copy(images, folder: Path) -> Path:
        for image in images:
            target = folder / image.relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(corpus.root) / image.relpath, target)
        return folder

    output, private = tmp_path / "dataset", tmp_path / "private"
    run(client, {"input": copy(first_batch, tmp_path / "batch1"), "output": output, "private": private})
    vault = Location(str(private))
    before = load_crosswalk(vault, load_or_create_secret(vault))
    run(client, {"input": copy(second_batch, tmp_path / "batch2"), "output": output, "private": private})
    after = load_crosswalk(vault, load_or_create_secret(vault))

    for table in ("patients", "studies", "images"):
        earlier, later = getattr(before, table), getattr(after, table)
        assert all(later[key] == value for key, value in earlier.items()), table
    subjects = [subject for subject, _ in after.patients.values()]
    assert len(subjects) == len(set(subjects)) == len(patients)
    studies = [study for _, study in after.studies.values()]
    assert len(studies) == len(set(studies))
    metadata = pq.read_table(output / pipeline.METADATA_FILE)
    assert metadata.num_rows == len(corpus.images) == len(set(metadata.column("dicom_id").to_pylist()))
    for image in second_batch:
        dicom_id, subject, study = after.images[image.sop_instance_uid]
        ds = pydicom.dcmread(output / pipeline.metadata.image_path(subject, study, dicom_id))
        patient = next(k for k in after.patients if k.endswith(image.patient_id))
        shift = after.patients[patient][1]
        assert ds.StudyDate == (image.study_date + dt.timedelta(days=shift)).strftime("%Y%m%d")


def test_run_on_a_locked_private_is_refused_before_a_cluster_starts(workspace, capsys):
    holder = lock.PrivateLock(Location(str(workspace["private"])))
    holder.acquire()
    try:
        code = cli.main([
            "run", str(workspace["input"]), str(workspace["output"]),
            "--private", str(workspace["private"]), "--workers", "1", "--no-progress",
        ])  # fmt: skip
    finally:
        holder.release()
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and "is in use by another run" in captured.err
    assert "dashboard" not in captured.out
    assert not workspace["output"].exists()


def test_unfinished_run_of_another_input_is_refused(workspace, tmp_path):
    private = Location(str(workspace["private"]))
    journal.start_or_resume(private, "s3://archive/a", "s3://research/a")
    with pytest.raises(journal.ConfigError, match="unfinished run"):
        journal.start_or_resume(private, "s3://archive/b", "s3://research/a")
    _, resumed = journal.start_or_resume(private, "s3://archive/a", "s3://research/a")
    assert resumed
