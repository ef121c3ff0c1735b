"""The header walk decodes common raw elements and explicit VR sequences itself
(deid/header.py, ``_fast_element``, ``_fast_sequence``): the output bytes, the counts and
the quarantine reasons must be those of pydicom's own conversion, on the synthetic,
bad-input and adversarial corpora and on damaged copies."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pydicom
import pytest
from dx_header import IDENTITY, make_dx, remap, to_bytes
from utils import damaged

from cxr_dask import encode
from cxr_dask.adversarial import all_cases
from cxr_dask.deid import containers, header
from cxr_dask.deid.freetext import shipped_vocabulary
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.errors import QuarantineError
from cxr_dask.inventory import read_dicom
from cxr_dask.privacy import quiet_pydicom
from cxr_dask.synth import bad_corpus

OPTIONS = (ProfileOptions(), ProfileOptions(clean_descriptors=False, retain_modified_dates=False))


def _outcome(data: bytes, fast: bool, options: ProfileOptions, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """What pass 2's header step makes of ``data``: the file's bytes and counts, or why not."""
    defaults = header._pydicom_defaults
    monkeypatch.setattr(header, "_pydicom_defaults", defaults if fast else (lambda: False))
    try:
        ds = read_dicom(io.BytesIO(data))
    except Exception as error:
        return ("unreadable", type(error).__name__)
    try:
        report = header.deidentify_header(ds, IDENTITY, remap, options, shipped_vocabulary())
        containers.sanitise(ds)
        return (b"".join(encode.encode_parts(ds)), report.as_dict())
    except QuarantineError as error:
        return ("quarantined", error.reason, error.detail)
    except Exception as error:
        return ("error", type(error).__name__)
    finally:
        monkeypatch.setattr(header, "_pydicom_defaults", defaults)


@pytest.fixture(scope="module")
def files(corpus, tmp_path_factory) -> list[Path]:
    """The session's synthetic corpus, the bad-input corpus and every adversarial case."""
    quiet_pydicom()
    root = tmp_path_factory.mktemp("header-fast")
    bad_corpus(str(root / "bad"), seed=5, huge_value_bytes=4096)
    for case in all_cases():
        case.write(root / "adversarial" / case.kind / case.name.replace("/", "_"))
    return sorted(p for folder in (Path(corpus.root), root) for p in folder.rglob("*") if p.is_file())


def test_same_output_as_pydicoms_conversion_on_every_corpus(files, monkeypatch) -> None:
    used: list[bool] = []
    fast_sequence = header._fast_sequence

    def counting(ds, raw):
        element = fast_sequence(ds, raw)
        used.append(element is not None)
        return element

    light: list[bool] = []
    collect_light = header._Walker.collect_light

    def counting_light(walker, ds, tag):
        done = collect_light(walker, ds, tag)
        light.append(done)
        return done

    monkeypatch.setattr(header, "_fast_sequence", counting)
    monkeypatch.setattr(header._Walker, "collect_light", counting_light)
    written = 0
    for path in files:
        data = path.read_bytes()
        for options in OPTIONS:
            fast = _outcome(data, True, options, monkeypatch)
            assert fast == _outcome(data, False, options, monkeypatch), path.name
            written += isinstance(fast[0], bytes)
    print(written, sum(used), len(used), sum(light), len(light))
    # the fast paths did run: kept sequences read by _fast_sequence, removed ones by collect_light
    assert written > 250 and sum(used) > 500 and sum(light) > 500


def test_damaged_headers_give_the_same_output_or_reason(files, monkeypatch) -> None:
    """Cut short, bits flipped, bytes replaced inside the header: whatever pydicom's
    conversion makes of it (written, quarantined, which reason), so does the walk."""
    rng = random.Random(16)
    paths = [p for p in files if p.suffix == ".dcm"][:40]
    for _ in range(300):
        data, kind = damaged(rng, rng.choice(paths).read_bytes())
        fast = _outcome(bytes(data), True, OPTIONS[0], monkeypatch)
        assert fast == _outcome(bytes(data), False, OPTIONS[0], monkeypatch), kind


@pytest.mark.parametrize(
    "charset", ["ISO_IR 100", "ISO_IR 192", ["ISO 2022 IR 6", "ISO 2022 IR 87"], "GB18030", "ISO_IR 13", "ISO_IR 999"]
)
def test_character_sets_give_the_same_output(charset: str | list[str], monkeypatch) -> None:
    """Plain ASCII text reads as itself in the data set's character set, or is left to pydicom."""
    ds = make_dx()
    ds.SpecificCharacterSet = charset
    data = to_bytes(ds)
    for options in OPTIONS:
        assert _outcome(data, True, options, monkeypatch) == _outcome(data, False, options, monkeypatch)


def _elements(ds) -> list[tuple]:
    """Each element as stored: tag, class, VR, raw length, value (a sequence: its size)."""
    out = []
    for tag, elem in ds._dict.items():
        value = elem.value
        shown = value if value is None or isinstance(value, (bytes, str, int)) else len(value)
        out.append((int(tag), type(elem).__name__, elem.VR, getattr(elem, "length", None), shown))
    return out


def test_fast_read_is_dcmreads_dataset(files) -> None:
    """``header.fast_read`` gives what ``dcmread`` gives (elements as stored, encoding,
    character set, preamble, file meta) or nothing, for the common files nearly always."""
    read = 0
    for path in files:
        with open(path, "rb") as handle:
            ds = header.fast_read(handle)
            assert ds is not None or handle.tell() == 0
        if ds is None:
            continue
        read += 1
        reference = pydicom.dcmread(path)
        assert _elements(ds) == _elements(reference), path.name
        assert ds.original_encoding == reference.original_encoding
        assert ds.original_character_set == reference.original_character_set
        assert (ds.preamble, ds.file_meta) == (reference.preamble, reference.file_meta)
    assert read > 200
