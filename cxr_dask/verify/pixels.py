"""Verify's own look at pixels: a text-stroke screen, a fail-closed OCR call, the containers.

Independent of ``cxr_dask.deid.pixels``: every frame of every output image is screened
whatever its header says was done to it, and only the regions the screen flags are read
(one Tesseract call per flagged image, on a mosaic of its regions; a multi-frame image's
regions in pages of :data:`REGIONS_PER_PAGE`), which keeps the check cheap on a large
dataset. The call itself is ``cxr_dask.tools``, the one the
de-identifier makes (running a tool is no judgement; what is screened and what counts
as identifying is verify's own). An OCR that is missing, crashes, exits non-zero or
times out raises :class:`OcrFailure`; the caller reports it as a finding, never a pass.

The pixel *containers* are searched as bytes: the bits above BitsStored, the bytes past
the last frame, and the comment and application segments of JPEG (COM, APPn) and JPEG
2000 (COM) codestreams, where text can ride along unseen by any viewer.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from scipy import ndimage

from cxr_dask import tools
from cxr_dask.dicom import syntaxes

#: Longest side the screen works on (larger frames are subsampled first).
SCREEN_SIDE = 1024
#: A stroke: this much brighter or darker (of the frame's range) than its neighbourhood.
STROKE_CONTRAST = 0.12
#: Strokes are thinner than this (pixels of the screened frame).
STROKE_WIDTH = 7
#: The largest regions a frame's screen passes on.
MAX_REGIONS = 12
#: Regions read in one OCR call (a page of a multi-frame image's regions).
REGIONS_PER_PAGE = 48
#: Larger crops are scaled down to this height before OCR; smaller ones are scaled up.
OCR_LINE_HEIGHT = 48


class OcrFailure(RuntimeError):
    """The OCR could not read: missing, crashed, non-zero exit or timed out (no text inside)."""


@dataclass(frozen=True)
class OcrSettings:
    """How verify calls Tesseract: the command and a time limit per call."""

    command: str = "tesseract"
    timeout: float = 60.0

    def check_available(self) -> None:
        """Raise :class:`OcrFailure` unless ``command --version`` runs and exits 0."""
        run_checked([self.command, "--version"], self.timeout)

    def read(self, image: np.ndarray) -> str:
        """The text Tesseract reads in an 8-bit grey image (``cxr_dask.tools``, the call the
        de-identifier makes too; what counts as identifying stays verify's own)."""
        try:
            return tools.tesseract(image, ["--psm", "11"], self.timeout, self.command)
        except tools.ToolFailure as failure:
            raise OcrFailure(f"OCR {failure}") from None


def run_checked(command: list[str], timeout: float) -> str:
    """stdout of ``command``; :class:`OcrFailure` when it cannot start, fails or times out."""
    try:
        return tools.run_tool(command, timeout).decode("utf-8", "replace")
    except tools.ToolFailure as failure:
        raise OcrFailure(f"OCR {failure}") from None


def stored_values(ds: Dataset, timeout: float = 120.0) -> np.ndarray:
    """An output's pixel values: pydicom's decoders, else dcmtk's ``dcmdjpeg`` for the old
    JPEG processes, so no output escapes the screen because of its codec. Raises when
    neither can decode (the caller reports ``pixel_check_failed``)."""
    try:
        return ds.pixel_array
    except Exception:
        if str(ds.file_meta.get("TransferSyntaxUID", "")) not in syntaxes.DCMDJPEG_READS:
            raise
    with tempfile.TemporaryDirectory(prefix="cxr-dask-verify-") as folder:
        source, target = os.path.join(folder, "in.dcm"), os.path.join(folder, "out.dcm")
        ds.save_as(source)
        run_checked(["dcmdjpeg", source, target], timeout)
        return pydicom.dcmread(target).pixel_array


def frames_as_grey(pixels: np.ndarray, samples_per_pixel: int) -> Iterator[np.ndarray]:
    """Every frame as floats in 0..1 (colour averaged to grey), each on its own range,
    one at a time: text burned into a later frame of a loop (a frame's time) is as much
    PHI as the first's, and a long loop is never held as floats whole."""
    values = np.asarray(pixels)
    stack = values if values.ndim == (4 if samples_per_pixel > 1 else 3) else values[np.newaxis]
    for frame in stack:
        plane = np.asarray(frame, dtype=np.float32)
        if samples_per_pixel > 1:
            plane = plane.mean(axis=-1)
        low, high = float(plane.min()), float(plane.max())
        yield (plane - low) / max(high - low, 1e-6)


def flagged_crops(frames: Iterable[np.ndarray]) -> list[np.ndarray]:
    """The padded crop of every region the screen flags in any frame; a crop a previous
    frame already gave, pixel for pixel at the same place (a loop's fixed banner), once."""
    seen: set[tuple[int, int, bytes]] = set()
    crops = []
    for grey in frames:
        for row, col, height, width in screen(grey):
            pad = max(2, height // 3)
            top, left = max(0, row - pad), max(0, col - pad)
            crop = grey[top : row + height + pad, left : col + width + pad]
            key = (top, left, crop.tobytes())
            if key not in seen:
                seen.add(key)
                crops.append(crop.copy())
    return crops


def screen(grey: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes ``(row, col, height, width)`` that look like lines of text.

    Strokes are thin lines far brighter or darker than around them; joined horizontally
    they make wide, short blobs with many small holes, which is what a text line is
    and what anatomy, wires and edges mostly are not.
    """
    step = max(1, int(np.ceil(max(grey.shape) / SCREEN_SIDE)))
    small = grey[::step, ::step]
    # top-hats: what is thinner than the window and brighter (darker) than around it; a
    # broad edge (collimation, a blanked band, the body's outline) gives nothing
    bright = small - ndimage.grey_opening(small, size=(STROKE_WIDTH, STROKE_WIDTH))
    dark = ndimage.grey_closing(small, size=(STROKE_WIDTH, STROKE_WIDTH)) - small
    strokes = np.maximum(bright, dark) > STROKE_CONTRAST
    if not strokes.any():
        return []
    joined = ndimage.binary_closing(strokes, structure=np.ones((3, 9), bool))
    labels, _ = ndimage.label(joined)
    boxes = []
    for found in ndimage.find_objects(labels):
        if found is None:
            continue
        rows, cols = found
        height, width = rows.stop - rows.start, cols.stop - cols.start
        if not (4 <= height <= 80 and width >= 2 * height and width >= 12):
            continue
        area = height * width
        ink = strokes[found].sum() / area
        if not 0.08 <= ink <= 0.95:  # not a solid bar
            continue
        boxes.append((area, rows.start * step, cols.start * step, height * step, width * step))
    boxes.sort(reverse=True)
    return [(r, c, h, w) for _, r, c, h, w in boxes[:MAX_REGIONS]]


def mosaic(crops: list[np.ndarray]) -> np.ndarray:
    """The crops, scaled to a readable height, stacked on a white page."""
    lines = []
    for crop in crops:
        scale = OCR_LINE_HEIGHT / max(crop.shape[0], 1)
        zoomed = ndimage.zoom(crop, scale, order=1) if abs(scale - 1) > 0.1 else crop
        zoomed = zoomed[:, :2000]
        if np.median(zoomed) < 0.5:  # light text on dark: Tesseract reads dark on light best
            zoomed = 1.0 - zoomed
        lines.append(zoomed)
    width = max(line.shape[1] for line in lines) + 40
    page = np.ones((sum(line.shape[0] + 30 for line in lines) + 30, width), np.float32)
    top = 30
    for line in lines:
        page[top : top + line.shape[0], 20 : 20 + line.shape[1]] = line
        top += line.shape[0] + 30
    return (np.clip(page, 0, 1) * 255).astype(np.uint8)


def pages(crops: list[np.ndarray]) -> list[np.ndarray]:
    """Mosaics of at most :data:`REGIONS_PER_PAGE` crops each: one OCR call a page."""
    return [mosaic(crops[at : at + REGIONS_PER_PAGE]) for at in range(0, len(crops), REGIONS_PER_PAGE)]


# --------------------------------------------------------------------------- containers


def unused_bits(samples: np.ndarray, bits_stored: int, bits_allocated: int) -> bytes:
    """The bytes that the bits above BitsStored spell, when any of them is set (else b"")."""
    if bits_stored >= bits_allocated or samples.dtype.kind not in "ui":
        return b""
    high = (samples.astype(np.uint64) >> np.uint64(bits_stored)) if samples.dtype.kind == "u" else None
    if high is None:
        unsigned = samples.view(np.dtype(f"u{samples.dtype.itemsize}"))
        high = unsigned.astype(np.uint64) >> np.uint64(bits_stored)
    if not high.any():
        return b""
    width = bits_allocated - bits_stored
    return (high.ravel() & np.uint64(0xFF if width >= 8 else (1 << width) - 1)).astype(np.uint8).tobytes()


def jpeg_segments(stream: bytes) -> list[tuple[str, bytes]]:
    """``(name, payload)`` of the COM and APPn segments of a JPEG stream (APP0/JFIF too)."""
    out: list[tuple[str, bytes]] = []
    if not stream.startswith(b"\xff\xd8"):
        return out
    at = 2
    while at + 4 <= len(stream):
        if stream[at] != 0xFF:
            break
        marker = stream[at + 1]
        if marker == 0xFF:
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan: the header segments are over
            break
        length = int.from_bytes(stream[at + 2 : at + 4], "big")
        payload = stream[at + 4 : at + 2 + length]
        if marker == 0xFE:
            out.append(("JPEG COM", payload))
        elif 0xE0 <= marker <= 0xEF:
            out.append((f"JPEG APP{marker - 0xE0}", payload))
        at += 2 + length
    return out


def j2k_comments(stream: bytes) -> list[tuple[str, bytes]]:
    """The COM segments of a JPEG 2000 codestream's main and tile-part headers."""
    out: list[tuple[str, bytes]] = []
    start = stream.find(b"\xff\x4f\xff\x51")  # SOC then SIZ (inside a JP2 box too)
    if start < 0:
        return out
    at = start + 2
    while at + 4 <= len(stream):
        marker = int.from_bytes(stream[at : at + 2], "big")
        if marker in (0xFFD9,):
            break
        if marker == 0xFF93:  # SOD: tile data follows; skip to the tile-part's end via SOT
            break
        length = int.from_bytes(stream[at + 2 : at + 4], "big")
        if marker == 0xFF64:
            out.append(("J2K COM", stream[at + 6 : at + 2 + length]))  # past Rcom
        if marker == 0xFF90:  # SOT: Psot gives the tile-part length; read its header too
            psot = int.from_bytes(stream[at + 6 : at + 10], "big")
            tile_end = at + psot if psot else len(stream)
            inner = at + 2 + length
            while inner + 4 <= tile_end:
                inner_marker = int.from_bytes(stream[inner : inner + 2], "big")
                if inner_marker == 0xFF93:
                    break
                inner_length = int.from_bytes(stream[inner + 2 : inner + 4], "big")
                if inner_marker == 0xFF64:
                    out.append(("J2K COM", stream[inner + 6 : inner + 2 + inner_length]))
                inner += 2 + inner_length
            at = tile_end
            continue
        if length < 2:
            break
        at += 2 + length
    return out
