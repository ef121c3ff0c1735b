"""dciodvfy (Debian's dicom3tools) as a test oracle: the messages an output has that its
input did not have. Shared by every test that compares an input with its output."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pydicom

#: A value quoted in a message ("[0] = <...>", "Value=<...>"), and numbers: inputs and
#: outputs differ there (attribute and module names in <...> are kept).
_VALUE = re.compile(r"(?:\]\s*=\s*|[Vv]alues?\s*=\s*)<[^>]*>")
_NUMBER = re.compile(r"\d+")
_UID = re.compile(r"<[#.]+>")  # a UID, remapped in the output


def _validatable(path: Path, scratch: Path) -> Path:
    """dciodvfy cannot inflate: a deflated file is validated re-encoded uncompressed."""
    ds = pydicom.dcmread(path, force=True)
    meta = getattr(ds, "file_meta", None)
    if meta is None or meta.get("TransferSyntaxUID") != pydicom.uid.DeflatedExplicitVRLittleEndian:
        return path
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    inflated = scratch / f"{path.stem}.inflated.dcm"
    ds.save_as(inflated, enforce_file_format=True)
    return inflated


def messages(path: Path, scratch: Path | None = None) -> set[str]:
    """dciodvfy's errors and warnings for ``path``, with values and numbers normalised."""
    assert shutil.which("dciodvfy"), "dciodvfy (Debian's dicom3tools) is missing: `make setup` installs it"
    target = _validatable(path, scratch or path.parent)
    run = subprocess.run(["dciodvfy", str(target)], capture_output=True, text=True, errors="replace", timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    found = {line.strip() for line in lines if line.startswith(("Error", "Warning"))}
    return {_UID.sub("<>", _NUMBER.sub("#", _VALUE.sub("<>", line))) for line in found}


def new_messages(source: Path, output: Path, scratch: Path | None = None) -> set[str]:
    """The messages ``output`` has and ``source`` does not."""
    return messages(output, scratch) - messages(source, scratch)
