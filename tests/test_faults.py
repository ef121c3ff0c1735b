"""Storage faults over HTTP: a fault-injecting proxy (tests/fault_proxy.py) in front of moto.

A storage failure is never a content failure: at about 20% injected faults (503 SlowDown,
500, bodies cut short, connections reset, answers slower than the read timeout) a run
writes every file, byte for byte what a fault-free run writes; when the faults outlast
the retries nothing is lost: the keys are audited ``storage_error``, the command exits 3
with one line, and rerunning the same command completes the dataset, every row once.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Iterator

import pyarrow.parquet as pq
import pytest
import s3fs
from fault_proxy import NO_FAULTS, FaultPlan, FaultProxy, Seen
from moto_s3 import SSE_KMS, CountingMotoServer, sse_of, start_counting_server, storage_options

from cxr_dask import cli, pipeline
from cxr_dask.config import RunConfig
from cxr_dask.testing.synth import synthesize

SECRET = "faults-tests-secret-0123456789abcdef"
ARCHIVE = "s3://archive/cxr"


@pytest.fixture(scope="module")
def moto() -> Iterator[CountingMotoServer]:
    server = start_counting_server()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(moto) -> Iterator[FaultProxy]:
    faulty = FaultProxy(moto.endpoint).start()
    yield faulty
    faulty.stop()


@pytest.fixture(scope="module", autouse=True)
def secret() -> Iterator[None]:
    """One secret for every run here: same ids, same paths, same bytes."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CXR_DASK_SECRET", SECRET)
        yield


def _options(proxy: FaultProxy, attempts: int, s3fs_retries: int = 5) -> dict:
    """Through the proxy, with SSE-KMS on every write, a short read timeout (the ``slow``
    fault outlasts it), ``attempts`` tries per request and ``s3fs_retries`` around them."""
    return storage_options(proxy.endpoint) | {
        "s3_additional_kwargs": SSE_KMS,
        "s3fs_retries": s3fs_retries,
        "config_kwargs": {
            "read_timeout": 1,
            "connect_timeout": 1,
            "retries": {"mode": "standard", "max_attempts": attempts},
        },
    }


def _direct(moto: CountingMotoServer) -> s3fs.S3FileSystem:
    """moto itself, not the proxy: what the buckets really hold."""
    s3fs.S3FileSystem.clear_instance_cache()
    return s3fs.S3FileSystem(**storage_options(moto.endpoint))


