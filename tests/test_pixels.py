"""Burned-in text: planted PHI is unreadable after cleaning, markers and untouched pixels stay.

One synthetic corpus with text painted into the pixels, in every transfer syntax the
generator writes, goes through pass 2 (``process.deidentify_bytes``, no cluster). The
PHI check is an independent attacker: Tesseract on each planted box of the output, both
polarities, upscaled; the same reading of the input proves the check can see the text.
"""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pydicom
import pytest
from dciodvfy import new_messages
from PIL import Image

from cxr_dask import identity, inventory, process
from cxr_dask.config import build_config, read_config_file
from cxr_dask.deid import pixels
from cxr_dask.deid.containers import sanitised_pixel_data
from cxr_dask.deid.pixels import cleaning, detection, morphology, ocr, textdet
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.deid.rules import PixelOptions, RegionRule
from cxr_dask.dicom.codes import CLEAN_PIXEL_DATA
from cxr_dask.errors import ConfigError, QuarantineError
from cxr_dask.metadata import AUDIT_SCHEMA
from cxr_dask.storage import Location, list_files
from cxr_dask.testing.synth import EXTRA_TRANSFER_SYNTAXES, LOSSY_SYNTAXES, TRANSFER_SYNTAXES, synthesize
from cxr_dask.testing.synth_text import MARKER, PHI, STRUCTURE

SYNTAXES = TRANSFER_SYNTAXES + EXTRA_TRANSFER_SYNTAXES
SIZE = 448
MARGIN = 6  # pixels around a planted box that the check reads


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory):
    """The corpus, its identity map, and every image's input and pass-2 output."""
    root = tmp_path_factory.mktemp("pixels") / "raw"
    corpus = synthesize(
        str(root), patients=4, seed=4, rows=SIZE, columns=SIZE, transfer_syntaxes=SYNTAXES, burned_in_text=True
    )
    source = Location(str(root))
    files = list_files(source)
    records = inventory.scan_partition(((i, k, s) for i, (k, s) in enumerate(files)), source)
    ident = identity.extend(
        identity.IdentityMap(uid_key=b"t" * 32), inventory.mark_duplicates(inventory.to_table(records))
    )
    results = []
    for image in corpus.images:
        data = (root / image.relpath).read_bytes()
        out = process.deidentify_bytes(data, ident, ProfileOptions())
        results.append((image, pydicom.dcmread(io.BytesIO(data)), pydicom.dcmread(io.BytesIO(out.data)), out))
    return {"corpus": corpus, "results": results, "identity": ident, "root": root}


