"""The header walk decodes common raw elements and explicit VR sequences itself
(deid/header/reader.py, ``_fast_element``, ``_fast_sequence``): the output bytes, the counts and
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
from cxr_dask.deid.header import lookups, reader, state
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.errors import QuarantineError
from cxr_dask.inventory import read_dicom
from cxr_dask.privacy import quiet_pydicom
from cxr_dask.testing.synth import bad_corpus

OPTIONS = (ProfileOptions(), ProfileOptions(clean_descriptors=frozenset(), retain_modified_dates=False))


def _outcome(data: bytes, fast: bool, options: ProfileOptions, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """What pass 2's header step makes of ``data``: the file's bytes and counts, or why not."""
    defaults = reader._pydicom_defaults
    monkeypatch.setattr(reader, "_pydicom_defaults", defaults if fast else (lambda: False))
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
        monkeypatch.setattr(reader, "_pydicom_defaults", defaults)


@pytest.fixture(scope="module")
def files(corpus, tmp_path_factory) -> list[Path]:
    """The session's synthetic corpus, the bad-input corpus and every adversarial case."""
    root = tmp_path_factory.mktemp("header-fast")
    with quiet_pydicom():  # pydicom would log the malformed values planted here
        bad_corpus(str(root / "bad"), seed=5, huge_value_bytes=4096)
        for case in all_cases():
            case.write(root / "adversarial" / case.kind / case.name.replace("/", "_"))
    return sorted(p for folder in (Path(corpus.root), root) for p in folder.rglob("*") if p.is_file())


def test_same_output_as_pydicoms_conversion_on_every_corpus(files, monkeypatch) -> None:
    used: list[bool] = []
    fast_sequence = state._fast_sequence

    def counting(ds, raw):
        element = fast_sequence(ds, raw)
        used.append(element is not None)
        return element

    light: list[bool] = []
    collect_light = header.walk._Walker.collect_light

    def counting_light(walker, ds, tag):
        done = collect_light(walker, ds, tag)
        light.append(done)
        return done

    monkeypatch.setattr(state, "_fast_sequence", counting)
    monkeypatch.setattr(header.walk._Walker, "collect_light", counting_light)
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
    """``reader.fast_read`` gives what ``dcmread`` gives (elements as stored, encoding,
    character set, preamble, file meta) or nothing, for the common files nearly always."""
    read = 0
    for path in files:
        with open(path, "rb") as handle:
            ds = reader.fast_read(handle)
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


def _tricky_dx() -> pydicom.Dataset:
    """make_dx with the sequences the walk reads from their bytes, and those it must not:
    removed sequences of undefined length (items too) nesting another with private
    elements, a removed one with a non-ASCII name or a PixelRepresentation inside (the
    full path), and kept sequences with no items at two depths."""
    ds = make_dx()
    request = ds.RequestAttributesSequence  # of defined length: read raw
    request[0].is_undefined_length_sequence_item = True
    nested = request[0].ReferencedStudySequence
    nested.is_undefined_length = True
    nested[0].private_block(0x0015, "ACME NEST", create=True).add_new(0x01, "LO", "NESTPRIVPHI")
    nested[0].ReferringPhysicianName = "Nested^Quenby"
    ds.OtherPatientIDsSequence[0].PatientName = "Müller^Quinta"  # not ASCII: decoded now
    person = pydicom.Dataset()
    person.PersonName = "Pixrep^Quill"
    person.PixelRepresentation = 0  # pydicom reads it when the sequence is stored
    person.PersonIdentificationCodeSequence = pydicom.Sequence([pydicom.Dataset()])
    ds.PerformingPhysicianIdentificationSequence = pydicom.Sequence([person])
    ds.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = pydicom.Sequence([])
    ds.PatientOrientationCodeSequence = pydicom.Sequence([])
    return ds


def _encoded(ds: pydicom.Dataset, syntax: pydicom.uid.UID) -> bytes:
    ds.file_meta.TransferSyntaxUID = syntax
    ds.set_original_encoding(None, None)  # built in memory: written as the syntax says
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "syntax",
    [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRBigEndian],
)
def test_sequences_read_from_bytes_give_the_full_paths_output(syntax, monkeypatch) -> None:
    """Removed sequences noted from their bytes (``collect_light``), empty kept sequences
    left as read (``empty_sequence``) and the file meta read from its bytes give the
    bytes, counts and reasons of pydicom's conversion; each fast path is taken where it
    applies (explicit VR little endian) and left where it must be."""
    taken: dict[str, list[bool]] = {"light": [], "empty": [], "meta": []}

    def counting(name: str, function):
        def wrapper(*args):
            result = function(*args)
            if reader._pydicom_defaults():
                taken[name].append(result is True or (name == "meta" and result is not None))
            return result

        return wrapper

    monkeypatch.setattr(header.walk._Walker, "collect_light", counting("light", header.walk._Walker.collect_light))
    monkeypatch.setattr(header.walk._Walker, "empty_sequence", counting("empty", header.walk._Walker.empty_sequence))
    monkeypatch.setattr(reader, "_file_meta", counting("meta", reader._file_meta))
    data = _encoded(_tricky_dx(), syntax)
    for options in OPTIONS:
        fast = _outcome(data, True, options, monkeypatch)
        assert isinstance(fast[0], bytes), fast
        assert fast == _outcome(data, False, options, monkeypatch)
    if syntax == pydicom.uid.ExplicitVRLittleEndian:
        # taken for the plain removed sequences, left for the non-ASCII and PixelRepresentation ones
        assert taken["light"].count(True) >= 4 and taken["light"].count(False) >= 4
        assert taken["empty"].count(True) >= 4 and all(taken["meta"])
    else:
        assert not any(taken["light"]) and not any(taken["empty"])  # read by pydicom


def test_items_and_raw_elements_made_without_init_are_pydicoms() -> None:
    """``_new_item`` gives the data set ``Dataset(...)`` does, and ``_new_tuple`` the
    RawDataElement its constructor makes (``is_raw`` and ``is_buffered`` at their defaults)."""
    elements = {lookups._key(0x00080100): pydicom.dataelem.RawDataElement(0x00080100, "SH", 2, b"AB", 9, False, True)}
    made = reader._new_item(elements, ["iso8859"], True, 40)
    reference = pydicom.Dataset(elements, parent_encoding=["iso8859"])
    reference.set_original_encoding(False, True, ["iso8859"])
    for name, value in (("is_undefined_length_sequence_item", True), ("seq_item_tell", 40), ("file_tell", 40)):
        object.__setattr__(reference, name, value)
    assert list(vars(made)) == list(vars(reference)) and vars(made) == vars(reference)
    fields = (lookups._key(0x00080100), "SH", 2, b"AB", 9, False, True, True, False)
    assert reader._new_tuple(pydicom.dataelem.RawDataElement, fields) == pydicom.dataelem.RawDataElement(*fields[:7])
    assert lookups._key(0x00100010) is lookups._key(0x00100010) == 0x00100010