def _objects(fs: s3fs.S3FileSystem, prefix: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    return {path.removeprefix(prefix + "/"): fs.cat_file(path) for path in fs.find(prefix)}


def _table(fs: s3fs.S3FileSystem, path: str):
    return pq.read_table(io.BytesIO(fs.cat_file(path)))


def _run_audit(fs: s3fs.S3FileSystem, vault: str):
    fs.invalidate_cache()
    (path,) = [p for p in fs.find(f"{vault}/runs") if p.endswith("/audit.parquet")]
    return _table(fs, path)


@pytest.fixture(scope="module")
def archive(secret, moto, proxy, tmp_path_factory) -> dict:
    """A few dozen small DICOMs in the archive bucket, and the fault-free run of them."""
    from cxr_dask import storage
    from cxr_dask.storage import Location

    fs = _direct(moto)
    for bucket in ("archive", "research", "phi-vault"):
        fs.mkdir(bucket)
    base = tmp_path_factory.mktemp("faults")
    corpus = synthesize(str(base / "raw"), patients=5, seed=5, rows=48, columns=40)
    for path in sorted((base / "raw").rglob("*")):
        if path.is_file():
            fs.pipe_file(f"archive/cxr/{path.relative_to(base / 'raw').as_posix()}", path.read_bytes())
    keys = [key for key, _ in storage.list_files(Location(ARCHIVE, storage_options(moto.endpoint)))]
    return {"corpus": corpus, "keys": keys}


def _config(proxy: FaultProxy, name: str, attempts: int) -> RunConfig:
    return RunConfig(
        ARCHIVE,
        f"s3://research/{name}",
        f"s3://phi-vault/{name}",
        progress=False,
        partition_size=4,
        storage_options=_options(proxy, attempts),
    )


@pytest.fixture(scope="module")
def baseline(client, moto, proxy, archive) -> dict:
    proxy.plan = NO_FAULTS
    summary = pipeline.run(client, _config(proxy, "base", attempts=3))
    fs = _direct(moto)
    return {"summary": summary, "outputs": _objects(fs, "research/base"), "audit": _run_audit(fs, "phi-vault/base")}


def test_a_fault_free_run_encrypts_every_object_it_writes(baseline, moto):
    assert baseline["summary"].written >= 20 and baseline["summary"].storage_errors == 0
    fs = _direct(moto)
    written = sorted(fs.find("research/base") + fs.find("phi-vault/base"))
    assert len(written) > baseline["summary"].written + 3  # DICOMs, tables, crosswalk, journal, audit
    expected = (SSE_KMS["ServerSideEncryption"], SSE_KMS["SSEKMSKeyId"])
    assert {path: sse_of(fs, path) for path in written} == dict.fromkeys(written, expected)


def test_twenty_percent_faults_write_every_file_byte_identical(client, moto, proxy, baseline):
    proxy.plan = FaultPlan(slowdown=0.07, server_error=0.04, cut=0.04, reset=0.04, slow=0.01, seed=3, slow_seconds=1.5)
    proxy.reset_counts()
    try:
        summary = pipeline.run(client, _config(proxy, "faulty", attempts=6))
    finally:
        proxy.plan = NO_FAULTS
    injected = dict(proxy.injected)
    assert set(injected) == {"slowdown", "server_error", "cut", "reset", "slow"}, injected
    assert sum(injected.values()) >= 0.1 * (sum(injected.values()) + proxy.forwarded)
    assert summary.storage_errors == 0
    assert (summary.written, summary.quarantined) == (baseline["summary"].written, baseline["summary"].quarantined)
    outputs = _objects(_direct(moto), "research/faulty")
    assert outputs == baseline["outputs"]


def _cli(proxy: FaultProxy, client, name: str, attempts: int, s3fs_retries: int) -> list[str]:
    return [
        "run",
        ARCHIVE,
        f"s3://research/{name}",
        "--private",
        f"s3://phi-vault/{name}",
        "--storage-options",
        json.dumps(_options(proxy, attempts, s3fs_retries)),
        "--scheduler",
        client.scheduler.address,
        "--partition-size",
        "4",
        "--no-progress",
    ]


def _complete_as_the_baseline(moto: CountingMotoServer, name: str, baseline: dict) -> None:
    """The dataset a fault-free run makes: same objects and bytes, every table row once."""
    fs = _direct(moto)
    outputs = _objects(fs, f"research/{name}")
    assert outputs == baseline["outputs"]
    rows = pq.read_table(io.BytesIO(outputs["metadata.parquet"])).column("dicom_id").to_pylist()
    assert len(rows) == len(set(rows)) == baseline["summary"].written
    audit = _run_audit(fs, f"phi-vault/{name}")
    statuses = dict(zip(audit.column("key_index").to_pylist(), audit.column("status").to_pylist(), strict=True))
    expected = dict(
        zip(
            baseline["audit"].column("key_index").to_pylist(),
            baseline["audit"].column("status").to_pylist(),
            strict=True,
        )
    )
    assert statuses == expected and audit.num_rows == len(statuses)


def test_faults_past_the_retries_lose_nothing_and_a_rerun_completes(client, moto, proxy, archive, baseline, capsys):
    keys = archive["keys"]
    header_fails, body_fails = f"/archive/cxr/{keys[1]}", f"/archive/cxr/{keys[6]}"

    def doomed(seen: Seen) -> bool:
        """A header read (pass 1), a whole read (pass 2), a third of the DICOM writes, and
        every journal part of the first pass-2 task (so the task cannot record its work)."""
        if seen.method == "GET" and seen.path == header_fails and seen.range:
            return True
        if seen.method == "PUT" and "/doomed/runs/" in seen.path and "/parts/000000000-" in seen.path:
            return True
        if seen.method == "GET" and seen.path == body_fails and not seen.range:
            return True
        return (
            seen.method == "PUT"
            and seen.path.startswith("/research/doomed/files/")
            and zlib.crc32(seen.path.encode()) % 3 == 0
        )

    command = _cli(proxy, client, "doomed", attempts=2, s3fs_retries=1)
    proxy.plan = FaultPlan(slowdown=0.5, server_error=0.5, only=doomed)
    try:
        status = cli.main(command)
    finally:
        proxy.plan = NO_FAULTS
    out, err = capsys.readouterr()
    assert status == 3
    assert "Traceback" not in out + err
    (line,) = [text for text in err.splitlines() if text.strip()]
    audit = _run_audit(_direct(moto), "phi-vault/doomed")
    failed = [
        i
        for i, status in zip(audit.column("key_index").to_pylist(), audit.column("status").to_pylist(), strict=True)
        if status == "storage_error"
    ]
    assert {0, 1, 2, 3, 4, 6} < set(failed)  # 1 in pass 1; 0, 2, 3, 4: the unrecorded first task
    assert line == (
        f"cxr-dask: {len(failed)} files could not be read or written (storage errors after retries); "
        "rerun the same command to retry them"
    )
    assert "unreadable_header" not in audit.column("reason").to_pylist()

    assert cli.main(command) == 0
    out, err = capsys.readouterr()
    assert "resumed run" in out and "Traceback" not in out + err
    _complete_as_the_baseline(moto, "doomed", baseline)


def test_a_failed_commit_is_one_line_and_the_rerun_resumes(client, moto, proxy, baseline, capsys):
    def journal_listing(seen: Seen) -> bool:
        """The client's reads of the journal's parts at the commit (workers only write them)."""
        return (
            seen.method in {"GET", "HEAD"}
            and "parts" in (seen.path + seen.query)
            and "commit" in seen.query + seen.path
        )

    command = _cli(proxy, client, "commit", attempts=2, s3fs_retries=1)
    proxy.plan = FaultPlan(slowdown=1.0, only=journal_listing)
    try:
        status = cli.main(command)
    finally:
        proxy.plan = NO_FAULTS
    out, err = capsys.readouterr()
    assert status == 3 and proxy.injected["slowdown"] > 0
    assert "Traceback" not in out + err
    (line,) = [text for text in err.splitlines() if text.strip()]
    assert line.startswith("cxr-dask: storage failed after retries (") and line.endswith(
        "rerun the same command to resume"
    )
    fs = _direct(moto)
    assert not fs.exists("research/commit/metadata.parquet")
    assert len([p for p in fs.find("research/commit") if p.endswith(".dcm")]) == baseline["summary"].written

    assert cli.main(command) == 0
    out, _ = capsys.readouterr()
    assert "resumed run" in out
    _complete_as_the_baseline(moto, "commit", baseline)


def test_storage_errors_are_told_apart_from_content_errors():
    from botocore.exceptions import ClientError, ReadTimeoutError
    from PIL import UnidentifiedImageError

    from cxr_dask.storage import is_storage_error

    throttled = ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "GetObject")
    translated = OSError(5, "EIO")
    try:
        raise PermissionError("denied") from throttled
    except PermissionError as error:
        denied = error
    for error in [
        throttled,
        translated,
        denied,
        ReadTimeoutError(endpoint_url="x"),
        TimeoutError(),
        FileNotFoundError(),
    ]:
        assert is_storage_error(error), error
    for error in [
        ValueError("bad VR"),
        OSError("image file is truncated"),
        UnidentifiedImageError(),
        EOFError(),
        KeyError(),
    ]:
        assert not is_storage_error(error), error