def _alnum(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def _display(ds: pydicom.Dataset) -> np.ndarray:
    arr = ds.pixel_array.astype(np.float64)
    return (1 << ds.BitsStored) - 1 - arr if ds.PhotometricInterpretation == "MONOCHROME1" else arr


def read_box(ds: pydicom.Dataset, box: tuple[int, int, int, int]) -> str:
    """What Tesseract reads in ``box`` plus a margin: dark-on-light by the border, 3x, one line."""
    x0, y0, x1, y1 = box
    crop = _display(ds)[max(0, y0 - MARGIN) : y1 + MARGIN, max(0, x0 - MARGIN) : x1 + MARGIN]
    gray = (crop - crop.min()) / (float(np.ptp(crop)) or 1.0) * 255.0
    ring = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(ring) < 128:
        gray, ring = 255.0 - gray, 255.0 - ring
    gray = np.clip(gray / max(float(np.median(ring)), 1.0) * 255.0, 0, 255).astype(np.uint8)
    big = Image.fromarray(gray).resize((gray.shape[1] * 3, gray.shape[0] * 3), Image.BICUBIC)
    buffer = io.BytesIO()
    Image.fromarray(np.pad(np.asarray(big), 30, constant_values=255)).save(buffer, format="PNG")
    run = subprocess.run(
        ["tesseract", "stdin", "stdout", "--psm", "7"], input=buffer.getvalue(), capture_output=True, check=True
    )
    return _alnum(run.stdout.decode("utf-8", "replace"))


def _phi_tokens(image) -> list[str]:
    return [t for t in (_alnum(t) for t in image.pixel_phi_tokens) if len(t) >= 4]


def test_corpus_covers_every_syntax_with_phi_and_both_photometrics(cleaned):
    with_phi = [image for image, *_ in cleaned["results"] if image.pixel_phi_tokens]
    assert {image.transfer_syntax for image in with_phi} == set(SYNTAXES)
    assert {image.photometric for image in with_phi} == {"MONOCHROME1", "MONOCHROME2"}
    assert any(not image.burned_in for image, *_ in cleaned["results"])


def test_ocr_finds_no_planted_phi_token_in_any_output(cleaned):
    seen_in_input = leaked = total = 0
    for image, source, output, _ in cleaned["results"]:
        for planted in (p for p in image.burned_in if p.kind == PHI):
            tokens = [t for t in (_alnum(t) for t in planted.tokens) if len(t) >= 4]
            if not tokens:
                continue
            before, after = read_box(source, planted.box), read_box(output, planted.box)
            total += len(tokens)
            seen_in_input += sum(token in before for token in tokens)
            found = [token for token in tokens if token in after]
            leaked += len(found)
            assert not found, (image.transfer_syntax, planted.kind)
    assert total >= 20
    assert seen_in_input >= 0.7 * total, "the OCR check cannot read the planted text in the inputs"
    assert leaked == 0


def test_markers_stay_readable(cleaned):
    kept = total = 0
    for image, source, output, _ in cleaned["results"]:
        for planted in (p for p in image.burned_in if p.kind == MARKER):
            x0, y0, x1, y1 = planted.box
            total += 1
            kept += np.array_equal(source.pixel_array[y0:y1, x0:x1], output.pixel_array[y0:y1, x0:x1])
    assert total >= 10
    assert kept >= 0.95 * total, f"{kept} of {total} markers kept"


def test_images_without_findings_keep_their_pixel_bytes(cleaned):
    untouched = 0
    for image, source, output, result in cleaned["results"]:
        if result.pixels.action == "untouched":
            untouched += 1
            assert output.PixelData == sanitised_pixel_data(source)  # codestream comments removed
            assert output.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
            codes = {item.CodeValue for item in output.DeidentificationMethodCodeSequence}
            assert CLEAN_PIXEL_DATA.value not in codes
        if not image.burned_in:  # candidates may be found (and flagged), never blanked
            assert result.pixels.action == "untouched" and result.pixels.count("text") == 0
    assert untouched >= 3


def _near(planted: tuple[int, int, int, int], box: tuple[int, int, int, int]) -> bool:
    reach = max(8, planted[3] - planted[1])
    x0, y0, x1, y1 = planted[0] - reach, planted[1] - reach, planted[2] + reach, planted[3] + reach
    return x0 < box[2] and box[0] < x1 and y0 < box[3] and box[1] < y1


def test_cleaned_images_change_only_inside_text_boxes_and_only_to_black(cleaned):
    cleaned_count = {"MONOCHROME1": 0, "MONOCHROME2": 0}
    for image, source, output, result in cleaned["results"]:
        if result.pixels.action != "cleaned":
            continue
        cleaned_count[image.photometric] += 1
        before, after = source.pixel_array, output.pixel_array
        changed = before != after
        redacted = np.zeros_like(changed)
        for x0, y0, x1, y1 in result.pixels.boxes:
            redacted[y0:y1, x0:x1] = True
            # every blanked rectangle touches planted text (a ruler beside it, the strip between two
            # backing boxes, may be taken for part of the same block)
            assert any(_near(p.box, (x0, y0, x1, y1)) for p in image.burned_in), "blanked far from any text"
        assert changed.any()
        assert not (changed & ~redacted).any(), "pixels changed outside the redacted boxes"
        assert changed.sum() < 0.1 * changed.size
        black = (1 << int(source.BitsStored)) - 1 if image.photometric == "MONOCHROME1" else 0
        assert (after[changed] == black).all(), image.photometric
        assert output.BurnedInAnnotation == "NO"
        codes = [item.CodeValue for item in output.DeidentificationMethodCodeSequence]
        assert codes.count(CLEAN_PIXEL_DATA.value) == 1
        syntax = image.transfer_syntax
        if syntax in LOSSY_SYNTAXES:
            assert output.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert output.LossyImageCompression == "01" and output.LossyImageCompressionMethod
        else:
            assert output.file_meta.TransferSyntaxUID == syntax
            assert output.LossyImageCompression == "00"
    assert min(cleaned_count.values()) >= 1, cleaned_count


def test_cleaned_outputs_are_valid_dicom(cleaned, tmp_path):
    """dcmdump reads every cleaned syntax; dciodvfy finds no error the input did not have."""
    checked = set()
    for image, _, output, result in cleaned["results"]:
        if result.pixels.action != "cleaned" or image.transfer_syntax in checked:
            continue
        checked.add(image.transfer_syntax)
        path = tmp_path / "out.dcm"
        output.save_as(path, enforce_file_format=True)
        run = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True, text=True)
        assert run.returncode == 0 and "E:" not in run.stderr, (image.transfer_syntax, run.stderr)
        new = new_messages(cleaned["root"] / image.relpath, path, tmp_path)
        assert not new, (image.transfer_syntax, new)
    assert len(checked) >= 6


def test_audit_counts_regions_and_never_carries_text(cleaned, tmp_path):
    image, *_ = next(r for r in cleaned["results"] if r[3].pixels.action == "cleaned")
    root = cleaned["root"]
    audit, _ = process.process_file(
        Location(str(root)), Location(str(tmp_path)), 0, image.relpath, cleaned["identity"], ProfileOptions()
    )
    assert audit["status"] == "written" and audit["pixel_action"] == "cleaned"
    assert audit["pixel_regions_found"] == audit["pixel_regions_kept"] + audit["pixel_regions_redacted"]
    assert audit["pixel_regions_redacted"] >= 1 and audit["pixel_seconds"] > 0
    assert set(audit) == set(AUDIT_SCHEMA.names)
    flat = _audit_text([audit])
    for token in _phi_tokens(image):
        assert token not in flat


