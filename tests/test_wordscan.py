"""Pass 1's walk of a header's bytes (deid/wordscan.py) reads what pydicom reads: the same
words and denied keys as ``descriptor_words`` on pydicom's whole Dataset, the same
inventory records as pydicom's read of the record's tags, on the synthetic, bad-input and
adversarial corpora and on damaged copies; anything else is left to pydicom."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from utils import damaged

from cxr_dask import inventory
from cxr_dask.adversarial import all_cases, as_bytes, base_image
from cxr_dask.deid.header import MAX_VALUE_BYTES, descriptor_words
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.deid.wordscan import header_words
from cxr_dask.privacy import quiet_pydicom
from cxr_dask.storage import Location, list_files
from cxr_dask.testing.synth import bad_corpus


def _pydicom_words(data: bytes) -> tuple[set[str], set[str]] | None:
    """The straightforward path: pydicom reads the whole header, ``descriptor_words`` walks
    it as Datasets (None: pydicom cannot read it, and nothing is counted)."""
    try:
        return descriptor_words(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True), fast=False)
    except Exception:
        return None


@pytest.fixture(scope="module")
def corpora(corpus, tmp_path_factory) -> dict[str, Path]:
    """The session's synthetic corpus, the bad-input corpus (small values) and every
    adversarial case, each in its own folder."""
    root = tmp_path_factory.mktemp("wordscan")
    bad_corpus(str(root / "bad"), seed=5, huge_value_bytes=4096)
    with quiet_pydicom():
        for case in all_cases():
            case.write(root / "adversarial" / case.kind / case.name.replace("/", "_"))
    return {"synth": Path(corpus.root), "bad": root / "bad", "adversarial": root / "adversarial"}


def test_walk_gives_pydicoms_words_on_every_corpus(corpora) -> None:
    walked = left = 0
    for name, folder in corpora.items():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            data = path.read_bytes()
            fast = header_words(data)
            if fast is None:
                left += 1  # left to pydicom: the same function as the reference
                continue
            walked += 1
            assert fast == _pydicom_words(data), (name, path.name)
    assert walked > 250 and left < 15  # big endian, headerless, truncated... go to pydicom


def test_records_and_counts_same_with_and_without_words(corpora) -> None:
    """One read for both: the records are those of pydicom's read of the record's tags,
    the counts those of the straightforward path, file by file."""
    for folder in (corpora["bad"], corpora["adversarial"] / "attributes"):
        location = Location(str(folder))
        items = [(i, key, size) for i, (key, size) in enumerate(list_files(location))]
        plain = inventory.scan_partition(items, location)
        (part,) = inventory.scan_partition_with_words(items, location, ProfileOptions(), 1)
        assert part.records == plain
        denied: set[str] = set()
        for _, key, _ in items:
            expected = _pydicom_words((folder / key).read_bytes()) if (folder / key).stat().st_size else None
            denied |= expected[1] if expected else set()
        assert part.words.denied == denied


def test_damaged_headers_give_pydicoms_words_or_are_left_to_it(corpora) -> None:
    """Cut short, bits flipped, bytes replaced: the walk never counts a word pydicom's
    path would not (a damaged value must never keep more text)."""
    rng = random.Random(12)
    adversarial = sorted((corpora["adversarial"] / "freetext").rglob("*.dcm"))
    paths = sorted(corpora["synth"].rglob("*.dcm"))[:12] + adversarial[:12]
    walked = 0
    for _ in range(400):
        data, kind = damaged(rng, rng.choice(paths).read_bytes())
        fast = header_words(bytes(data))
        if fast is not None:
            walked += 1
            assert fast == _pydicom_words(bytes(data)), kind
    assert walked > 100


def test_unusual_encodings_are_left_to_pydicom() -> None:
    ds = base_image(31)
    ds.StudyDescription = "CHEST PA"
    good = as_bytes(ds)
    assert header_words(good) is not None
    # a character set inside an item: each item may decode its own text differently
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 100"
    item.CodeMeaning = "Thorax"
    ds.ProcedureCodeSequence = Sequence([item])
    assert header_words(as_bytes(ds)) is None
    # a repeated tag (pydicom keeps the last value) and tags out of order
    at = good.index(b"\x08\x00\x30\x10")  # StudyDescription
    length = int.from_bytes(good[at + 6 : at + 8], "little")
    element = good[at : at + 8 + length]
    assert header_words(good[: at + 8 + length] + element + good[at + 8 + length :]) is None
    # not little endian, not Part 10
    assert header_words(good[:128] + b"DICX" + good[132:]) is None


def test_an_oversized_value_is_not_tokenised_and_its_file_counts_no_word() -> None:
    """Pass 2 quarantines a file with a text value beyond MAX_VALUE_BYTES; pass 1 does not
    spend minutes tokenising megabytes of it, and counts none of the file's words."""
    ds = base_image(32)
    ds.ReferringPhysicianName = "QUENNELL^ALISTAIR"
    ds.StudyDescription = "CHEST " * (MAX_VALUE_BYTES // 6 + 2)
    words, denied = header_words(as_bytes(ds))
    assert words == set() and {"quennell", "alistair"} <= denied
