"""The ``cxr-dask`` command as a user runs it: exit codes, one-line errors, no PHI printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cxr_dask.cli import build_parser
from cxr_dask.testing.synth import synthesize

CLI = [sys.executable, "-m", "cxr_dask.cli"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.cluster  # the command starts its own LocalCluster
def test_synth_then_run_prints_a_summary_and_no_phi(tmp_path: Path):
    made = cli("synth", str(tmp_path / "raw"), "--patients", "3", "--seed", "5", "--size", "64x48")
    assert made.returncode == 0, made.stderr
    corpus = synthesize(str(tmp_path / "again"), patients=3, seed=5, rows=64, columns=48)
    result = cli(
        "run",
        str(tmp_path / "raw"),
        str(tmp_path / "dataset"),
        "--private",
        str(tmp_path / "private"),
        "--workers",
        "1",
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    assert f"written      {len(corpus.images)}" in result.stdout
    assert "dashboard:" in result.stdout
    printed = result.stdout + result.stderr + made.stdout + made.stderr
    for value in corpus.phi_values():
        assert value not in printed
    assert pq.read_table(tmp_path / "dataset" / "metadata.parquet").num_rows == len(corpus.images)


def test_private_inside_output_is_refused_before_any_work(tmp_path: Path):
    (tmp_path / "raw").mkdir()
    result = cli("run", str(tmp_path / "raw"), str(tmp_path / "out"), "--private", str(tmp_path / "out" / "vault"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "private location must not be inside the output" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_input_is_one_clear_line(tmp_path: Path):
    result = cli("run", str(tmp_path / "nope"), str(tmp_path / "out"), "--private", str(tmp_path / "vault"))
    assert result.returncode == 2
    assert "input location does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_flags_are_rejected_by_the_parser():
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "a", "b", "--private", "c", "--workers", "0"])
    # no --private is the settings' to refuse (the config file may give it): tests/test_config_file.py
    assert parser.parse_args(["run", "a", "b"]).private is None
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "x", "--size", "axb"])


def test_the_fork_server_is_prepared_before_numpy_dask_the_settings_and_storage_are_imported():
    """``cxr-dask run`` with several workers (the default) prepares its process to fork its
    workers' server (``workerenv.fork_server_ahead``) before it imports numpy (which must
    load there under one-thread settings), dask, its settings and fsspec."""
    code = (
        "import sys\n"
        "from cxr_dask import cli, workerenv\n"
        "def started(*args, **kwargs):\n"
        "    names = ('numpy', 'dask', 'cxr_dask.config', 'cxr_dask.storage', 'fsspec')\n"
        "    print(sorted(m for m in names if m in sys.modules))\n"
        "    raise SystemExit(0)\n"
        "workerenv.fork_server_ahead = started\n"
        "cli.main(['run', 'in', 'out', '--private', 'p'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("flags", "file", "servers"),
    [
        ((), "", 1),
        (("--workers", "1"), "", 1),
        (("--scheduler", "tcp://x:1"), "", 0),
        ((), 'scheduler = "tcp://x:1"\n', 0),  # a settings file is read first
        ((), "[run]\nworkers = 3\n", 1),
    ],
)
def test_only_a_local_cluster_prepares_the_fork_server_ahead(tmp_path: Path, monkeypatch, flags, file, servers):
    """A scheduler given runs no worker here; a settings file is read first (it may name one)."""
    from cxr_dask import cli as command
    from cxr_dask import workerenv

    started: list[bool] = []
    monkeypatch.setattr(workerenv, "fork_server_ahead", lambda: started.append(True))
    monkeypatch.setattr(command, "_execute", lambda config, ends_process=False: 0)
    if file:
        (tmp_path / "c.toml").write_text(file)
        flags = (*flags, "--config", str(tmp_path / "c.toml"))
    where = [str(tmp_path / "in"), str(tmp_path / "out"), "--private", str(tmp_path / "p")]
    args = build_parser().parse_args(["run", *where, *flags])
    args.ends_process = False
    assert command.command_run(args) == 0
    assert len(started) == servers


def test_a_refused_run_stops_the_fork_server_it_started(tmp_path: Path, monkeypatch):
    """Started before the settings are read, the server is stopped when the run is refused:
    it would finish its imports (~1 s) holding the command's output streams open."""
    from cxr_dask import cli as command
    from cxr_dask import workerenv

    calls: list[str] = []
    monkeypatch.setattr(workerenv, "fork_server_ahead", lambda: calls.append("start"))
    monkeypatch.setattr(workerenv, "stop_fork_server", lambda: calls.append("stop"))
    missing = ["run", str(tmp_path / "nope"), str(tmp_path / "out"), "--private", str(tmp_path / "vault")]
    assert command.main(missing) == 2
    assert calls == ["start", "stop"]


def test_a_refused_run_collects_garbage_again(tmp_path: Path, monkeypatch):
    """``run`` turns the garbage collector off for its start-up (``startup.begin``) and on
    again however it ends: a caller's process (a test, a notebook) collects after."""
    import gc

    from cxr_dask import cli as command
    from cxr_dask import workerenv

    collecting: list[bool] = []
    monkeypatch.setattr(workerenv, "stop_fork_server", lambda: collecting.append(gc.isenabled()))
    missing = ["run", str(tmp_path / "nope"), str(tmp_path / "out"), "--private", str(tmp_path / "vault")]
    try:
        assert command.main(missing) == 2
        after = gc.isenabled()
    finally:
        gc.enable()
    assert (collecting, after) == ([False], True)


@pytest.mark.cluster  # the command starts its own LocalCluster
def test_demo_is_what_make_run_does(tmp_path: Path):
    result = cli("demo", "--workdir", str(tmp_path / "out"), "--patients", "2", "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "written" in result.stdout
    assert any((tmp_path / "out" / "dataset" / "files").rglob("*.dcm"))
    assert (tmp_path / "out" / "private" / "crosswalk" / "patients.parquet").exists()