def _audit_text(rows: list[dict]) -> str:
    """The audit's text columns (numbers, hex ids and pids can match a 4-digit token by chance)."""
    names = [f.name for f in AUDIT_SCHEMA if pa.types.is_string(f.type) and f.name not in ("dicom_id", "worker")]
    return _alnum(" ".join(str(row[name]) for row in rows for name in names))


def _first(cleaned, predicate):
    return next(r for r in cleaned["results"] if predicate(r))


def test_undecodable_pixels_are_quarantined(cleaned, tmp_path):
    image, *_ = _first(cleaned, lambda r: r[0].transfer_syntax == pydicom.uid.JPEG2000Lossless)
    ds = pydicom.dcmread(cleaned["root"] / image.relpath)
    frames = pydicom.encaps.generate_fragments(ds.PixelData)
    first = next(frames)
    ds.PixelData = pydicom.encaps.encapsulate([first[:40] + b"\x00" * (len(first) - 40)])
    path = tmp_path / "broken.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(QuarantineError) as caught:
        process.deidentify_bytes(path.read_bytes(), cleaned["identity"], ProfileOptions())
    assert caught.value.reason == "undecodable_pixels"


def test_strict_mode_blanks_markers_too_and_disabled_keeps_bytes(cleaned):
    image, source, *_ = _first(cleaned, lambda r: any(p.kind == MARKER for p in r[0].burned_in))
    data = (cleaned["root"] / image.relpath).read_bytes()
    strict = process.deidentify_bytes(data, cleaned["identity"], ProfileOptions(pixels=PixelOptions(strict=True)))
    assert strict.pixels.rule == "strict" and strict.pixels.regions_kept == 0
    out = pydicom.dcmread(io.BytesIO(strict.data))
    marker = next(p for p in image.burned_in if p.kind == MARKER)
    x0, y0, x1, y1 = marker.box
    assert not np.array_equal(out.pixel_array[y0:y1, x0:x1], source.pixel_array[y0:y1, x0:x1])
    off = process.deidentify_bytes(data, cleaned["identity"], ProfileOptions(pixels=PixelOptions(enabled=False)))
    assert off.pixels.action == "disabled"
    assert pydicom.dcmread(io.BytesIO(off.data)).PixelData == sanitised_pixel_data(source)


def test_known_region_rule_blanks_its_rectangle_whatever_ocr_says(cleaned):
    image, source, *_ = _first(cleaned, lambda r: not r[0].burned_in)
    rule = RegionRule(name="vendor-banner", regions=((0, 0, 100, 20),), manufacturer=f"^{source.Manufacturer}$")
    other = RegionRule(name="other-vendor", regions=((0, 0, SIZE, SIZE),), manufacturer="^NoSuchVendor$")
    options = ProfileOptions(pixels=PixelOptions(rules=(other, rule)))
    result = process.deidentify_bytes((cleaned["root"] / image.relpath).read_bytes(), cleaned["identity"], options)
    assert result.pixels.rule == "vendor-banner" and result.pixels.action == "cleaned"
    out = pydicom.dcmread(io.BytesIO(result.data)).pixel_array
    black = pixels.photometric_black(source)
    assert (out[:20, :100] == black).all()
    assert np.array_equal(out[20:], source.pixel_array[20:])


def test_pixel_options_come_from_the_config_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        f'input = "{tmp_path / "a"}"\noutput = "{tmp_path / "b"}"\nprivate = "{tmp_path / "c"}"\n'
        "[pixels]\nstrict = true\nallowed = ['L', 'R', 'Portable']\n"
        "[[pixels.rules]]\nname = 'banner'\nmanufacturer = 'ACME'\nregions = [[0, 0, 300, 40]]\n"
    )
    config = build_config(read_config_file(str(path)), {})
    options = config.profile.pixels
    assert options.strict and options.allowed == frozenset({"L", "R", "PORTABLE"})
    assert options.rule_for("ACME Medical", "X1", 10, 10).name == "banner"
    assert options.rule_for("Other", "X1", 10, 10) is None
    with pytest.raises(ConfigError, match=r"unknown key 'pixels.strikt' \(did you mean 'strict'\?\)"):
        build_config({"pixels": {"strikt": True}}, {})
    with pytest.raises(ConfigError, match=r"key 'pixels.rules\[0\].regions\[0\]': expected a list of 4 integers"):
        build_config({"pixels": {"rules": [{"name": "x", "regions": [[0, 0, 5]]}]}}, {})


