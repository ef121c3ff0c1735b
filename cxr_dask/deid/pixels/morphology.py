"""Square grey-level filters: min, max, opening, closing; by OpenCV when it is installed.

OpenCV comes with rapidocr (the text detector's model) and computes the same values as
the numpy fallbacks here and scipy's filters, several times faster. Only the worker-side
modules (``detection``, ``ocr``, ``textdet``) import this one: the client never loads OpenCV.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

try:  # OpenCV comes with rapidocr (the text detector's model); the numpy filters stand in
    import cv2

    cv2.setNumThreads(1)  # one core per Dask task, as onnxruntime and Tesseract
except ImportError:  # pragma: no cover - exercised only without OpenCV
    cv2 = None  # type: ignore[assignment]


def _pool(arr: np.ndarray, factor: int, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Block max and block min: thin strokes survive in one of them whatever their polarity.

    Rows first (elementwise max/min of the ``factor`` rows of each block, contiguous),
    then columns on the ``factor`` times smaller result, ``chunk`` output rows at a time
    so a band is still in cache for its second statistic: the image is read once, in its
    own dtype, with no float copy (measured 25% faster than whole-image passes).
    """
    if factor == 1:
        return arr, arr
    rows, columns = (arr.shape[0] // factor) * factor, (arr.shape[1] // factor) * factor
    out_rows = rows // factor
    high_out = np.empty((out_rows, columns // factor), dtype=arr.dtype)
    low_out = np.empty_like(high_out)
    band_high = np.empty((min(chunk, out_rows), columns), dtype=arr.dtype)
    band_low = np.empty_like(band_high)
    for start in range(0, out_rows, chunk):
        n = min(chunk, out_rows - start)
        block = arr[start * factor : (start + n) * factor, :columns]
        high, low = band_high[:n], band_low[:n]
        np.maximum(block[0::factor], block[1::factor], out=high)
        np.minimum(block[0::factor], block[1::factor], out=low)
        for i in range(2, factor):
            np.maximum(high, block[i::factor], out=high)
            np.minimum(low, block[i::factor], out=low)
        out_high, out_low = high_out[start : start + n], low_out[start : start + n]
        np.maximum(high[:, 0::factor], high[:, 1::factor], out=out_high)
        np.minimum(low[:, 0::factor], low[:, 1::factor], out=out_low)
        for j in range(2, factor):
            np.maximum(out_high, high[:, j::factor], out=out_high)
            np.minimum(out_low, low[:, j::factor], out=out_low)
    return high_out, low_out


def _running(arr: np.ndarray, size: int, axis: int, op: np.ufunc) -> np.ndarray:
    """A centred running max/min of odd ``size`` along ``axis``, edges repeated.

    Equal to ``scipy.ndimage.maximum_filter1d``/``minimum_filter1d`` with mode "nearest",
    built by window doubling (a handful of contiguous elementwise ops instead of a
    per-element sliding window), several times faster on the detection image.
    """
    half = size // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (half, half)
    padded = np.pad(arr, pad, mode="edge")
    n = arr.shape[axis]

    def cut(a: np.ndarray, start: int, length: int) -> np.ndarray:
        return a[start : start + length] if axis == 0 else a[:, start : start + length]

    window, current = 1, padded
    total = padded.shape[axis]
    while window * 2 <= size:
        length = total - 2 * window + 1
        current = op(cut(current, 0, length), cut(current, window, length))
        window *= 2
    if window < size:
        length = total - size + 1
        current = op(cut(current, 0, length), cut(current, size - window, length))
    return cut(current, 0, n)


#: Dtypes OpenCV's morphology takes; it computes the same square min/max as ``_running``
#: (replicated border = scipy's "nearest") three times faster on the detection image.
_CV_DTYPES = frozenset({np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int16), np.dtype(np.float32)})


def _cv_morphology(arr: np.ndarray, size: int, dilate: bool) -> np.ndarray | None:
    """A square min (max) filter by OpenCV, or None when OpenCV cannot take the array."""
    if cv2 is None or arr.dtype not in _CV_DTYPES or arr.ndim != 2 or 0 in arr.shape:
        return None
    kernel = np.ones((size, size), dtype=np.uint8)
    op = cv2.dilate if dilate else cv2.erode
    return op(np.ascontiguousarray(arr), kernel, borderType=cv2.BORDER_REPLICATE)


def _erode(arr: np.ndarray, size: int) -> np.ndarray:
    out = _cv_morphology(arr, size, dilate=False)
    if out is not None:
        return out
    return _running(_running(arr, size, 0, np.minimum), size, 1, np.minimum)


def _dilate(arr: np.ndarray, size: int) -> np.ndarray:
    out = _cv_morphology(arr, size, dilate=True)
    if out is not None:
        return out
    return _running(_running(arr, size, 0, np.maximum), size, 1, np.maximum)


def _opening(arr: np.ndarray, size: int) -> np.ndarray:
    """Grey opening with a square window (min filter, then max filter)."""
    return _dilate(_erode(arr, size), size)


def _closing(arr: np.ndarray, size: int) -> np.ndarray:
    """Grey closing with a square window (max filter, then min filter)."""
    return _erode(_dilate(arr, size), size)


def _crop_opening(crop: np.ndarray, size: int) -> np.ndarray:
    """``ndimage.grey_opening(crop, size=(size, size))``, the same values, by OpenCV.

    scipy centres an even window one pixel differently for its dilation (the structuring
    element is mirrored); the anchors below do the same. Its "reflect" border and
    OpenCV's replicated one give the same min and max: every reflected pixel is already in
    the window. Ten times faster on OCR crops of flagged lines.
    """
    if cv2 is None or crop.dtype != np.float32 or crop.ndim != 2 or 0 in crop.shape:
        from scipy import ndimage

        return ndimage.grey_opening(crop, size=(size, size))
    kernel = np.ones((size, size), dtype=np.uint8)
    centre = size // 2
    eroded = cv2.erode(np.ascontiguousarray(crop), kernel, anchor=(centre, centre), borderType=cv2.BORDER_REPLICATE)
    mirrored = size - 1 - size // 2
    return cv2.dilate(eroded, kernel, anchor=(mirrored, mirrored), borderType=cv2.BORDER_REPLICATE)


def top_hat(values: np.ndarray, size: int, bright: bool) -> np.ndarray:
    """The strokes of a crop in its polarity: ``crop - _crop_opening(crop, size)`` for
    ``crop`` the stored values in float32, negated for dark strokes (``stroke_values``
    in float32)."""
    return stroke_values(values, size, bright).astype(np.float32, copy=False)


def stroke_values(values: np.ndarray, size: int, bright: bool) -> np.ndarray:
    """``top_hat``'s strokes, for unsigned values in their own type (the same integers).

    Unsigned values are opened as they are (for dark strokes, counted down from their
    maximum: a shift of the negated values, which an opening follows) and the opening
    subtracted (it is never above the values): the opening only picks values, so the
    strokes are the same, OpenCV filters 8 or 16 bits two to three times faster than
    float32 (a big block's OCR crop), and their percentiles can be counted.
    """
    if cv2 is not None and values.dtype in (np.uint8, np.uint16) and values.ndim == 2 and 0 not in values.shape:
        turned = values if bright else np.iinfo(values.dtype).max - values
        kernel = np.ones((size, size), dtype=np.uint8)
        centre, mirrored = size // 2, size - 1 - size // 2  # (``_crop_opening``'s anchors)
        eroded = cv2.erode(turned, kernel, anchor=(centre, centre), borderType=cv2.BORDER_REPLICATE)
        return turned - cv2.dilate(eroded, kernel, anchor=(mirrored, mirrored), borderType=cv2.BORDER_REPLICATE)
    crop = values.astype(np.float32)
    if not bright:
        crop = -crop
    return crop - _crop_opening(crop, size)


def _component_stats(mask: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_component_counts`` with one weight: (boxes, sizes, counts)."""
    boxes, sizes, (counts,) = _component_counts(mask, [weight])
    return boxes, sizes, counts


def _component_counts(mask: np.ndarray, weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """8-connected components of ``mask``, numbered as ``scipy.ndimage.label`` numbers them.

    Returns (boxes, sizes, counts): per component (label 1 first) its box (x0, y0, x1, y1,
    end-exclusive), its pixel count, and for each of ``weights`` how many of its pixels
    are set in it.
    OpenCV gives the boxes and sizes in one pass, ten times faster than scipy's label and
    find_objects on a noisy film (~48,000 components on a 1024-pixel film with text).
    """
    if cv2 is None:
        from scipy import ndimage

        labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        found = ndimage.find_objects(labels)
        boxes = np.array([(x.start, y.start, x.stop, y.stop) for y, x in found], dtype=np.int64).reshape(-1, 4)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        return boxes, sizes, [np.bincount(labels[weight], minlength=count + 1)[1:] for weight in weights]
    # Wu's scan-array union-find (SAUF) numbers components in raster order of their first
    # pixel, as scipy does (OpenCV documents it; Grana's and Spaghetti's block-based
    # algorithms, faster by 4 ms, do not, and restoring the order cost more than that)
    count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        np.ascontiguousarray(mask).view(np.uint8), 8, cv2.CV_32S, cv2.CCL_SAUF
    )
    stats = stats[1:].astype(np.int64)
    counts = [np.bincount(labels[weight], minlength=count)[1:] for weight in weights]
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    boxes = np.stack([left, top, left + stats[:, cv2.CC_STAT_WIDTH], top + stats[:, cv2.CC_STAT_HEIGHT]], axis=1)
    return boxes, stats[:, cv2.CC_STAT_AREA], counts


def _labels(mask: np.ndarray) -> np.ndarray:
    """8-connected component labels of ``mask`` (0 off it), numbered as ``scipy.ndimage.label``
    numbers them; by OpenCV when installed (scipy's import costs a worker 0.3 s)."""
    if cv2 is None:
        from scipy import ndimage

        return ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))[0]
    _count, labels = cv2.connectedComponentsWithAlgorithm(
        np.ascontiguousarray(mask).view(np.uint8), 8, cv2.CV_32S, cv2.CCL_SAUF
    )
    return labels


def value_percentiles(
    values: np.ndarray, percentiles: float | tuple[float, ...], as_type: type | np.dtype | None = None
) -> np.ndarray:
    """``np.percentile(values.astype(as_type), percentiles)``, bit for bit (numpy's linear
    method; one percentile given as a number comes back as numpy gives it, a scalar of
    the values' type). Integers of at most 16 bits are counted instead of sorted (a crop
    of a film is millions of pixels: five to ten times faster): the order statistics are
    read off the cumulative counts and interpolated as numpy does, in ``as_type`` (the
    values' own when not given)."""
    dtype = values.dtype if as_type is None else as_type
    if values.dtype.kind not in "ui" or values.dtype.itemsize > 2 or not values.size:
        return np.percentile(values.astype(dtype, copy=False), percentiles)
    first, last = int(values.min()), int(values.max())
    if cv2 is not None and values.dtype == np.uint8 and values.ndim == 2 and values.size < 1 << 24:
        # OpenCV's histogram, a tenth of numpy's count's time (float32 counts: exact below 2**24)
        counts = cv2.calcHist([values], [0], None, [256], [0, 256]).ravel().astype(np.int64)[first : last + 1]
    else:
        shifted = values.astype(np.int32) - first if values.dtype.kind == "i" else values - first
        counts = np.bincount(shifted.ravel(), minlength=last - first + 1)
    total = values.size
    virtual = (total - 1) * np.atleast_1d(np.true_divide(percentiles, 100))
    previous = np.floor(virtual)
    following = previous + 1
    top = virtual >= total - 1  # numpy's bounds: the largest value
    previous[top] = following[top] = total - 1
    gamma = virtual - previous
    cumulative = np.cumsum(counts)
    low = (first + np.searchsorted(cumulative, previous.astype(np.intp), side="right")).astype(dtype)
    high = (first + np.searchsorted(cumulative, following.astype(np.intp), side="right")).astype(dtype)
    # numpy's _lerp, step by step, in the values' dtype (a number: numpy's weak scalar)
    if isinstance(percentiles, (int, float)):
        weight, below, above = float(gamma[0]), low[0], high[0]
        step = above - below
        return above - step * (1 - weight) if weight >= 0.5 else below + step * weight
    difference = high - low
    out = np.add(low, difference * gamma)
    np.subtract(high, difference * (1 - gamma), out=out, where=gamma >= 0.5, casting="unsafe", dtype=out.dtype)
    return out


def looked_up(values: np.ndarray, table: np.ndarray, first: int) -> np.ndarray:
    """``table[values - first]``: each value's entry of an 8-bit ``table`` that starts at
    value ``first``; by OpenCV's lookup for 8-bit values (a fifth of numpy's time)."""
    if cv2 is not None and values.dtype == np.uint8 and values.ndim == 2 and values.size and table.dtype == np.uint8:
        full = np.zeros(256, dtype=np.uint8)
        full[first : first + len(table)] = table
        return cv2.LUT(values, full)
    return table[values.astype(np.int32) - first if values.dtype.kind == "i" else values - first]


def stretched8(
    crop: np.ndarray, stretch: Callable[[np.ndarray, Any, Any], np.ndarray], as_type: type | None = None
) -> np.ndarray:
    """``stretch(values, low, high)``: a crop onto 8 bits by its own 0.5 and 99.5
    percentiles, its values in float32. Stored values of at most 16 bits are stretched
    through a table of their range (the same arithmetic on each value once, not on each
    pixel: a big block's crop is millions of pixels), their percentiles counted in
    ``as_type`` (``value_percentiles``: numpy's values, bit for bit)."""
    if crop.dtype.kind in "ui" and crop.dtype.itemsize <= 2 and crop.size:
        first, last = int(crop.min()), int(crop.max())
        low, high = value_percentiles(crop, (0.5, 99.5), as_type)
        return looked_up(crop, stretch(np.arange(first, last + 1, dtype=np.float32), low, high), first)
    values = crop.astype(np.float32)
    low, high = np.percentile(values, (0.5, 99.5))
    return stretch(values, low, high)
