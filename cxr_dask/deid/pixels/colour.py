"""Colour images as greyscale planes for the text search: luminance, then colour planes.

The detector and OCR work on one greyscale plane. Luminance shows most burned-in text
(white, yellow, cyan on black; black on a bright label), but text whose colour has the
brightness of its ground vanishes in it: red on a grey of the same luminance, green or
yellow annotations on mid-grey ultrasound tissue. Such text departs from the luminance
in some channel by a large share of the image's range. ``planes`` yields the luminance
first, then, for each channel where enough pixels depart that far (most first), that
channel's difference from the luminance, kept only where it is that large and flat grey
elsewhere: grey anatomy, noise and faint tints vanish from it, and coloured strokes stand
out on a flat ground (what a glyph needs). What earlier planes blanked is filled with its
surround, so the same text is not read twice. A grey image stored as RGB (a secondary
capture of a radiograph) has no such channel and costs one plane; so does a colour image
throughout (a photograph: ``GREY_SHARE``), whose text shows in luminance.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: Rec. 601 luma weights, in thousandths (what JPEG's YCbCr and DICOM's YBR_FULL use).
LUMA_1000 = (299, 587, 114)
LUMA = np.array(LUMA_1000, dtype=np.float64) / 1000
#: A channel is searched on its own when it departs from the luminance by this share of
#: the image's range (the detector's glyph contrast, ``detection.CONTRAST``) ...
CHANNEL_CONTRAST = 0.2
#: ... in at least this many pixels (a few strokes of one small glyph) ...
CHANNEL_PIXELS = 16
#: ... on an image at least this share of whose pixels are grey (channels within
#: ``GREY_TOLERANCE`` of the range of each other): coloured overlays on a grey image. Measured:
#: ultrasounds, palette and Doppler images 83-98% grey; deid-data's colour photographs
#: 0.2-44%, where a difference plane is texture (seconds of OCR, and boxes blanked on
#: a photo without text) and text shows in luminance anyway.
GREY_SHARE = 0.5
GREY_TOLERANCE = 0.05
#: Filled areas take the median of a ring this wide around them.
RING = 2


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an (rows, columns, 3) unsigned image, rounded, in its own dtype."""
    wide = rgb.astype(np.uint32)
    red, green, blue = LUMA_1000
    luma = (red * wide[..., 0] + green * wide[..., 1] + blue * wide[..., 2] + 500) // 1000
    return luma.astype(rgb.dtype)


def _limit(rgb: np.ndarray) -> float:
    return CHANNEL_CONTRAST * max(int(rgb.max()) - int(rgb.min()), 1)


def telling_channels(rgb: np.ndarray, luma: np.ndarray) -> list[int]:
    """Channels in which text could stand out that the luminance hides, most pixels first."""
    span = max(int(rgb.max()) - int(rgb.min()), 1)
    chroma = rgb.max(axis=-1).astype(np.int32) - rgb.min(axis=-1)
    if np.count_nonzero(chroma <= GREY_TOLERANCE * span) < GREY_SHARE * chroma.size:
        return []  # a colour image throughout (a photograph)
    limit = _limit(rgb)
    counts = []
    base = luma.astype(np.int32)
    for channel in range(3):
        departs = int(np.count_nonzero(np.abs(rgb[..., channel].astype(np.int32) - base) >= limit))
        if departs >= CHANNEL_PIXELS:
            counts.append((departs, channel))
    return [channel for _, channel in sorted(counts, reverse=True)]


def difference(rgb: np.ndarray, luma: np.ndarray, channel: int) -> np.ndarray:
    """A channel's departure from the luminance, around mid-grey, where it is at least
    ``CHANNEL_CONTRAST`` of the range; exactly mid-grey elsewhere (in the image's dtype)."""
    top = int(np.iinfo(rgb.dtype).max)
    middle = (top + 1) // 2
    departs = rgb[..., channel].astype(np.int32) - luma.astype(np.int32)
    departs[np.abs(departs) < _limit(rgb)] = 0
    return np.clip(departs + middle, 0, top).astype(rgb.dtype)


def fill(plane: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``plane`` with each blanked area (``mask`` non-zero) set to the median of its surround."""
    if not mask.any():
        return plane
    from scipy import ndimage  # only here: a grey image never needs it (~0.25 s of imports a process)

    out = plane.copy()
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    rows, columns = mask.shape
    for number, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        ys, xs = found
        outer = (
            slice(max(0, ys.start - RING), min(rows, ys.stop + RING)),
            slice(max(0, xs.start - RING), min(columns, xs.stop + RING)),
        )
        inside = labels[outer] == number
        ring = plane[outer][~mask[outer].astype(bool)]
        value = np.median(ring) if ring.size else np.median(plane[outer])
        out[outer][inside] = np.asarray(value).astype(plane.dtype)
    return out


def planes(rgb: np.ndarray, mask: np.ndarray) -> Iterator[np.ndarray]:
    """The greyscale planes to search, luminance first (see the module's docstring).

    ``mask`` is read when each later plane is made: the caller marks there what the
    planes before it blanked, and those areas are filled in the next ones.
    """
    luma = luminance(rgb)
    yield fill(luma, mask)
    for channel in telling_channels(rgb, luma):
        yield fill(difference(rgb, luma, channel), mask)