def test_allow_list_keeps_markers_and_arrows_only():
    options = PixelOptions()
    for word in ("L", "r", "PORTABLE", "Semi-Erect", "'AP'", "->", "<--", "^"):
        assert options.is_allowed(word), word
    for word in ("DOE", "12345678", "03/14/1957", "L1234", "PORTABLE1"):
        assert not options.is_allowed(word), word


def test_monochrome1_black_is_its_largest_value():
    ds = pydicom.Dataset()
    ds.BitsStored, ds.PixelRepresentation = 12, 0
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert pixels.photometric_black(ds) == 4095
    ds.PhotometricInterpretation = "MONOCHROME2"
    assert pixels.photometric_black(ds) == 0
    ds.PixelRepresentation = 1
    assert pixels.photometric_black(ds) == -2048


def test_images_without_text_are_never_blanked(tmp_path):
    """The screen may flag strokes in a text-free film; nothing is blanked without evidence."""
    corpus = synthesize(str(tmp_path), patients=3, seed=2, rows=SIZE, columns=SIZE)
    for image in corpus.images:
        result = pixels.clean(pydicom.dcmread(Path(corpus.root) / image.relpath), PixelOptions())
        assert result.array is None and result.report.count("text") == 0, image.transfer_syntax
        assert all(r.kind in ("marker", "flagged", "left") for r in result.report.regions)


def test_noise_read_as_words_is_no_evidence_of_text(corpus):
    """test_pipeline's 128x96 films (no text): a dark blob in a lung, read in the other
    polarity, is film noise that the OCR crop stretches to full contrast; Tesseract read
    a three-character word there at 74% confidence and the blob was blanked as text.
    Whatever a region's montage neighbours, no word read in either polarity is evidence.
    """
    for image in corpus.images:
        ds = pydicom.dcmread(Path(corpus.root) / image.relpath)
        arr = pixels.decode(ds)
        window = cleaning._window_width(ds)
        regions = [r for r in pixels.detect(arr, window) if not pixels.is_small(r)]
        span = detection.stroke_span(arr, window)
        both = regions + [dataclasses.replace(r, bright=not r.bright) for r in regions]
        for region, words in zip(both, pixels.read_regions(arr, both, PixelOptions(), span), strict=True):
            assert not any(pixels.is_evidence(w) for w in words), (image.relpath, region)
        result = pixels.clean(ds, PixelOptions())
        assert result.array is None and result.report.count("text") == 0, image.relpath


