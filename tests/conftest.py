"""Shared fixtures: one LocalCluster of 2 worker processes and one synthetic corpus per session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client, LocalCluster


@pytest.fixture(scope="session")
def client() -> Iterator[Client]:
    """Two worker processes, as the issue asks: one patient's files land on both."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="4GiB"
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        yield dask_client


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    """A small corpus with every transfer syntax the generator writes."""
    from cxr_dask.synth import synthesize

    root = tmp_path_factory.mktemp("corpus") / "raw"
    return synthesize(str(root), patients=12, seed=11, rows=128, columns=96)


@pytest.fixture
def workspace(tmp_path: Path, corpus) -> dict[str, Path]:
    """A private copy of the corpus plus empty output and private folders."""
    raw = tmp_path / "raw"
    shutil.copytree(corpus.root, raw)
    return {"input": raw, "output": tmp_path / "dataset", "private": tmp_path / "private"}
