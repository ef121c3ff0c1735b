"""Nothing lost: a killed client resumes, a killed worker is survived, a poison file is
quarantined, a later batch keeps every earlier assignment, a locked PRIVATE is refused.

Faults are real: the client is a ``cxr-dask run`` process killed with SIGKILL, workers are
real processes that SIGKILL themselves. ``Sabotage`` is a Dask worker plugin that injects
those faults around ``process.deidentify_bytes`` in the worker processes, and for the
client-kill test a gate: pass 2 stops after a set number of files until the test opens
it, so the kill lands mid-run by construction, never by timing.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cloudpickle
import pyarrow.parquet as pq
import pydicom
import pytest
from distributed.diagnostics.plugin import WorkerPlugin
from utils import audit_of, poll_for, run

from cxr_dask import cli, journal, lock, pipeline
from cxr_dask.config import RunConfig
from cxr_dask.dicom import layout
from cxr_dask.errors import ConfigError
from cxr_dask.identity import load_crosswalk, load_or_create_secret
from cxr_dask.storage import Location

cloudpickle.register_pickle_by_value(sys.modules[__name__])
SECRET = "resume-tests-secret-0123456789"
OPEN = "open"  # the gate's file that lets every waiting file through


class Sabotage(WorkerPlugin):
    """Fault injection in pass 2, around ``process.deidentify_bytes`` in every worker.

    Each file of pass 2 draws a ticket from the folder ``tickets``: its place in pass 2
    across the worker processes (whatever order the scheduler picked for the tasks).

    - ``marker``: SIGKILL the worker on every attempt at a file holding these bytes (a
      poison input).
    - ``kill_at``: SIGKILL the worker holding that ticket, once (a transient failure); the
      pid, the outputs written by then and the file's SOPInstanceUID go to ``once_flag``.
    - ``open_for``: the first ``open_for`` tickets go through, each later one waits until
      the file ``OPEN`` appears in ``tickets`` (the gate).
    """

    name = "sabotage"

    def __init__(
        self,
        tickets: str,
        *,
        marker: bytes | None = None,
        kill_at: int | None = None,
        once_flag: str = "",
        watch: str = "",
        open_for: int | None = None,
    ):
        self.tickets, self.marker, self.kill_at, self.open_for = tickets, marker, kill_at, open_for
        self.once_flag, self.watch = once_flag, watch

    def setup(self, worker) -> None:
        from cxr_dask import process

        original = process.deidentify_bytes
        self._original = original

        def sabotaged(data, *args, **kwargs):
            ticket = self._ticket()
            if self.open_for is not None and ticket >= self.open_for:
                while not os.path.exists(os.path.join(self.tickets, OPEN)):
                    time.sleep(0.01)
            if isinstance(data, bytes):
                raw = data
            else:  # an open file
                raw = data.read()
                data.seek(0)
            if self.marker is not None and self.marker in raw:
                os.kill(os.getpid(), signal.SIGKILL)
            if ticket == self.kill_at:
                self._record(raw)
                os.kill(os.getpid(), signal.SIGKILL)
            return original(data, *args, **kwargs)

        process.deidentify_bytes = sabotaged

    def _record(self, raw: bytes) -> None:
        written = sum(1 for p in Path(self.watch).rglob("*.dcm")) if self.watch else 0
        uid = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).SOPInstanceUID
        Path(self.once_flag).write_text(f"{os.getpid()} {written} {uid}")

    def _ticket(self) -> int:
        """The first number no file has taken yet (an exclusive create is atomic)."""
        number = 0
        while True:
            try:
                os.close(os.open(os.path.join(self.tickets, f"ticket-{number}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return number
            except FileExistsError:
                number += 1

    def teardown(self, worker) -> None:
        from cxr_dask import process

        process.deidentify_bytes = self._original


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv("CXR_DASK_SECRET", SECRET)


def dataset(output: Path) -> dict[str, bytes]:
    return {str(p.relative_to(output)): p.read_bytes() for p in sorted(output.rglob("*")) if p.is_file()}


def _executing(dask_worker) -> int:
    return dask_worker.state.executing_count


def sop_uid(path: Path) -> bytes:
    return pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID.encode()


def test_killed_client_resumes_to_the_outputs_of_an_uninterrupted_run(
    fragile_client, small_workspace, tmp_path, secret, capsys
):
    workspace = small_workspace
    reference = {"input": workspace["input"], "output": tmp_path / "ref-out", "private": tmp_path / "ref-private"}
    run(fragile_client, reference)
    n_keys = len(list(workspace["input"].rglob("*.dcm")))

    # 8 files go through: with 2 workers and tasks of 2 files, 3 or 4 tasks finish, then
    # pass 2 waits at the gate until the client is dead and counted.
    gate = tmp_path / "gate"
    gate.mkdir()
    fragile_client.register_plugin(Sabotage(str(gate), open_for=8))
    arguments = [
        *("run", str(workspace["input"]), str(workspace["output"])),
        *("--private", str(workspace["private"]), "--scheduler", fragile_client.scheduler.address),
        *("--partition-size", "2", "--no-progress"),
    ]
    command = [sys.executable, "-m", "cxr_dask.cli", *arguments]
    client_process = subprocess.Popen(command, start_new_session=True, env=os.environ | {"CXR_DASK_SECRET": SECRET})
    parts = workspace["private"] / "runs"

    def three_parts_written() -> bool:
        assert client_process.poll() is None, "the run ended before it could be interrupted"
        return len(list(parts.rglob("*.audit.parquet"))) >= 3

    try:
        poll_for(three_parts_written, timeout=240, what="3 finished tasks in the journal")
        os.killpg(client_process.pid, signal.SIGKILL)
        client_process.wait()
        finished_parts = len(list(parts.rglob("*.audit.parquet")))  # pass 2 waits at the gate
        assert 3 <= finished_parts < n_keys / 2, "the kill did not land in the middle of pass 2"
        assert not (workspace["output"] / pipeline.METADATA_FILE).exists()
        for path in (workspace["output"] / "files").rglob("*"):
            if path.is_file():  # whatever the killed run left at a final name is complete
                assert pydicom.dcmread(path).PixelData
    finally:
        (gate / OPEN).touch()  # the tasks that were waiting finish, for nobody
        if client_process.poll() is None:
            os.killpg(client_process.pid, signal.SIGKILL)
            client_process.wait()
        poll_for(lambda: not any(fragile_client.run(_executing).values()), what="the workers to be idle")
        fragile_client.unregister_worker_plugin(Sabotage.name)

    capsys.readouterr()
    assert cli.main(arguments) == 0  # the same command again, in this process
    resumed = capsys.readouterr()
    assert "resumed run" in resumed.out, resumed.err
    assert dataset(workspace["output"]) == dataset(reference["output"])
    assert not (workspace["output"] / ".partial").exists()
    audit = audit_of(workspace["private"])
    assert sorted(row["key_index"] for row in audit) == list(range(n_keys))
    assert {row["status"] for row in audit} == {"written"}
    assert not (workspace["private"] / journal.ACTIVE_KEY).exists()
    assert not (workspace["private"] / lock.LOCK_KEY).exists()


def test_worker_killed_mid_pass_two_loses_nothing(fragile_client, small_workspace, tmp_path):
    workspace = small_workspace
    keys = sorted(workspace["input"].rglob("*.dcm"))
    flag, tickets = tmp_path / "killed", tmp_path / "tickets"
    tickets.mkdir()
    # the worker holding the 7th file of pass 2 dies: by then the first 6 went through
    plugin = Sabotage(str(tickets), kill_at=6, once_flag=str(flag), watch=str(workspace["output"]))
    fragile_client.register_plugin(plugin)
    try:
        summary = run(fragile_client, workspace, partition_size=2)
    finally:
        fragile_client.unregister_worker_plugin(Sabotage.name)

    killed_pid, written_before, killed_uid = flag.read_text().split()
    assert int(written_before) > 0, "the worker died before any output existed"
    killed_index = [sop_uid(key) for key in keys].index(killed_uid.encode())
    assert summary.written == len(keys) and summary.quarantined == 0
    audit = audit_of(workspace["private"])
    assert Counter(row["key_index"] for row in audit) == Counter(range(len(keys)))
    assert {row["status"] for row in audit} == {"written"}
    assert not any(row["worker"].endswith(f":{killed_pid}") for row in audit if row["key_index"] == killed_index)
    files = [p for p in (workspace["output"] / "files").rglob("*") if p.is_file()]
    assert len(files) == len(keys)
    table = pq.read_table(workspace["output"] / pipeline.METADATA_FILE)
    assert table.num_rows == len(keys) == len(set(table.column("dicom_id").to_pylist()))


def test_poison_file_is_quarantined_and_the_run_completes(fragile_client, small_workspace, tmp_path):
    workspace = small_workspace
    keys = sorted(workspace["input"].rglob("*.dcm"))
    poison = pydicom.dcmread(keys[0])
    poison.SOPInstanceUID = poison.SOPInstanceUID + ".7"
    poison.private_block(0x0013, "POISON", create=True).add_new(0x01, "LO", "POISON-PILL")
    poison.save_as(workspace["input"] / "poison.dcm")
    fragile_client.register_plugin(Sabotage(str(tmp_path), marker=b"POISON-PILL"))
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


def test_later_batch_keeps_every_earlier_assignment_and_never_reuses_an_id(client, small_corpus, tmp_path):
    corpus = small_corpus
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
        ds = pydicom.dcmread(output / layout.image_path(subject, study, dicom_id))
        patient = next(k for k in after.patients if k.endswith(image.patient_id))
        shift = after.patients[patient][1]
        assert ds.StudyDate == (image.study_date + dt.timedelta(days=shift)).strftime("%Y%m%d")


def test_run_on_a_locked_private_is_refused_before_a_cluster_starts(small_workspace, capsys):
    workspace = small_workspace
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


def test_unfinished_run_of_another_input_is_refused(small_workspace, tmp_path):
    workspace = small_workspace
    private = Location(str(workspace["private"]))
    journal.start_or_resume(private, "s3://archive/a", "s3://research/a")
    with pytest.raises(journal.ConfigError, match="unfinished run"):
        journal.start_or_resume(private, "s3://archive/b", "s3://research/a")
    _, resumed = journal.start_or_resume(private, "s3://archive/a", "s3://research/a")
    assert resumed


def test_a_script_holding_the_run_s_claim_runs_the_pipeline_under_it(client, small_workspace):
    """The lock is taken once per run: ``pipeline.run`` runs under the caller's claim, and a
    second run of the same process is refused while it is held (no nested-hold pass)."""
    workspace = small_workspace
    config = RunConfig(*(str(workspace[name]) for name in ("input", "output", "private")), progress=False)
    with lock.RunClaim(config.private_location, config.input, config.output) as claim:
        summary = pipeline.run(client, config, claim)
        assert claim.lock.read().owner == claim.lock.owner  # held by this claim, before and after
        with pytest.raises(ConfigError, match="in use by another run"):
            pipeline.run(client, config)
        elsewhere = RunConfig(config.input, str(workspace["output"]) + "-2", config.private, progress=False)
        with pytest.raises(ValueError, match="other locations"):
            pipeline.run(client, elsewhere, claim)
    assert summary.written == len(list(workspace["input"].rglob("*.dcm"))) and not summary.resumed
    assert not (workspace["private"] / lock.LOCK_KEY).exists()
    assert not (workspace["private"] / journal.ACTIVE_KEY).exists()