def test_text_free_synthetic_films_never_reach_ocr(tmp_path, monkeypatch):
    """The screen alone clears a text-free film: no Tesseract, no text detector, no flag.

    At the generator's default 256 pixels the anatomy is at the top-hat's scale: noise
    spikes on rib ridges and lung edges, and the body's fall-off at the film's top and
    bottom edge, reached the glyph contrast in one or two pixels of a component (issue 11:
    ~2 Tesseract calls and a flag per film). A stroke is strong along its length.
    """
    calls = {"tesseract": 0, "detector": 0}

    def count(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(ocr, "tesseract_tsv", count("tesseract", ocr.tesseract_tsv))
    monkeypatch.setattr(textdet, "probability_maps", count("detector", textdet.probability_maps))
    corpus = synthesize(str(tmp_path), patients=4, seed=1, rows=256, columns=256)
    assert len(corpus.images) >= 10
    flagged = 0
    for image in corpus.images:
        result = pixels.clean(pydicom.dcmread(Path(corpus.root) / image.relpath), PixelOptions())
        assert result.array is None
        flagged += result.report.count("flagged")
    assert calls == {"tesseract": 0, "detector": 0}
    assert flagged == 0


def _transcode_with_gdcm(source: Path, target: Path, syntax_name: str) -> None:
    """Re-encode with GDCM (python-gdcm): the JPEG syntaxes pydicom cannot write."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax_name)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()


def _as_jpeg_baseline(source: Path, target: Path) -> None:
    """An 8-bit JPEG baseline copy (Pillow's encoder), as lossy archives store CXRs."""
    ds = pydicom.dcmread(source)
    arr8 = (ds.pixel_array >> (int(ds.BitsStored) - 8)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr8).save(buffer, format="JPEG", quality=92)
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.WindowCenter, ds.WindowWidth = "128", "256"
    ds.PixelData = pydicom.encaps.encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.save_as(target, enforce_file_format=True)


@pytest.mark.parametrize("syntax", ["JPEGLosslessProcess14_1", "baseline"])
def test_jpeg_family_inputs_are_cleaned_too(cleaned, tmp_path, syntax):
    """JPEG lossless SV1 goes back lossless (Explicit VR LE); baseline keeps its lossy history."""
    image, *_ = _first(
        cleaned,
        lambda r: r[0].transfer_syntax == pydicom.uid.ExplicitVRLittleEndian and len(_phi_tokens(r[0])) >= 2,
    )
    target = tmp_path / "jpeg.dcm"
    if syntax == "baseline":
        _as_jpeg_baseline(cleaned["root"] / image.relpath, target)
    else:
        _transcode_with_gdcm(cleaned["root"] / image.relpath, target, syntax)
    jpeg = pydicom.dcmread(target)
    result = process.deidentify_bytes(target.read_bytes(), cleaned["identity"], ProfileOptions())
    assert result.pixels.action == "cleaned"
    output = pydicom.dcmread(io.BytesIO(result.data))
    assert output.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    if syntax == "baseline":
        assert output.LossyImageCompression == "01" and output.LossyImageCompressionMethod == "ISO_10918_1"
    else:
        assert output.LossyImageCompression == "00"
    for planted in (p for p in image.burned_in if p.kind == PHI):
        after = read_box(output, planted.box)
        assert not [t for t in (_alnum(t) for t in planted.tokens) if len(t) >= 4 and t in after]
    changed = jpeg.pixel_array != output.pixel_array
    redacted = np.zeros_like(changed)
    for x0, y0, x1, y1 in result.pixels.boxes:
        redacted[y0:y1, x0:x1] = True
    assert not (changed & ~redacted).any()


BUNDLED = [
    "JPGExtended.dcm",  # JPEG extended, 12 bit
    "JPEG2000.dcm",  # JPEG 2000 (lossy syntax)
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEGLSNearLossless_16.dcm",
    "MR_small_RLE.dcm",
]


@pytest.mark.parametrize("name", BUNDLED)
def test_pydicoms_compressed_test_files_decode_and_store(name):
    """Every decoder is present; a redacted copy goes back lossless or to Explicit VR LE."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file(name))
    syntax = str(ds.file_meta.TransferSyntaxUID)
    arr = pixels.decode(ds).copy()
    pixels.detect(arr)
    arr[:4, :4] = pixels.photometric_black(ds)
    pixels.store(ds, arr, syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    again = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    assert np.array_equal(again.pixel_array, arr)
    if syntax in pixels.REENCODE_IN_PLACE:
        assert again.file_meta.TransferSyntaxUID == syntax
    else:
        assert again.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert again.LossyImageCompression == "01"


def test_synth_text_is_deterministic_and_leaves_headers_alone(tmp_path):
    a = synthesize(str(tmp_path / "a"), patients=3, seed=9, rows=256, columns=256, burned_in_text=True)
    b = synthesize(str(tmp_path / "b"), patients=3, seed=9, rows=256, columns=256, burned_in_text=True)
    plain = synthesize(str(tmp_path / "c"), patients=3, seed=9, rows=256, columns=256)
    assert [i.burned_in for i in a.images] == [i.burned_in for i in b.images]
    for x, y in zip(a.images, b.images, strict=True):
        assert (tmp_path / "a" / x.relpath).read_bytes() == (tmp_path / "b" / y.relpath).read_bytes()
    assert [i.phi for i in a.images] == [i.phi for i in plain.images]
    assert all(not i.burned_in for i in plain.images)
    kinds = {p.kind for i in a.images for p in i.burned_in}
    assert {PHI, MARKER} <= kinds
    for image in a.images:
        ds = pydicom.dcmread(tmp_path / "a" / image.relpath)
        shown = _display(ds) / ((1 << ds.BitsStored) - 1)
        text = any(p.kind != STRUCTURE for p in image.burned_in)
        assert ds.BurnedInAnnotation == ("YES" if text else "NO")
        for planted in image.burned_in:
            x0, y0, x1, y1 = planted.box
            box = shown[y0:y1, x0:x1]
            assert box.max() > 0.95 or box.min() < 0.05, planted.kind  # painted white or black


def test_half_the_images_carry_phi_text(tmp_path):
    corpus = synthesize(str(tmp_path), patients=12, seed=3, rows=256, columns=256, burned_in_text=True)
    share = sum(bool(i.pixel_phi_tokens) for i in corpus.images) / len(corpus.images)
    assert 0.3 <= share <= 0.7
    assert any(not i.burned_in for i in corpus.images)


@pytest.mark.cluster
def test_pipeline_cleans_pixels_and_audits_them(client, cleaned, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    from cxr_dask import pipeline
    from cxr_dask.config import RunConfig

    raw = tmp_path / "raw"
    shutil.copytree(cleaned["root"], raw)
    config = RunConfig(str(raw), str(tmp_path / "out"), str(tmp_path / "private"), progress=False)
    summary = pipeline.run(client, config)
    assert summary.written == len(cleaned["corpus"].images) and summary.quarantined == 0
    (run_folder,) = (tmp_path / "private" / "runs").iterdir()
    audit = pq.read_table(run_folder / "audit.parquet").to_pylist()
    actions = [row["pixel_action"] for row in audit]
    expected = [r[3].pixels.action for r in cleaned["results"]]
    assert sorted(actions) == sorted(expected) and "cleaned" in actions and "untouched" in actions
    assert summary.pixels_cleaned == actions.count("cleaned")
    assert f"burned-in text cleaned in {actions.count('cleaned')})" in "\n".join(summary.lines())
    assert sum(row["pixel_regions_redacted"] for row in audit) == sum(
        r[3].pixels.regions_redacted for r in cleaned["results"]
    )
    flat = _audit_text(audit)
    for image in cleaned["corpus"].images:
        for token in _phi_tokens(image):
            assert token not in flat


def test_missing_tesseract_quarantines_images_with_candidates(cleaned, monkeypatch):
    image, *_ = _first(cleaned, lambda r: r[3].pixels.regions_found > 0)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(QuarantineError) as caught:
        process.deidentify_bytes((cleaned["root"] / image.relpath).read_bytes(), cleaned["identity"], ProfileOptions())
    assert caught.value.reason == "ocr_unavailable"


def test_a_marker_on_the_same_line_as_a_name_survives_its_redaction():
    """Word-level decisions: the allow-listed word keeps its pixels, the rest of the line goes."""
    from PIL import ImageDraw, ImageFont

    from cxr_dask.testing.synth_text import available_fonts

    rng = np.random.default_rng(0)
    arr = (300 + rng.normal(0, 20, size=(320, 480))).clip(0, 4095).astype(np.uint16)
    canvas = Image.new("L", (480, 320), 0)
    font = ImageFont.truetype(available_fonts()[0], 28)
    ImageDraw.Draw(canvas).text((20, 20), "PORTABLE  HOLLOWAY, AGATHA", fill=255, font=font)
    ink = np.asarray(canvas) > 128
    arr[ink] = 4095
    marker_right = 20 + int(font.getlength("PORTABLE"))
    name_left = 20 + int(font.getlength("PORTABLE  "))
    options = PixelOptions()
    (region,) = pixels.detect(arr)
    (words,) = pixels.read_regions(arr, [region], options)
    decision = pixels.decide(region, words, options, arr.shape)
    assert decision.kind == "text" and len(decision.keep) == 1
    work = arr.copy()
    pixels.redact_boxes(work, decision.blank, decision.keep, black=0)
    assert np.array_equal(work[:, :marker_right][ink[:, :marker_right]], arr[:, :marker_right][ink[:, :marker_right]])
    assert (work[:, name_left:][ink[:, name_left:]] == 0).all()


def test_native_pixels_are_a_view_equal_to_pydicoms_decode(cleaned):
    native = [r for r in cleaned["results"] if r[0].transfer_syntax in pixels.NATIVE_LITTLE_ENDIAN]
    assert {r[0].transfer_syntax for r in native} == set(pixels.NATIVE_LITTLE_ENDIAN)
    for image, source, *_ in native:
        view = pixels.decode(source)
        assert not view.flags.writeable and view.base is not None, image.transfer_syntax
        reference = pydicom.dcmread(cleaned["root"] / image.relpath).pixel_array
        assert view.dtype == reference.dtype and np.array_equal(view, reference), image.transfer_syntax


def test_native_pixels_with_unused_high_bits_set_go_through_pydicom(cleaned):
    image, *_ = _first(cleaned, lambda r: r[0].transfer_syntax == pydicom.uid.ExplicitVRLittleEndian)
    ds = pydicom.dcmread(cleaned["root"] / image.relpath)
    assert int(ds.BitsAllocated) == 16
    ds.BitsStored, ds.HighBit = 12, 11
    raw = np.frombuffer(ds.PixelData, dtype="<u2") & 0x0FFF
    ds.PixelData = raw.tobytes()
    assert pixels.native_view(ds) is not None
    raw[7] |= 1 << 15  # an overlay bit left in the high bits: not part of the stored value
    ds.PixelData = raw.tobytes()
    assert pixels.native_view(ds) is None
    decoded = pixels.decode(ds)
    assert decoded.flat[7] == raw[7] & ((1 << int(ds.BitsStored)) - 1)
    big = pydicom.dcmread(cleaned["root"] / image.relpath)
    big.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.2"
    assert pixels.native_view(big) is None


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_fast_pooling_and_top_hat_equal_the_reference_computation(dtype):
    from scipy import ndimage

    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    for shape, factor, size in [((61, 47), 3, 11), ((30, 31), 1, 5), ((100, 90), 4, 11), ((9, 13), 2, 13)]:
        arr = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        high, low = morphology._pool(arr, factor)
        rows, columns = (shape[0] // factor) * factor, (shape[1] // factor) * factor
        blocks = arr[:rows, :columns].reshape(rows // factor, factor, columns // factor, factor)
        assert np.array_equal(high, blocks.max(axis=(1, 3))) and np.array_equal(low, blocks.min(axis=(1, 3)))
        assert np.array_equal(morphology._opening(arr, size), ndimage.grey_opening(arr, size=size, mode="nearest"))
        assert np.array_equal(morphology._closing(arr, size), ndimage.grey_closing(arr, size=size, mode="nearest"))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_counted_percentiles_and_table_lookups_are_numpy_s_bit_for_bit(dtype):
    """Percentiles of integers counted instead of sorted (``morphology.value_percentiles``)
    are ``np.percentile``'s, bit for bit, in the values' dtype and in float32, on crops
    (views) of wide, narrow and one-valued ranges, small and large; the 8-bit table
    lookup is the table indexed."""
    rng = np.random.default_rng(11)
    info = np.iinfo(dtype)
    crops = [rng.integers(info.min, info.max, (300, 400), dtype=dtype, endpoint=True)[7:290, 3:391]]
    for _ in range(300):
        low = int(rng.integers(info.min, info.max))
        high = min(info.max, low + int(rng.integers(0, 80)))
        shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
        crops.append(rng.integers(low, high, shape, dtype=dtype, endpoint=True))
    spread = rng.normal(0, 900, (500, 600)) + (info.min + info.max) / 2
    crops.append(np.clip(spread, info.min, info.max).astype(dtype)[20:480, 10:590])
    for crop in crops:
        for percentiles in [(0.5, 99.5), (1, 99), (0, 50, 100), 99.5, 1]:  # (a number: numpy's scalar)
            for as_type in (dtype, np.float32):
                want = np.percentile(crop.astype(as_type), percentiles)
                got = morphology.value_percentiles(crop, percentiles, as_type)
                assert type(got) is type(want) and np.array_equal(got, want), (crop.shape, percentiles, as_type)
    floats = rng.normal(0, 1, (50, 60)).astype(np.float32)  # other types are sorted as numpy does
    assert np.array_equal(morphology.value_percentiles(floats, (1, 99)), np.percentile(floats, (1, 99)))
    crop = crops[0]
    first = int(crop.min())
    table = rng.integers(0, 256, int(crop.max()) - first + 1).astype(np.uint8)
    assert np.array_equal(morphology.looked_up(crop, table, first), table[crop.astype(np.int64) - first])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int8])
def test_the_recogniser_s_stroke_test_and_stretch_count_integers_bit_for_bit(dtype):
    """The recogniser's crop tests (``textrec.has_strokes``: the neighbours' median step)
    and its 8-bit stretch take stored values as integers, counted: numpy's float32
    median and per-pixel stretch, bit for bit, on crops (views) of narrow, wide and
    one-valued ranges, odd and even widths."""
    from scipy import ndimage

    from cxr_dask.deid.pixels import textrec

    rng = np.random.default_rng(17)
    info = np.iinfo(dtype)
    for k in range(200):
        low = int(rng.integers(info.min, info.max))
        high = min(info.max, low + int(rng.integers(0, 300 if k % 2 else 70000)))
        shape = (int(rng.integers(2, 50)), int(rng.integers(3, 80)))
        whole = rng.integers(low, high, shape, dtype=dtype, endpoint=True)
        crop = whole[1:, 1:] if k % 3 == 0 else whole
        floats = crop.astype(np.float32)
        step = float(np.median(np.abs(np.diff(floats, axis=1))))
        assert textrec._median_step(crop) == step, (crop.shape, k)
        smooth_low, smooth_high = np.percentile(ndimage.uniform_filter(floats, 3), (1, 99))
        sigma = step * 1.4826 / np.sqrt(2.0)
        assert textrec.has_strokes(crop) == (float(smooth_high - smooth_low) > textrec.MIN_STROKE_SNR * sigma)
        bottom, top = np.percentile(floats, (0.5, 99.5))
        want = (np.clip((floats - bottom) / max(float(top - bottom), 1.0), 0.0, 1.0) * 255.0).astype(np.uint8)
        assert np.array_equal(textrec._stretched(crop), want), (crop.shape, k)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_the_top_hat_of_stored_values_is_the_top_hat_of_their_floats(dtype):
    """``morphology.top_hat`` opens unsigned values as they are (dark strokes counted down
    from the maximum): the same strokes, bit for bit, as the float32 crop, negated for
    dark strokes, less its opening (``stroke_values``: in the values' own type); on
    crops (views) of even and odd windows, flat ones and ones with long runs of one
    value."""
    rng = np.random.default_rng(13)
    info = np.iinfo(dtype)
    for k in range(120):
        rows, columns = (int(n) for n in rng.integers(1, 70, 2))
        whole = rng.integers(info.min, info.max, (rows + 6, columns + 9), dtype=dtype, endpoint=True)
        if k % 3 == 0:
            whole = np.where(whole > 0, info.max, info.min).astype(dtype)
        crop = whole[3 : 3 + rows, 4 : 4 + columns]
        size = int(rng.integers(3, 40))
        for bright in (True, False):
            floats = crop.astype(np.float32) if bright else -crop.astype(np.float32)
            want = floats - morphology._crop_opening(floats, size)
            got = morphology.top_hat(crop, size, bright)
            assert got.dtype == np.float32 and np.array_equal(got, want), (crop.shape, size, bright)
            values = morphology.stroke_values(crop, size, bright)
            assert values.dtype == (np.float32 if dtype == np.int16 else dtype) and np.array_equal(values, want)


def test_jpeg2000_preview_screen_skips_the_full_decode_only_without_text(tmp_path):
    """Half-resolution JPEG 2000 screen: every image the full detector flags is flagged by it too."""
    from pydicom.uid import JPEG2000Lossless

    corpus = synthesize(
        str(tmp_path),
        patients=2,
        seed=8,
        rows=2048,
        columns=1024,
        transfer_syntaxes=(JPEG2000Lossless,),
        burned_in_text=True,
    )
    screened = skipped = 0
    for image in corpus.images:
        ds = pydicom.dcmread(Path(corpus.root) / image.relpath)
        preview = pixels.j2k_preview(ds)
        assert preview is not None and preview[1] == 1 and preview[0].shape == (1024, 512)
        candidates = pixels.preview_has_candidates(*preview, 2048, 1024)
        text = [p for p in image.burned_in if p.kind != STRUCTURE]
        full = pixels.detect(pixels.decode(ds))
        assert candidates or not full, image.relpath  # the screen never drops what the detector finds
        assert candidates or not text, image.relpath
        result = pixels.clean(pydicom.dcmread(Path(corpus.root) / image.relpath), PixelOptions(jpeg2000_preview=True))
        default = pixels.clean(pydicom.dcmread(Path(corpus.root) / image.relpath), PixelOptions())
        assert "screen" not in default.report.timings and "decode" in default.report.timings  # opt-in only
        screened += "screen" in result.report.timings
        if not candidates:
            skipped += 1
            assert result.report.action == "untouched" and "decode" not in result.report.timings
    # the screen now uses the detector's quarter-range contrast halved: it skips less often
    assert screened == len(corpus.images) and 0 <= skipped <= len(corpus.images)


def test_jpeg2000_screen_sees_small_text_the_detector_sees(tmp_path):
    """12-18 pixel text painted black and white into a plain image: flagged at half resolution too."""
    from PIL import ImageDraw, ImageFont
    from pydicom.uid import JPEG2000Lossless

    corpus = synthesize(str(tmp_path), patients=1, seed=3, rows=2048, columns=1024)
    source = Path(corpus.root) / corpus.images[0].relpath
    plain = pydicom.dcmread(source).pixel_array
    top = (1 << int(pydicom.dcmread(source).BitsStored)) - 1
    seen = 0
    for font, size, value, (x0, y0) in [
        ("liberation2/LiberationSans-Regular.ttf", 18, 0, (300, 1000)),
        ("dejavu/DejaVuSans.ttf", 12, top, (40, 60)),
        ("dejavu/DejaVuSans.ttf", 12, 0, (300, 1000)),
        ("liberation2/LiberationSans-Regular.ttf", 18, top, (100, 1900)),
    ]:
        mask = Image.new("L", (600, 40), 0)
        ImageDraw.Draw(mask).text(
            (2, 2),
            "SMITH JOHN 12/03/1961",
            fill=255,
            font=ImageFont.truetype(f"/usr/share/fonts/truetype/{font}", size),
        )
        alpha = np.asarray(mask, dtype=np.float32) / 255
        arr = plain.copy()
        patch = arr[y0 : y0 + 40, x0 : x0 + 600].astype(np.float32)
        arr[y0 : y0 + 40, x0 : x0 + 600] = np.round(patch * (1 - alpha) + value * alpha).astype(arr.dtype)
        ds = pydicom.dcmread(source)
        ds.compress(JPEG2000Lossless, arr, encoding_plugin="pylibjpeg", generate_instance_uid=False)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        ds = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
        if pixels.detect(pixels.decode(ds)):
            seen += 1
            assert pixels.preview_has_candidates(*pixels.j2k_preview(ds), 2048, 1024), (font, size, value)
    assert seen >= 2  # the painted text is there for the full-resolution detector


def test_screen_counts_strokes_the_detector_rejects_by_shape():
    """The screen must be a superset: a line merged into one wide component still counts there."""
    arr = np.full((600, 600), 100, dtype=np.uint16)
    arr[300:304, 100:400] = 4000  # wider than 12 times its height: a ruler bar to the detector
    assert pixels.detect(arr) == []
    assert detection._glyph_boxes(arr, 1, pixels.PREVIEW_SENSITIVITY)


@pytest.mark.parametrize("size", [3, 4, 7, 12, 40])
def test_ocr_crop_opening_equals_scipy_grey_opening(size):
    """The OCR crops' background removal gives scipy's values, even windows and tiny crops too."""
    from scipy import ndimage

    rng = np.random.default_rng(size)
    for shape in [(1, 1), (2, 50), (17, 9), (45, 300)]:
        crop = rng.normal(0.0, 1000.0, shape).astype(np.float32)
        for sign in (1.0, -1.0):
            got = morphology._crop_opening(sign * crop, size)
            assert np.array_equal(got, ndimage.grey_opening(sign * crop, size=(size, size)))
