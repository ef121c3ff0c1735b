"""Configuration is validated before any work starts."""

from __future__ import annotations

import pytest

from cxr_dask.config import MAX_PARTITION_SIZE, RunConfig, build_config, read_config_file
from cxr_dask.errors import ConfigError


def test_private_inside_output_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="private location must not be inside the output"):
        RunConfig(str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "out" / "vault"))


def test_output_inside_input_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="output must not be inside the input"):
        RunConfig(str(tmp_path / "in"), str(tmp_path / "in" / "out"), str(tmp_path / "vault"))


def test_bad_numbers_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="workers"):
        RunConfig(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"), workers=0)


def test_partitioning_keeps_the_graph_small_at_archive_scale(tmp_path):
    config = RunConfig(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"))
    size = config.partition_size_for(400_000, n_threads=64)
    assert size == MAX_PARTITION_SIZE
    assert -(-400_000 // size) <= 4_000
    assert config.partition_size_for(40, n_threads=2) == 5  # 8 tasks for 2 threads
    explicit = RunConfig(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"), partition_size=7)
    assert explicit.partition_size_for(400_000, n_threads=64) == 7


def test_the_last_wave_of_a_pass_is_cut_in_smaller_tasks(tmp_path):
    """Pass 2's tasks (``task_sizes_for``): one task a thread at the end becomes four
    smaller ones, so the worker done first waits a quarter of a task, not a whole one."""
    config = RunConfig(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"))
    assert config.task_sizes_for(200, n_threads=2) == [25] * 6 + [7, 7] + [6] * 6  # 200 films, 2 workers
    assert config.task_sizes_for(200, n_threads=1) == [50] * 3 + [13, 13, 12, 12]
    archive = config.task_sizes_for(400_000, n_threads=64)
    assert sum(archive) == 400_000 and max(archive) == MAX_PARTITION_SIZE == 4 * min(archive)
    assert len(archive) == 2_000 + 3 * 64
    assert config.task_sizes_for(3, n_threads=2) == [1, 1, 1] and config.task_sizes_for(0, n_threads=2) == []
    explicit = RunConfig(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"), partition_size=7)
    assert explicit.task_sizes_for(20, n_threads=2) == [7, 7, 6]  # the user's size, every task


def test_config_file_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        f'input = "{tmp_path / "a"}"\noutput = "{tmp_path / "b"}"\nprivate = "{tmp_path / "c"}"\nworkers = 3\n'
    )
    config = build_config(read_config_file(str(path)), {"workers": 1, "scheduler": None})
    assert config.workers == 1 and config.input == str(tmp_path / "a")


def test_unknown_config_keys_are_an_error(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("wrokers = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'wrokers' \(did you mean 'workers'\?\)"):
        read_config_file(str(path))
    with pytest.raises(ConfigError, match="not found"):
        read_config_file(str(tmp_path / "missing.toml"))
