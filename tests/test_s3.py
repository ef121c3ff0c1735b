"""Object storage end to end, against moto's S3 server over HTTP (no in-process mocking).

The same code path as local folders: a run over ``s3://`` buckets must write exactly the
bytes a local run writes, read each header with one small ranged GET, read each object
once in pass 2, write each output with one PUT, and refuse a missing bucket, a wrong
endpoint or refused credentials with one line before any cluster starts.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
import s3fs
from moto_s3 import (
    ACCESS_KEY,
    SECRET_KEY,
    SSE_KMS,
    CountingMotoServer,
    authenticating_server,
    free_port,
    sse_of,
    start_counting_server,
    storage_options,
)
from utils import LAYOUT, REMAPPED_UID

from cxr_dask import inventory, pipeline, storage
from cxr_dask.config import RunConfig
from cxr_dask.errors import ConfigError
from cxr_dask.storage import HEADER_BLOCK_SIZE, Location
from cxr_dask.testing.synth import synthesize

SECRET = "0123456789abcdef-same-secret-for-local-and-s3"
CLI = [sys.executable, "-m", "cxr_dask.cli"]


@pytest.fixture(scope="module")
def moto() -> Iterator[CountingMotoServer]:
    server = start_counting_server()
    yield server
    server.stop()


def _fresh(moto: CountingMotoServer) -> s3fs.S3FileSystem:
    """Empty server, empty request log, no stale listings cached by fsspec."""
    moto.reset()
    s3fs.S3FileSystem.clear_instance_cache()
    return s3fs.S3FileSystem(**storage_options(moto.endpoint))


def _upload(fs: s3fs.S3FileSystem, local: Path, prefix: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{prefix}/{path.relative_to(local).as_posix()}", path.read_bytes())


# --- storage on S3, without a cluster ---------------------------------------------------


def test_listing_keeps_to_the_prefix_and_skips_folder_markers(moto):
    fs = _fresh(moto)
    fs.mkdir("archive")
    for key in ["cxr/a/1.dcm", "cxr/b/2.dcm", "cxr2/x.dcm", "cxr/empty-folder/"]:
        fs.pipe_file(f"archive/{key}", b"" if key.endswith("/") else b"12")
    location = Location("s3://archive/cxr", storage_options(moto.endpoint))
    assert storage.list_files(location) == [("a/1.dcm", 2), ("b/2.dcm", 2)]
    assert storage.exists(location, "a/1.dcm") and not storage.exists(location, "a/3.dcm")
    bucket_root = Location("s3://archive", storage_options(moto.endpoint))
    assert [key for key, _ in storage.list_files(bucket_root)] == ["cxr/a/1.dcm", "cxr/b/2.dcm", "cxr2/x.dcm"]


def test_overlap_checks_between_bucket_urls():
    def s3(url: str) -> Location:
        return Location(url, {"anon": True})

    assert storage.overlaps(s3("s3://research/dataset/private"), s3("s3://research/dataset"))
    assert storage.overlaps(s3("s3://research/dataset"), s3("s3://research"))
    assert storage.overlaps(s3("s3://research/dataset/"), s3("s3://research/dataset"))
    assert not storage.overlaps(s3("s3://research/dataset2"), s3("s3://research/dataset"))
    assert not storage.overlaps(s3("s3://phi-vault/run1"), s3("s3://research"))
    with pytest.raises(ConfigError, match="private location must not be inside the output"):
        RunConfig("s3://archive/cxr", "s3://research", "s3://research/vault", storage_options={"anon": True})


def test_credentials_never_appear_in_a_repr():
    options = storage_options("http://127.0.0.1:9")
    config = RunConfig("s3://archive/cxr", "s3://research/dataset", "s3://phi-vault/run1", storage_options=options)
    for text in (repr(config), str(config), repr(config.input_location), repr(config.private_location.child("x"))):
        assert SECRET_KEY not in text and ACCESS_KEY not in text


def test_header_read_of_a_15_mb_cxr_fetches_at_most_64_kib(moto, tmp_path):
    fs = _fresh(moto)
    corpus = synthesize(
        str(tmp_path / "big"), patients=1, seed=3, rows=3000, columns=2500, transfer_syntaxes=["1.2.840.10008.1.2.1"]
    )
    image = corpus.images[0]
    data = (Path(corpus.root) / image.relpath).read_bytes()
    assert len(data) > 15_000_000
    fs.mkdir("archive")
    fs.pipe_file(f"archive/cxr/{image.relpath}", data)
    moto.log.clear()

    record = inventory.scan_file(
        Location("s3://archive/cxr", storage_options(moto.endpoint)), image.relpath, 0, len(data)
    )

    assert record["error"] is None
    assert record["patient_id"] == image.patient_id and record["sop_instance_uid"] == image.sop_instance_uid
    gets = moto.log.gets_of(f"archive/cxr/{image.relpath}")
    assert len(gets) == 1 and gets[0].range is not None
    assert [r.method for r in moto.log.snapshot()] == ["GET"]  # the size came from the listing: no HEAD
    assert 0 < sum(get.sent for get in gets) <= HEADER_BLOCK_SIZE


# --- a whole run over buckets -----------------------------------------------------------


@pytest.fixture(scope="module")
def s3_run(client, moto, tmp_path_factory) -> dict:
    """One small corpus run twice with one secret: from a local folder and from S3."""
    fs = _fresh(moto)
    base = tmp_path_factory.mktemp("s3")
    corpus = synthesize(str(base / "raw"), patients=4, seed=21, rows=64, columns=48)
    bad = base / "raw" / "BAD_DOE_JOHN"
    bad.mkdir()
    (bad / "truncated.dcm").write_bytes((Path(corpus.root) / corpus.images[0].relpath).read_bytes()[:700])
    (bad / "notes.txt").write_bytes(b"Patient DOE JOHN MRN 12345678, not a DICOM file\n")

    local = {"output": base / "dataset", "private": base / "private"}
    local["private"].mkdir()
    (local["private"] / "secret.key").write_text(SECRET)
    local_summary = pipeline.run(
        client, RunConfig(str(base / "raw"), str(local["output"]), str(local["private"]), progress=False)
    )

    for bucket in ("archive", "research", "phi-vault"):
        fs.mkdir(bucket)
    _upload(fs, base / "raw", "archive/cxr")
    fs.pipe_file("phi-vault/run1/secret.key", SECRET.encode())
    moto.log.clear()
    config = RunConfig(
        "s3://archive/cxr",
        "s3://research/dataset",
        "s3://phi-vault/run1",
        progress=False,
        partition_size=3,
        storage_options=storage_options(moto.endpoint),
    )
    summary = pipeline.run(client, config)
    requests = moto.log.snapshot()
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(**storage_options(moto.endpoint))
    outputs = {path.removeprefix("research/dataset/"): fs.cat_file(path) for path in fs.find("research/dataset")}
    inputs = {
        key: size for key, size in storage.list_files(Location("s3://archive/cxr", storage_options(moto.endpoint)))
    }
    return {
        "corpus": corpus,
        "summary": summary,
        "local_summary": local_summary,
        "local": local,
        "outputs": outputs,
        "inputs": inputs,
        "requests": requests,
        "fs": fs,
    }


def test_s3_run_writes_the_mimic_layout_and_quarantines_bad_files(s3_run):
    corpus, summary, outputs = s3_run["corpus"], s3_run["summary"], s3_run["outputs"]
    images = {path: data for path, data in outputs.items() if path.startswith("files/")}
    assert len(images) == summary.written == len(corpus.images)
    assert all(LAYOUT.match(path) for path in images)
    assert set(outputs) - set(images) == {"metadata.parquet", "record_list.parquet", "study_list.parquet"}
    assert summary.reasons == {"truncated_or_no_pixel_data": 1, "not_dicom": 1}
    for data in images.values():
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.PatientIdentityRemoved == "YES"


def test_s3_run_writes_the_same_bytes_as_a_local_run(s3_run):
    local_output = s3_run["local"]["output"]
    local = {p.relative_to(local_output).as_posix(): p.read_bytes() for p in local_output.rglob("*") if p.is_file()}
    images = {path: data for path, data in s3_run["outputs"].items() if path.startswith("files/")}
    assert images == {path: data for path, data in local.items() if path.startswith("files/")}
    for table in ("metadata.parquet", "record_list.parquet", "study_list.parquet"):
        from_s3 = pq.read_table(io.BytesIO(s3_run["outputs"][table])).to_pylist()
        assert from_s3 == pq.read_table(local_output / table).to_pylist()
    assert s3_run["summary"].written == s3_run["local_summary"].written


def test_s3_outputs_hold_no_planted_phi(s3_run):
    corpus = s3_run["corpus"]
    needles = {value for value in corpus.phi_values() if len(value) >= 6}
    needles |= {image.sop_instance_uid for image in corpus.images}
    blobs = dict(s3_run["outputs"])
    for table in ("metadata.parquet", "record_list.parquet", "study_list.parquet"):
        blobs[table] = repr(pq.read_table(io.BytesIO(blobs[table])).to_pylist()).encode()
    blobs["names"] = "\n".join(s3_run["outputs"]).encode()
    for name, raw in blobs.items():
        blob = REMAPPED_UID.sub(b"2.25.UID", raw).upper()
        for needle in needles:
            assert needle.upper().encode() not in blob, f"{needle!r} leaked into {name}"


def test_private_records_land_in_the_vault_bucket(s3_run):
    fs = s3_run["fs"]
    vault = fs.find("phi-vault/run1")
    assert {"phi-vault/run1/crosswalk/patients.parquet", "phi-vault/run1/secret.key"} <= set(vault)
    (audit_path,) = [path for path in vault if path.endswith("/audit.parquet")]
    audit = pq.read_table(io.BytesIO(fs.cat_file(audit_path))).to_pylist()
    assert len(audit) == len(s3_run["inputs"])
    assert not any("phi-vault" in path or "crosswalk" in path for path in s3_run["outputs"])


def test_pass_1_reads_headers_only_and_pass_2_reads_each_object_once(s3_run):
    requests = s3_run["requests"]
    for key, size in s3_run["inputs"].items():
        gets = [r for r in requests if r.method == "GET" and r.bucket_key == f"archive/cxr/{key}"]
        ranged = [r for r in gets if r.range]
        whole = [r for r in gets if not r.range]
        assert len(ranged) <= 1 and sum(r.sent for r in ranged) <= HEADER_BLOCK_SIZE, key
        if key.startswith("BAD_"):
            assert whole == [], "a quarantined file was read again in pass 2"
        else:
            assert len(whole) == 1 and whole[0].sent == size, key
    objects = {f"archive/cxr/{key}" for key in s3_run["inputs"]}
    heads = [r for r in requests if r.method == "HEAD" and r.bucket_key in objects]
    assert heads == [], "the sizes come from the listing: no HEAD per object"


def test_each_output_object_is_one_put_of_the_finished_bytes(s3_run):
    requests = s3_run["requests"]
    assert not [r for r in requests if r.method == "POST" or "uploads" in r.query or "partNumber" in r.query]
    puts = Counter(r.bucket_key for r in requests if r.method == "PUT" and r.bucket_key.startswith("research/"))
    images = [path for path in s3_run["outputs"] if path.startswith("files/")]
    assert all(puts[f"research/dataset/{path}"] == 1 for path in images)
    assert set(puts) == {f"research/dataset/{path}" for path in s3_run["outputs"]}  # nothing temporary


def test_workers_without_access_fail_the_run_with_one_line_before_any_work(client, moto, monkeypatch):
    """The session's workers started without AWS variables: the client has them, they don't."""
    fs = _fresh(moto)
    for bucket in ("archive", "research", "phi-vault"):
        fs.mkdir(bucket)
    fs.pipe_file("archive/cxr/a.dcm", b"x")
    for name, value in _aws_env(moto.endpoint).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    config = RunConfig("s3://archive/cxr", "s3://research/dataset", "s3://phi-vault/run1", progress=False)
    storage.check_locations(config.input_location, config.output_location, config.private_location)  # client: fine
    moto.log.clear()
    with pytest.raises(ConfigError, match=r"^on the workers: ") as refused:
        pipeline.run(client, config)
    assert "\n" not in str(refused.value)
    assert "no credentials for the input location" in str(refused.value)
    assert not [r for r in moto.log.snapshot() if r.method in {"PUT", "POST"}]


def test_endpoint_from_the_config_file_reaches_the_checks(moto, tmp_path):
    from cxr_dask.config import build_config, read_config_file

    fs = _fresh(moto)
    fs.mkdir("archive")
    config_file = tmp_path / "run.toml"
    config_file.write_text(
        'input = "s3://archive/cxr"\noutput = "s3://research/dataset"\nprivate = "s3://phi-vault/run1"\n'
        f'[storage_options]\nendpoint_url = "{moto.endpoint}"\nkey = "{ACCESS_KEY}"\nsecret = "{SECRET_KEY}"\n'
    )
    config = build_config(read_config_file(str(config_file)), {})
    with pytest.raises(ConfigError, match="input location does not exist: s3://archive/cxr"):
        storage.check_locations(config.input_location, config.output_location, config.private_location)
    fs.pipe_file("archive/cxr/a.dcm", b"x")
    with pytest.raises(ConfigError, match="the output bucket does not exist: s3://research"):
        storage.check_locations(config.input_location, config.output_location, config.private_location)


# --- the command, with credentials from the environment ---------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=clean | env)


def _aws_env(endpoint: str, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


RUN = ["run", "s3://archive/cxr", "s3://research/dataset", "--private", "s3://phi-vault/run1", "--no-progress"]


@pytest.mark.cluster  # the command starts its own LocalCluster
def test_cli_runs_bucket_to_bucket_with_aws_environment_variables(moto, tmp_path):
    fs = _fresh(moto)
    corpus = synthesize(str(tmp_path / "raw"), patients=2, seed=4, rows=32, columns=32)
    for bucket in ("archive", "research", "phi-vault"):
        fs.mkdir(bucket)
    _upload(fs, tmp_path / "raw", "archive/cxr")

    result = _cli(*RUN, "--workers", "1", "--report", "s3://phi-vault/run1/report.html", env=_aws_env(moto.endpoint))

    assert result.returncode == 0, result.stderr
    assert f"written      {len(corpus.images)}" in result.stdout
    printed = result.stdout + result.stderr
    assert SECRET_KEY not in printed and ACCESS_KEY not in printed
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(**storage_options(moto.endpoint))
    metadata = pq.read_table(io.BytesIO(fs.cat_file("research/dataset/metadata.parquet")))
    assert metadata.num_rows == len(corpus.images)
    assert b"<html" in fs.cat_file("phi-vault/run1/report.html").lower()


def _assert_refused_before_any_work(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert "dashboard:" not in result.stdout  # no cluster was started
    printed = result.stdout + result.stderr
    assert SECRET_KEY not in printed and ACCESS_KEY not in printed


@pytest.mark.parametrize("missing", ["archive", "research", "phi-vault"])
def test_a_missing_bucket_is_one_line_before_any_work(moto, missing):
    fs = _fresh(moto)
    for bucket in {"archive", "research", "phi-vault"} - {missing}:
        fs.mkdir(bucket)
    if missing != "archive":
        fs.pipe_file("archive/cxr/a.dcm", b"x")
    moto.log.clear()
    result = _cli(*RUN, env=_aws_env(moto.endpoint))
    _assert_refused_before_any_work(result, f"bucket does not exist: s3://{missing}")
    assert not [r for r in moto.log.snapshot() if r.method in {"PUT", "POST"}]


def test_a_wrong_endpoint_is_one_line_before_any_work():
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = _cli(*RUN, env=_aws_env(endpoint))
    _assert_refused_before_any_work(result, "cannot reach the storage of the input location s3://archive/cxr")
    assert endpoint in result.stderr


@pytest.fixture(scope="module")
def strict_endpoint() -> Iterator[str]:
    yield from authenticating_server()


def test_refused_credentials_are_one_line_before_any_work(strict_endpoint):
    result = _cli(*RUN, env=_aws_env(strict_endpoint, key="AKIAREVOKEDKEY000001", secret=SECRET_KEY))
    _assert_refused_before_any_work(result, "access denied to the input location s3://archive/cxr")
    assert "AKIAREVOKEDKEY000001" not in result.stderr


def test_storage_options_flag_reaches_the_checks_without_echoing_keys(strict_endpoint):
    options = json.dumps({"endpoint_url": strict_endpoint, "key": "AKIAREVOKEDKEY000002", "secret": SECRET_KEY})
    result = _cli(*RUN, "--storage-options", options, env={})
    _assert_refused_before_any_work(result, "access denied to the input location")
    assert "AKIAREVOKEDKEY000002" not in result.stderr


# --- PHI at rest on object stores: server-side encryption on every write ---------------


def test_sse_options_reach_every_kind_of_write(moto):
    fs = _fresh(moto)
    fs.mkdir("phi-vault")
    options = storage_options(moto.endpoint) | {"s3_additional_kwargs": SSE_KMS}
    vault = Location("s3://phi-vault/run1", options, owner_only=True)
    storage.write_atomic(vault, "crosswalk/patients.parquet", b"p" * 10)
    storage.write_atomic(vault, "runs/r/parts/0-1.audit.parquet", [b"a", memoryview(b"b")])
    assert storage.create_exclusive(vault, "run.lock", b"{}")
    with fs.open("phi-vault/plain", "wb") as handle:  # without the options: no encryption
        handle.write(b"x")
    found = {path: sse_of(fs, path) for path in fs.find("phi-vault/run1")}
    expected = (SSE_KMS["ServerSideEncryption"], SSE_KMS["SSEKMSKeyId"])
    assert found == dict.fromkeys(
        [
            "phi-vault/run1/crosswalk/patients.parquet",
            "phi-vault/run1/runs/r/parts/0-1.audit.parquet",
            "phi-vault/run1/run.lock",
        ],
        expected,
    )
    assert sse_of(fs, "phi-vault/plain") == (None, None)
