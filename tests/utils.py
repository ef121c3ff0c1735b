"""Helpers shared by several test modules (a test module never imports another one)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pyarrow.parquet as pq
from distributed import Client

from cxr_dask import pipeline
from cxr_dask.config import RunConfig

T = TypeVar("T")

#: A UID the run minted (``2.25.`` and a keyed hash), in bytes.
REMAPPED_UID = re.compile(rb"2\.25\.\d{1,40}")
#: An output image's path in the MIMIC-CXR layout.
LAYOUT = re.compile(r"^files/p(\d{2})/p(\d{8})/s(5\d{7})/([0-9a-f]{8}(?:-[0-9a-f]{8}){4})\.dcm$")


def run(client: Client, workspace: dict[str, Path], **overrides) -> pipeline.RunSummary:
    """The whole pipeline over a workspace (``input``, ``output``, ``private``), no progress bar."""
    config = RunConfig(
        str(workspace["input"]),
        str(workspace["output"]),
        str(workspace["private"]),
        progress=False,
        **overrides,
    )
    return pipeline.run(client, config)


def output_files(output: Path) -> dict[str, bytes]:
    """Every image a run wrote under ``output/files``, by relative path."""
    return {str(p.relative_to(output)): p.read_bytes() for p in sorted((output / "files").rglob("*")) if p.is_file()}


def audit_of(private: Path) -> list[dict]:
    """The audit rows of the one run a private folder holds."""
    (folder,) = (private / "runs").iterdir()
    return pq.read_table(folder / "audit.parquet").to_pylist()


def poll_for(condition: Callable[[], T], timeout: float = 120, interval: float = 0.02, what: str = "") -> T:
    """Wait until ``condition()`` is true (as distributed's ``poll_for``); its value.

    A test waits for a state, never for a time: ``interval`` only spaces the checks.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting {timeout:.0f} s for {what or condition}")
        time.sleep(interval)
