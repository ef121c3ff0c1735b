"""Helpers shared by several test modules (a test module never imports another one)."""

from __future__ import annotations

import random
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


def damaged(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """``data`` cut short, or with 1-3 bits flipped or bytes replaced, inside the header
    (after the preamble, before PixelData); and which of the three."""
    out = bytearray(data)
    end = out.find(b"\xe0\x7f\x10\x00")
    end = end if end > 200 else len(out)
    kind = rng.choice(("cut", "flip", "byte"))
    if kind == "cut":
        return bytes(out[: rng.randrange(132, end)]), kind
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(132, end)
        out[at] = out[at] ^ (1 << rng.randrange(8)) if kind == "flip" else rng.randrange(256)
    return bytes(out), kind
