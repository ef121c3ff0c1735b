"""Colour, palette and multi-frame images: burned-in text found and blanked in every
channel and frame, not quarantined.

Real files from registry packages (deid-data's colour ultrasound with a PHI banner,
pydicom's palette ultrasound and JPEG colour bars) and synthetic ones (coloured text
whose luminance is its ground's, so only a colour plane shows it) go through pass 2
(``process.deidentify_bytes``, no cluster). Text goes; a text-free colour image keeps
its pixel bytes; a cleaned one is valid RGB (or keeps its palette); photometric
interpretations the step cannot read are still ``unsupported_pixels``.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import deid_data
import numpy as np
import pydicom
import pytest
from dciodvfy import new_messages
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from cxr_dask import identity, inventory, process, review
from cxr_dask.deid import pixels
from cxr_dask.deid.containers import sanitised_pixel_data
from cxr_dask.deid.pixels import colour, detection
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.deid.rules import PixelOptions
from cxr_dask.errors import QuarantineError
from cxr_dask.storage import Location, list_files

DEID_DATA = Path(deid_data.__file__).parent / "data"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
GROUND = 120  # mid-grey, as ultrasound tissue
#: Colours of GROUND's luminance (Rec. 601): invisible in a luminance image.
HIDDEN_GREEN = (0, 204, 0)
HIDDEN_YELLOW = (135, 135, 0)
#: What is written on the synthetic images (top left, and a second line lower right).
TEXT = ("DOE JANE 04/14/1950", "MRN 7731905")


def _ground(rows: int, columns: int, seed: int) -> np.ndarray:
    """Grey tissue, equal in R, G and B: flat GROUND with mild noise where the text goes,
    a smooth bright organ and a dark lumen in the middle (the image's range)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    organ = ((x - columns / 2) / (columns / 4)) ** 2 + ((y - rows / 2) / (rows / 5)) ** 2
    grey = GROUND + 90 * np.exp(-2 * organ**2) - 90 * np.exp(-12 * organ**2) + rng.normal(0, 2, (rows, columns))
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _write_text(rgb: np.ndarray, colours: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """``TEXT`` drawn in ``colours`` (one a line); returns where the strokes are."""
    canvas = Image.fromarray(rgb)
    strokes = Image.new("L", canvas.size, 0)
    font = ImageFont.truetype(FONT, 22)
    rows, columns = rgb.shape[:2]
    places = ((12, 10), (columns // 2, rows - 40))
    for text, place, fill in zip(TEXT, places, colours, strict=True):
        ImageDraw.Draw(canvas).text(place, text, fill=fill, font=font)
        ImageDraw.Draw(strokes).text(place, text, fill=255, font=font)
    rgb[...] = np.asarray(canvas)
    return np.asarray(strokes) > 128


def _dataset(arr: np.ndarray, photometric: str, patient: str) -> pydicom.Dataset:
    """A secondary capture holding ``arr`` (pydicom's SC_rgb.dcm, ids of ``patient``)."""
    ds = pydicom.dcmread(get_testdata_file("SC_rgb.dcm"))
    ds.set_pixel_data(arr, photometric, 8, generate_instance_uid=False)
    return _identify(ds, patient)


def _identify(ds: pydicom.Dataset, patient: str) -> pydicom.Dataset:
    ds.PatientName, ds.PatientID = f"{patient}^TEST", patient
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    return ds


def _jpeg_422(rgb: np.ndarray, patient: str) -> pydicom.Dataset:
    """``rgb`` as JPEG baseline, YCbCr with 4:2:2 chroma (YBR_FULL_422), as ultrasounds export."""
    ds = _dataset(rgb, "RGB", patient)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95, subsampling=1)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    return ds


def _clone(path: Path | str, patient: str) -> pydicom.Dataset:
    return _identify(pydicom.dcmread(path), patient)


def _cases() -> dict[str, pydicom.Dataset]:
    rows, columns = 240, 360
    hidden = _ground(rows, columns, 1)
    _write_text(hidden, (HIDDEN_GREEN, HIDDEN_YELLOW))
    yellow = _ground(rows, columns, 2)
    _write_text(yellow, ((255, 255, 0), (255, 255, 0)))
    plain = _ground(rows, columns, 3)
    plain[60:180, 100:260, 0] = 200  # a red-tinted box (a Doppler field) without text
    unknown = _dataset(_ground(32, 32, 4), "RGB", "MRN00000008")
    unknown.PhotometricInterpretation = "YBR_ICT"  # a JPEG 2000 transform in native pixels
    four = _dataset(_ground(32, 32, 5), "RGB", "MRN00000009")
    four.SamplesPerPixel, four.PhotometricInterpretation = 4, "ARGB"
    four.PixelData = np.zeros((32, 32, 4), np.uint8).tobytes()
    no_rows = _jpeg_422(_ground(32, 48, 6), "MRN00000010")
    del no_rows.Rows  # an encapsulated image: the container check does not need its size
    no_bits = _clone(get_testdata_file("OBXXXX1A.dcm"), "MRN00000011")
    del no_bits.BitsStored
    return {
        "hidden": _dataset(hidden, "RGB", "MRN00000001"),
        "yellow_jpeg": _jpeg_422(yellow, "MRN00000002"),
        "plain": _dataset(plain, "RGB", "MRN00000003"),
        "bars_jpeg": _clone(get_testdata_file("SC_rgb_dcmtk_+eb+cy+s2.dcm"), "MRN00000004"),
        "us_rgb": _clone(DEID_DATA / "ultrasounds" / "RGB_IMAGE.dcm", "MRN00000005"),
        "palette": _clone(get_testdata_file("OBXXXX1A.dcm"), "MRN00000006"),
        "bits32": _clone(get_testdata_file("SC_rgb_32bit.dcm"), "MRN00000007"),
        "ybr_ict": unknown,
        "argb": four,
        "no_rows": no_rows,
        "no_bits_stored": no_bits,
    }


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """Every case's input (a file) and its pass-2 outcome (a DeidentifiedFile or the reason)."""
    root = tmp_path_factory.mktemp("colour") / "raw"
    root.mkdir()
    cases = _cases()
    for name, ds in cases.items():
        ds.save_as(root / f"{name}.dcm", enforce_file_format=True)
    source = Location(str(root))
    records = inventory.scan_partition(((i, k, s) for i, (k, s) in enumerate(list_files(source))), source)
    ident = identity.extend(
        identity.IdentityMap(uid_key=b"c" * 32), inventory.mark_duplicates(inventory.to_table(records))
    )
    outcomes: dict[str, object] = {}
    for name in cases:
        data = (root / f"{name}.dcm").read_bytes()
        try:
            outcomes[name] = process.deidentify_bytes(data, ident, ProfileOptions(), review_material=True)
        except QuarantineError as error:
            outcomes[name] = error
    return {"root": root, "outcomes": outcomes}


def _written(colour_run, name: str) -> tuple[pydicom.Dataset, pydicom.Dataset, process.DeidentifiedFile]:
    result = colour_run["outcomes"][name]
    assert isinstance(result, process.DeidentifiedFile), (name, result)
    source = pydicom.dcmread(colour_run["root"] / f"{name}.dcm")
    return source, pydicom.dcmread(io.BytesIO(result.data)), result


def test_text_hidden_in_luminance_is_found_on_a_colour_plane_and_blanked_in_every_channel(colour_run):
    source, output, result = _written(colour_run, "hidden")
    before = source.pixel_array
    strokes = _write_text(_ground(240, 360, 1), (HIDDEN_GREEN, HIDDEN_YELLOW))
    # the case is what it claims: nothing to see in luminance, the text is on the plane
    luma = colour.luminance(before)
    assert not detection.detect(luma)
    assert np.abs(luma[strokes].astype(int) - GROUND).mean() < 15
    assert result.pixels.action == "cleaned" and result.pixels.count("text") >= 2
    after = output.pixel_array
    assert (after[strokes] == 0).all(axis=-1).mean() > 0.95, "text left in some channel"
    untouched = np.ones(strokes.shape, bool)
    for x0, y0, x1, y1 in result.pixels.boxes:
        untouched[y0:y1, x0:x1] = False
    assert untouched.mean() > 0.8 and np.array_equal(after[untouched], before[untouched])


def test_yellow_text_in_a_ybr_422_jpeg_goes_and_the_output_is_valid_rgb(colour_run, tmp_path):
    _, output, result = _written(colour_run, "yellow_jpeg")
    strokes = _write_text(_ground(240, 360, 2), ((255, 255, 0), (255, 255, 0)))
    assert result.pixels.action == "cleaned"
    assert output.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (output.PhotometricInterpretation, output.PlanarConfiguration, output.SamplesPerPixel) == ("RGB", 0, 3)
    assert output.LossyImageCompression == "01" and output.LossyImageCompressionMethod == "ISO_10918_1"
    assert output.BurnedInAnnotation == "NO"
    after = output.pixel_array
    assert (after[strokes] < 40).all(axis=-1).mean() > 0.95
    path = tmp_path / "out.dcm"
    output.save_as(path, enforce_file_format=True)
    run = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True, text=True)
    assert run.returncode == 0 and "E:" not in run.stderr, run.stderr
    assert not new_messages(colour_run["root"] / "yellow_jpeg.dcm", path, tmp_path)


@pytest.mark.parametrize("name", ["plain", "bars_jpeg"])
def test_text_free_colour_image_keeps_its_pixel_bytes(colour_run, name):
    source, output, result = _written(colour_run, name)
    assert result.pixels.action == "untouched" and result.pixels.count("text") == 0
    assert output.PixelData == sanitised_pixel_data(source)  # (JPEG's APPn and COM segments go)
    assert output.PhotometricInterpretation == source.PhotometricInterpretation
    assert output.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID


def test_deid_data_colour_ultrasound_phi_banner_is_removed(colour_run, tmp_path):
    source, output, result = _written(colour_run, "us_rgb")
    before, after = source.pixel_array, output.pixel_array
    banner = (slice(0, 55), slice(0, 890))  # name, id, date and time, clinic
    lit = before[banner].max(axis=-1) > 128
    assert lit.sum() > 1000, "the banner must carry text in the input"
    assert (after[banner][lit] == 0).all(axis=-1).mean() > 0.95
    field = (slice(120, 740), slice(60, 890))  # the scan field below it
    assert np.array_equal(before[field], after[field])
    path = tmp_path / "us.dcm"
    output.save_as(path, enforce_file_format=True)
    assert not new_messages(colour_run["root"] / "us_rgb.dcm", path, tmp_path)
    # the review shows it in colour: RGB thumbnails, colour crops
    rendered = result.review
    assert rendered is not None and rendered.rows == 768 and rendered.columns == 1024
    thumb = np.asarray(Image.open(io.BytesIO(rendered.before.data)))
    assert thumb.ndim == 3 and thumb.shape[2] == 3
    crop = next(c for c in rendered.crops if c is not None)
    assert Image.open(io.BytesIO(crop.data)).mode == "RGB"


def test_palette_ultrasound_keeps_its_palette_and_blanks_with_its_darkest_entry(colour_run, tmp_path):
    source, output, result = _written(colour_run, "palette")
    assert result.pixels.action == "cleaned"
    assert output.PhotometricInterpretation == "PALETTE COLOR"
    for keyword in ("RedPaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData"):
        assert output[keyword].value == source[keyword].value
    # (its palette has 16-bit entries: shown as 8 bits)
    rgb_before = pydicom.pixels.apply_color_lut(source.pixel_array, source) >> 8
    rgb_after = pydicom.pixels.apply_color_lut(output.pixel_array, output) >> 8
    changed = output.pixel_array != source.pixel_array
    assert changed.any() and (rgb_after[changed] == rgb_after[changed].min()).all()
    # the date and time at the top (rows 0-50, columns 560-800) are gone
    header = (slice(0, 50), slice(560, 800))
    lit = rgb_before[header].max(axis=-1) > 200
    assert lit.sum() > 100 and (rgb_after[header][lit] < 60).all(axis=-1).mean() > 0.9
    path = tmp_path / "palette.dcm"
    output.save_as(path, enforce_file_format=True)
    assert not new_messages(colour_run["root"] / "palette.dcm", path, tmp_path)
    rendered = result.review
    assert rendered is not None
    assert np.asarray(Image.open(io.BytesIO(rendered.after.data))).ndim == 3


@pytest.mark.parametrize(
    ("name", "detail"),
    [("ybr_ict", "PhotometricInterpretation"), ("argb", "SamplesPerPixel"), ("bits32", "BitsAllocated")],
)
def test_colour_the_step_cannot_read_is_still_quarantined(colour_run, name, detail):
    error = colour_run["outcomes"][name]
    assert isinstance(error, QuarantineError) and error.reason == "unsupported_pixels", error
    assert error.detail == detail


@pytest.mark.parametrize(("name", "detail"), [("no_rows", "Rows"), ("no_bits_stored", "BitsStored")])
def test_image_without_its_size_or_depth_is_bad_content_not_a_bug(colour_run, name, detail):
    """A missing Rows or BitsStored is the file's fault: quarantined with the attribute,
    never an ``internal_error`` (an exception the tool did not expect)."""
    error = colour_run["outcomes"][name]
    assert isinstance(error, QuarantineError) and error.reason == "undecodable_pixel_data", error
    assert error.detail == detail


def test_review_renders_colour_in_colour():
    """Colour source and after arrays become RGB pictures; a grey image stays grey."""
    rgb = _ground(64, 96, 6)
    rgb[10:20, 10:40] = (255, 255, 0)
    after = rgb.copy()
    after[10:20, 10:40] = 0
    from cxr_dask.deid.pixels.types import PixelReport, PixelResult, RegionRecord

    report = PixelReport(action="cleaned", regions=[RegionRecord((10, 10, 40, 20), "text", "words read")])
    rendered = review.render(PixelResult(report, after, rgb), "RGB")
    assert rendered is not None
    before = np.asarray(Image.open(io.BytesIO(rendered.before.data)))
    shown = np.asarray(Image.open(io.BytesIO(rendered.after.data)))
    assert before[14, 25, 2] < 80 < before[14, 25, 0]  # yellow: red high, blue low
    assert shown[14, 25].max() < 40  # blanked


# --------------------------------------------------------------------------- several frames


def _frames(count: int, moving: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grey frames of one loop: the organ moves, a banner is the same in every frame, and
    frame ``moving`` alone has a time in its corner. Returns the frames and where the
    banner's and the time's strokes are."""
    font = ImageFont.truetype(FONT, 22)
    stack, time_strokes = [], np.zeros((240, 360), bool)
    banner = Image.new("L", (360, 240), 0)
    ImageDraw.Draw(banner).text((12, 10), TEXT[0], fill=255, font=font)
    banner_strokes = np.asarray(banner) > 128
    for index in range(count):
        grey = _ground(240, 360, 7)[..., 0]
        grey[60:180] = np.roll(grey[60:180], 4 * index, axis=1)  # the organ moves, the banner's ground stays
        grey[banner_strokes] = 250
        if index == moving:
            clock = Image.new("L", (360, 240), 0)
            ImageDraw.Draw(clock).text((200, 200), "12:41:07", fill=255, font=font)
            time_strokes = np.asarray(clock) > 128
            grey[time_strokes] = 250
        stack.append(grey)
    return np.stack(stack), banner_strokes, time_strokes


def test_every_frame_is_cleaned_and_a_fixed_banner_is_judged_once():
    frames, banner, clock = _frames(3, moving=2)
    ds = _dataset(_ground(8, 8, 8), "RGB", "MRN00000010")
    ds.set_pixel_data(frames, "MONOCHROME2", 8, generate_instance_uid=False)
    single = _dataset(_ground(8, 8, 8), "RGB", "MRN00000011")
    single.set_pixel_data(frames[0], "MONOCHROME2", 8, generate_instance_uid=False)
    options = PixelOptions()
    result = pixels.clean(ds, options)
    alone = pixels.clean(single, options)
    assert result.array is not None and result.array.shape == frames.shape
    for index, after in enumerate(result.array):
        assert (after[banner] == 0).mean() > 0.95, index
    assert (result.array[2][clock] == 0).mean() > 0.95, "the time in one frame only"
    # the banner, the same in every frame, was read on the first frame only
    banner_regions = [r for r in result.report.regions if r.box[1] < 50]
    assert len(banner_regions) == len([r for r in alone.report.regions if r.box[1] < 50])
    # written back as three frames
    pixels.store(ds, result.array, str(ds.file_meta.TransferSyntaxUID))
    assert int(ds.NumberOfFrames) == 3 and np.array_equal(ds.pixel_array, result.array)


def test_colour_frames_are_cleaned_in_every_channel():
    rgb = _ground(240, 360, 1)
    strokes = _write_text(rgb, (HIDDEN_GREEN, HIDDEN_YELLOW))
    moved = np.roll(rgb, 3, axis=0)
    ds = _dataset(np.stack([rgb, moved]), "RGB", "MRN00000012")
    result = pixels.clean(ds, PixelOptions())
    assert result.array is not None and result.array.shape == (2, 240, 360, 3)
    assert (result.array[0][strokes] == 0).all(axis=-1).mean() > 0.95
    assert (result.array[1][np.roll(strokes, 3, axis=0)] == 0).all(axis=-1).mean() > 0.95


def test_frames_beyond_the_bound_are_quarantined_with_the_reason():
    frames, _, _ = _frames(3, moving=0)
    ds = _dataset(_ground(8, 8, 8), "RGB", "MRN00000013")
    ds.set_pixel_data(frames, "MONOCHROME2", 8, generate_instance_uid=False)
    with pytest.raises(QuarantineError) as caught:
        pixels.clean(ds, PixelOptions(max_frames=2))
    assert (caught.value.reason, caught.value.detail) == ("unsupported_pixels", "NumberOfFrames")
    cine = pydicom.dcmread(DEID_DATA / "ultrasounds" / "ultrasound-multiframe.dcm")  # 30 frames
    with pytest.raises(QuarantineError) as caught:
        pixels.clean(cine, PixelOptions())
    assert (caught.value.reason, caught.value.detail) == ("unsupported_pixels", "NumberOfFrames")
