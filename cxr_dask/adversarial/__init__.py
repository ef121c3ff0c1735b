"""Adversarial inputs: PHI put where a de-identifier may not look.

Each ``Case`` writes a few DICOM files into a folder of its own and names the strings
it plants; after a run over the cases, none of those strings may appear in any
rendering (``renderings``) in any output file, Parquet cell or path (``find_planted``).
Cases are grouped by hiding place, one submodule each, and collected by ``all_cases``:

- ``freetext``: free text that Clean Descriptors keeps (descriptions, code meanings);
- ``attributes``: attributes outside Table E.1-1, coded and numeric values used as text,
  file meta, elements whose VR contradicts the dictionary;
- ``containers``: pixel containers (unused high bits, trailing bytes, codestream
  comments and thumbnails, hidden frames), degenerate image sizes, links.

A submodule exposes ``CASES: tuple[Case, ...]``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import io
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

SUBMODULES = ("freetext", "attributes", "containers")


@dataclass(frozen=True)
class Case:
    """One way of hiding PHI. ``write(folder)`` writes the case's files under ``folder``.

    ``reason`` is the audit reason the case's files must get when they cannot be
    de-identified (None: they must be written, clean).
    """

    name: str
    kind: str
    planted: tuple[str, ...]
    write: Callable[[Path], None]
    reason: str | None = None


def all_cases() -> tuple[Case, ...]:
    """Every case of every submodule present, in a stable order."""
    cases: list[Case] = []
    for name in SUBMODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            continue
        cases.extend(module.CASES)
    return tuple(cases)


def base_image(seed: int = 0, *, rows: int = 64, columns: int = 64, syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """A valid synthetic chest image of one patient (its own PHI planted as ``synth`` does)."""
    from cxr_dask.testing import synth

    gen = synth._Generator(seed)
    patient = gen.patient()
    study = gen.study(dt.date(2015, 6, 3), "CHEST (PA)")
    ds, _, _ = synth._image(gen, patient, study, "PA", 1, rows, columns, syntax)
    return ds


def save(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as a Part 10 file in its own transfer syntax."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _fold(text: str) -> str:
    """NFKC, accents dropped, case folded: how a reader would match a leaked name."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


def renderings(value: str) -> set[str]:
    """The forms a planted string can take in an output: as written, folded, unpunctuated."""
    folded = _fold(value)
    forms = {value, value.upper(), value.lower(), folded, re.sub(r"[\W_]+", "", folded), re.sub(r"[\W_]+", " ", folded)}
    return {f.strip() for f in forms if len(f.strip()) >= 2}


def _texts_of_file(path: Path) -> Iterator[str]:
    data = path.read_bytes()
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        yield " ".join(table.column_names)
        for column in table.columns:
            yield "\n".join(str(v) for v in column.to_pylist())
        return
    for encoding in ("utf-8", "latin-1", "utf-16-le"):
        yield data.decode(encoding, "ignore")
    body = _deflated_body(data)
    if body is not None:  # a deflated body hides every value from a plain byte search
        yield body.decode("latin-1", "ignore")


def _deflated_body(data: bytes) -> bytes | None:
    """The inflated data set of a Deflated Explicit VR Little Endian file, else None."""
    from pydicom.filereader import read_preamble

    from cxr_dask.dicom._pydicom import read_file_meta_info

    handle = io.BytesIO(data)
    try:
        read_preamble(handle, False)
        meta = read_file_meta_info(handle)
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            return None
        return zlib.decompress(handle.read(), -15)
    except Exception:
        return None


def find_planted(root: Path, planted: Iterable[str]) -> list[tuple[str, str]]:
    """(relative path, planted string) for every planted string found under ``root``.

    Searches every file's bytes (three text encodings, and the inflated body of deflated
    files), every Parquet cell and column name, and every file and folder name, after
    folding case, accents and width.
    """
    forms = {p: {_fold(r) for r in renderings(p)} for p in planted}
    hits: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        texts = [rel]
        if path.is_file():
            texts.extend(_texts_of_file(path))
        folded = "\n".join(_fold(t) for t in texts)
        hits.extend((rel, p) for p, fs in forms.items() if any(f in folded for f in fs))
    return hits


def as_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
