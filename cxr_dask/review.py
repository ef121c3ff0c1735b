"""The review page: what burned-in text handling removed or flagged, for the humans who check.

MIMIC-CXR's images were reviewed by people after automatic de-identification; this page
is what they look at. It lives in PRIVATE only: its crops show the very text that was
removed, so it is PHI.

```
PRIVATE/runs/<run id>/review/index.html              counts, and a link to every page
PRIVATE/runs/<run id>/review/changed-NNNN.html        images with regions blanked
PRIVATE/runs/<run id>/review/flagged-NNNN.html        images flagged for a human look
PRIVATE/runs/<run id>/review/summary.json             the counts (``cxr-dask review`` prints them)
PRIVATE/runs/<run id>/review/images/<dicom_id>/       before.jpg, after.jpg, region-NNN.png
PRIVATE/runs/<run id>/review/parts/<first>-<last>.review.json   what one pass-2 task saw
```

Two halves, so the client never decodes an image:

- on the worker (``render``, ``write_images``): only images with a region that is not
  left in place on purpose (blanked text, a rule, strict mode, or flagged: not a kept
  marker, not a candidate every reader agreed holds no text) are rendered: a windowed
  8-bit before/after thumbnail (percentile window, MONOCHROME1 inverted, at most
  ``THUMB_SIDE`` a side) and a crop of each region with a margin; the pass-2 task writes
  them and the journal writes its entries as a part, before the part that marks the
  task done. Images without such regions cost nothing.
- on the client, at commit (``build``): the entries of every finished task, one per key,
  become pages of at most ``PAGE_IMAGES`` images and ``PAGE_BYTES`` of page and images,
  with previous/next links. A resumed run rebuilds the pages from all parts, so an image
  is listed once.

Images are named on the page by their output path and key index, never by input path;
regions by class and a fixed reason phrase, never the words read.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cxr_dask import storage
from cxr_dask.deid.pixels import BLANKING_CLASSES, REGION_CLASSES, Box, PixelResult, RegionRecord
from cxr_dask.errors import ConfigError
from cxr_dask.metadata import PIXEL_CLASS_COLUMNS
from cxr_dask.storage import Location

#: Largest side of a before/after thumbnail and of a region crop, in pixels.
THUMB_SIDE = 256
CROP_SIDE = 256
#: Context around a region's crop: half its height, within these bounds (image pixels).
CROP_MARGIN = (8, 48)
#: Crops rendered per image, and the bytes an image's files may take: regions past
#: either are listed without a crop (a dense annotation page can hold hundreds).
MAX_CROPS = 60
IMAGE_BYTES = 1_000_000
#: A page holds at most this many images and this many bytes of HTML and images.
PAGE_IMAGES = 20
PAGE_BYTES = 4_000_000
#: Flagged images the index lists one by one (the flagged pages list them all).
INDEX_FLAGGED = 500
#: Classes that blank pixels; ``marker`` is kept, ``flagged`` is left for a human look.
REMOVED_CLASSES = BLANKING_CLASSES
#: Regions not shown on the page: candidates every reader agreed hold no text (edges,
#: wires, bone), often several an image; the audit counts them.
UNLISTED_CLASSES = ("left",)
#: Outline colours of the region classes on thumbnails and crops (unlisted ones are
#: never drawn).
COLOURS = {
    "text": (230, 40, 40),
    "rule": (255, 140, 0),
    "strict": (200, 0, 200),
    "flagged": (255, 220, 0),
    "marker": (40, 200, 80),
}
#: Crop order: what a reviewer must look at first gets a crop first.
_PRIORITY = {"flagged": 0, "text": 1, "rule": 2, "strict": 3, "marker": 4}
#: Percentile window of thumbnails (whole image) and crops (the crop itself).
WINDOW = (0.5, 99.5)

REVIEW_DIR = "review"
PARTS_DIR = "parts"
IMAGES_DIR = "images"
INDEX = "index.html"
SUMMARY = "summary.json"
_RUN_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]*$")


# --------------------------------------------------------------------------- worker: render


def needs_review(result: PixelResult) -> bool:
    """True when an image has a region a reviewer should see: blanked or flagged (not a
    kept marker, not a candidate left in place because nothing read text in it)."""
    return any(region.kind in (*REMOVED_CLASSES, "flagged") for region in result.report.regions)


@dataclass(frozen=True)
class Picture:
    """One PNG of the review and its size (the page's img width and height)."""

    data: bytes
    width: int
    height: int


@dataclass(frozen=True)
class Rendered:
    """An image's review material, made on the worker from the decoded arrays."""

    rows: int
    columns: int
    action: str
    regions: tuple[RegionRecord, ...]  # in crop priority order
    before: Picture
    after: Picture
    crops: tuple[Picture | None, ...]  # one per region; None past the crop budget


def render(result: PixelResult, photometric: str) -> Rendered | None:
    """Thumbnails and crops of an image with regions to review; None when nothing to show.

    ``result.source`` is the image before any change, ``result.array`` after (None when
    the pixels did not change). The after thumbnail is the before one with the blocks
    under the judged regions recomputed: pixels change only inside those regions.
    Colour images are shown in colour (a palette image through its palette), scaled by
    their range only (``_colour_window``): a percentile window would shift their hues.
    """
    source, changed = result.source, result.array
    if source is None or not needs_review(result):
        return None
    if changed is not None and changed.ndim == source.ndim + 1:
        changed = changed[0]  # several frames: the first is shown (``source``)
    if result.palette is not None and source.ndim == 2:
        source = result.palette[source]
        changed = None if changed is None else result.palette[changed]
    if source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] != 3):
        return None
    invert = photometric.strip() == "MONOCHROME1"
    small, factor = _reduce(source, THUMB_SIDE)
    low, high = _percentile_window(small) if source.ndim == 2 else _colour_window(source)
    shown = [r for r in result.report.regions if r.kind not in UNLISTED_CLASSES]
    regions = tuple(sorted(shown, key=lambda r: _PRIORITY.get(r.kind, len(_PRIORITY))))
    before_rgb = Image.fromarray(_window(small, low, high, invert)).convert("RGB")
    drawing = ImageDraw.Draw(before_rgb)
    for region in regions:
        drawing.rectangle(_scaled(region.box, factor, before_rgb.size), outline=COLOURS.get(region.kind, (0, 0, 255)))
    before = _jpeg(before_rgb)
    after_small = small
    if changed is not None:
        after_small = _reduce_within(small, changed, factor, [region.box for region in regions])
    after = _jpeg(Image.fromarray(_window(after_small, low, high, invert)))
    spent = len(before.data) + len(after.data)
    crops: list[Picture | None] = []
    for region in regions:
        crop = None
        if len(crops) < MAX_CROPS and spent < IMAGE_BYTES:
            crop = _crop(source, region, invert) if source.ndim == 2 else _colour_crop(source, region, low, high)
            spent += len(crop.data)
        crops.append(crop)
    return Rendered(
        rows=int(source.shape[0]),
        columns=int(source.shape[1]),
        action=result.report.action,
        regions=regions,
        before=before,
        after=after,
        crops=tuple(crops),
    )


def _reduce(arr: np.ndarray, side: int) -> tuple[np.ndarray, int]:
    """Block means (float32) so the larger side is at most ``side``; and the block size.

    Every stored value counts, so a thin stroke shows as a faint line rather than
    vanishing between samples. Rows and columns past the last whole block are dropped.
    """
    rows, columns = arr.shape[:2]
    factor = max(1, math.ceil(max(rows, columns) / side))
    if rows < factor or columns < factor:  # a sliver: sample it
        return np.ascontiguousarray(arr[::factor, ::factor], dtype=np.float32), factor
    return _block_means(arr[: rows // factor * factor, : columns // factor * factor], factor), factor


def _block_means(arr: np.ndarray, factor: int) -> np.ndarray:
    """Means of ``factor`` x ``factor`` blocks of an array whose sides are multiples of it
    (each channel of a colour array on its own)."""
    if factor == 1:
        return arr.astype(np.float32)
    rows, columns = arr.shape[:2]
    rest = arr.shape[2:]
    by_rows = arr.reshape(rows // factor, factor, columns, *rest).sum(axis=1, dtype=np.float32)
    return by_rows.reshape(rows // factor, columns // factor, factor, *rest).sum(axis=2) / (factor * factor)


def _reduce_within(small: np.ndarray, changed: np.ndarray, factor: int, boxes: list[Box]) -> np.ndarray:
    """``small`` with the blocks that overlap ``boxes`` recomputed from ``changed``."""
    if small.shape[0] * factor > changed.shape[0] or small.shape[1] * factor > changed.shape[1]:
        return _reduce(changed, max(small.shape) if factor == 1 else THUMB_SIDE)[0]  # a sampled sliver
    out = small.copy()
    for x0, y0, x1, y1 in boxes:
        left, top = max(0, x0 // factor), max(0, y0 // factor)
        right, bottom = min(out.shape[1], -(-x1 // factor)), min(out.shape[0], -(-y1 // factor))
        if right > left and bottom > top:
            piece = changed[top * factor : bottom * factor, left * factor : right * factor]
            out[top:bottom, left:right] = _block_means(piece, factor)
    return out


def _colour_window(source: np.ndarray) -> tuple[float, float]:
    """Display range of a colour image: 0 to its largest value possible (8 bits), or to
    its largest value (more bits: 12-bit colour stored in 16)."""
    if source.dtype == np.uint8:
        return 0.0, 255.0
    return 0.0, max(float(source.max()), 1.0)


def _colour_crop(source: np.ndarray, region: RegionRecord, low: float, high: float) -> Picture:
    """A colour image's region with a margin, in the thumbnail's scale, outlined in its
    class's colour (an RGB PNG: a palette of greys would lose the colour)."""
    left, top, right, bottom = _crop_bounds(region.box, source.shape[:2])
    piece, factor = _reduce(source[top:bottom, left:right], CROP_SIDE)
    picture = Image.fromarray(_window(piece, low, high, False))
    x0, y0, x1, y1 = region.box
    outline = _scaled((x0 - left, y0 - top, x1 - left, y1 - top), factor, picture.size)
    ImageDraw.Draw(picture).rectangle(outline, outline=COLOURS.get(region.kind, COLOURS["text"]))
    return _png(picture)


def _crop_bounds(box: Box, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The crop around a region: its box and a margin of half its height (CROP_MARGIN)."""
    rows, columns = shape[0], shape[1]
    x0, y0, x1, y1 = box
    margin = min(max((y1 - y0) // 2, CROP_MARGIN[0]), CROP_MARGIN[1])
    left, top = max(0, min(x0, columns - 1) - margin), max(0, min(y0, rows - 1) - margin)
    right, bottom = min(columns, max(x1, left + 1) + margin), min(rows, max(y1, top + 1) + margin)
    return left, top, right, bottom


def _percentile_window(values: np.ndarray) -> tuple[float, float]:
    low, high = (float(v) for v in np.percentile(values, WINDOW))
    return (low, high) if high > low else (low, low + 1.0)


def _window(values: np.ndarray, low: float, high: float, invert: bool) -> np.ndarray:
    """8-bit display values: ``low`` black, ``high`` white; MONOCHROME1 shown inverted."""
    scaled = np.clip((values - low) * (255.0 / (high - low)), 0.0, 255.0).astype(np.uint8)
    return 255 - scaled if invert else scaled


def _scaled(box: Box, factor: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """An end-exclusive image box as an inclusive outline rectangle on a reduced picture."""
    width, height = size
    x0, y0, x1, y1 = box
    left = min(max(0, x0 // factor), width - 1)
    top = min(max(0, y0 // factor), height - 1)
    right = min(max(left, (x1 - 1) // factor), width - 1)
    bottom = min(max(top, (y1 - 1) // factor), height - 1)
    return left, top, right, bottom


#: Crops are paletted: 251 grey levels, then one entry per class colour for the outline
#: (a quarter of an RGB PNG's encode time, and smaller).
_GREYS = 251
_OUTLINE_INDEX = {kind: _GREYS + i for i, kind in enumerate(COLOURS)}
_PALETTE = [v for g in range(_GREYS) for v in (round(g * 255 / (_GREYS - 1)),) * 3] + [
    v for colour in COLOURS.values() for v in colour
]


def _crop(source: np.ndarray, region: RegionRecord, invert: bool) -> Picture:
    """The region with a margin, windowed on its own values, outlined in its class's colour."""
    x0, y0, x1, y1 = region.box
    left, top, right, bottom = _crop_bounds(region.box, source.shape)
    piece, factor = _reduce(source[top:bottom, left:right], CROP_SIDE)
    grey = _window(piece, *_percentile_window(piece), invert)
    picture = Image.fromarray((grey.astype(np.uint16) * (_GREYS - 1) // 255).astype(np.uint8))
    picture.putpalette(_PALETTE)
    outline = _scaled((x0 - left, y0 - top, x1 - left, y1 - top), factor, picture.size)
    ImageDraw.Draw(picture).rectangle(outline, outline=_OUTLINE_INDEX.get(region.kind, _OUTLINE_INDEX["text"]))
    return _png(picture)


def _png(image: Image.Image) -> Picture:
    """Crops: lossless, so strokes stay as sharp as they were."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return Picture(buffer.getvalue(), image.size[0], image.size[1])


def _jpeg(image: Image.Image) -> Picture:
    """Thumbnails: a tenth of a PNG's encode time and a quarter of its bytes (measured on
    the synthetic corpus); they show where regions are, the crops show what they held."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return Picture(buffer.getvalue(), image.size[0], image.size[1])


# --------------------------------------------------------------------------- worker: write


def image_folder(dicom_id: str) -> str:
    """Where an image's pictures go below the review folder: named by the research id."""
    return f"{IMAGES_DIR}/{dicom_id}"


def write_images(
    private: Location, review_folder: str, key_index: int, dicom_id: str, path: str, rendered: Rendered
) -> dict[str, Any]:
    """Write an image's pictures (idempotent: a re-run task writes the same names) and
    return its entry for the task's review part."""
    folder = image_folder(dicom_id)

    def put(name: str, picture: Picture) -> dict[str, Any]:
        key = f"{folder}/{name}"
        storage.write_atomic(private, f"{review_folder}/{key}", picture.data)
        return {"src": key, "width": picture.width, "height": picture.height, "bytes": len(picture.data)}

    regions = []
    for number, (region, crop) in enumerate(zip(rendered.regions, rendered.crops, strict=True)):
        regions.append(
            {
                "box": list(region.box),
                "kind": region.kind,
                "why": region.why,
                "crop": put(f"region-{number:03d}.png", crop) if crop is not None else None,
            }
        )
    return {
        "key_index": key_index,
        "dicom_id": dicom_id,
        "path": path,
        "action": rendered.action,
        "rows": rendered.rows,
        "columns": rendered.columns,
        "before": put("before.jpg", rendered.before),
        "after": put("after.jpg", rendered.after),
        "regions": regions,
    }


def part_bytes(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps(entries, separators=(",", ":")).encode()


def entries_from_part(data: bytes) -> list[dict[str, Any]]:
    return json.loads(data)


# --------------------------------------------------------------------------- client: pages


def counts_by_class(entry: dict[str, Any]) -> Counter[str]:
    return Counter(region["kind"] for region in entry["regions"])


def is_changed(entry: dict[str, Any]) -> bool:
    """Pixels blanked: the image changed, or a blanking class judged a region."""
    return entry["action"] == "cleaned" or any(r["kind"] in REMOVED_CLASSES for r in entry["regions"])


def is_flagged(entry: dict[str, Any]) -> bool:
    return any(region["kind"] == "flagged" for region in entry["regions"])


def entry_bytes(entry: dict[str, Any]) -> int:
    """The bytes of an entry's pictures: what a browser loads for it."""
    pictures = [entry["before"], entry["after"], *(r["crop"] for r in entry["regions"] if r["crop"])]
    return sum(picture["bytes"] for picture in pictures)


def paginate(entries: Sequence[dict[str, Any]], images: int = PAGE_IMAGES, budget: int = PAGE_BYTES) -> list[list]:
    """Consecutive pages of at most ``images`` entries and ``budget`` picture bytes (an
    entry larger than the budget alone on its page; ``IMAGE_BYTES`` bounds it)."""
    pages: list[list[dict[str, Any]]] = []
    page: list[dict[str, Any]] = []
    spent = 0
    for entry in entries:
        size = entry_bytes(entry)
        if page and (len(page) >= images or spent + size > budget):
            pages.append(page)
            page, spent = [], 0
        page.append(entry)
        spent += size
    if page:
        pages.append(page)
    return pages


@dataclass
class ReviewSummary:
    """What the review page holds, in counts (safe to print)."""

    run_id: str
    images: int = 0  # listed on the page
    changed: int = 0
    flagged: int = 0
    #: Region counts by class over the whole run (from the audit), markers kept included.
    regions: dict[str, int] = field(default_factory=dict)
    pages: list[str] = field(default_factory=list)

    def lines(self, where: str) -> list[str]:
        regions = ", ".join(f"{_CLASS_LABEL[kind]} {self.regions.get(kind, 0)}" for kind in REGION_CLASSES)
        return [
            f"review page: {where}",
            f"  run {self.run_id}: {self.changed} images changed, {self.flagged} flagged for a human look "
            f"({self.images} listed over {len(self.pages)} pages)",
            f"  regions: {regions}",
        ]


_CLASS_LABEL = {
    "text": "text blanked",
    "marker": "markers kept",
    "rule": "rule",
    "strict": "strict",
    "flagged": "flagged",
    "left": "left in place (no text read)",
}
_STYLE = """
body{font:14px sans-serif;margin:1em 2em;background:#fafafa;color:#222}
nav{margin:.5em 0 1em}
section{border-top:1px solid #ccc;padding:.5em 0}
figure{display:inline-block;margin:0 1em 0 0;vertical-align:top}
img{background:#000;image-rendering:pixelated}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;vertical-align:middle}
tr.flagged{background:#fff6c0}.k{font-family:monospace}
"""


def _document(title: str, body: list[str]) -> bytes:
    text = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        *body,
        "</body></html>",
    ]
    return "\n".join(text).encode()


def _img(picture: dict[str, Any], alt: str) -> str:
    return (
        f'<img src="{html.escape(picture["src"])}" width="{int(picture["width"])}" '
        f'height="{int(picture["height"])}" alt="{html.escape(alt)}" loading="lazy">'
    )


def _entry_html(entry: dict[str, Any]) -> str:
    counts = counts_by_class(entry)
    said = ", ".join(f"{counts[kind]} {_CLASS_LABEL[kind]}" for kind in REGION_CLASSES if counts[kind])
    rows = []
    for region in entry["regions"]:
        kind = region["kind"]
        crop = _img(region["crop"], f"{kind} region") if region["crop"] else "(no crop: image budget)"
        box = ", ".join(str(int(v)) for v in region["box"])
        rows.append(
            f'<tr class="{html.escape(kind)}"><td>{crop}</td><td>{html.escape(kind)}</td>'
            f"<td>{html.escape(region['why'])}</td><td>{box}</td></tr>"
        )
    return "\n".join(
        [
            f'<section id="{_anchor(entry)}">',
            f'<h3 class="k">{html.escape(entry["path"])}</h3>',
            f"<p>key {int(entry['key_index'])} &middot; {int(entry['columns'])}x{int(entry['rows'])} &middot; "
            f"pixels {html.escape(entry['action'])} &middot; {html.escape(said)}</p>",
            f"<figure>{_img(entry['before'], 'before')}<figcaption>before (regions outlined)</figcaption></figure>",
            f"<figure>{_img(entry['after'], 'after')}<figcaption>after</figcaption></figure>",
            "<table><tr><th>region</th><th>class</th><th>reason</th><th>box x0, y0, x1, y1</th></tr>",
            *rows,
            "</table></section>",
        ]
    )


def _anchor(entry: dict[str, Any]) -> str:
    return f"k{int(entry['key_index']):09d}"


def _page_name(kind: str, number: int) -> str:
    return f"{kind}-{number:04d}.html"


def _nav(kind: str, number: int, total: int) -> str:
    links = ['<a href="index.html">index</a>']
    if number > 1:
        links.append(f'<a href="{_page_name(kind, number - 1)}" rel="prev">previous</a>')
    links.append(f"page {number} of {total}")
    if number < total:
        links.append(f'<a href="{_page_name(kind, number + 1)}" rel="next">next</a>')
    return "<nav>" + " &middot; ".join(links) + "</nav>"


_HEADINGS = {
    "changed": "Images with regions blanked",
    "flagged": "Images flagged for a human look",
}


def pages(
    run_id: str, entries: Iterable[dict[str, Any]], regions: dict[str, int]
) -> tuple[dict[str, bytes], ReviewSummary]:
    """Every HTML page (name -> bytes) of a run's review, and its summary.

    Entries are listed in key order; an image that is both changed and flagged is on
    both lists (its pictures are stored once).
    """
    ordered = sorted(entries, key=lambda e: e["key_index"])
    lists = {"changed": [e for e in ordered if is_changed(e)], "flagged": [e for e in ordered if is_flagged(e)]}
    summary = ReviewSummary(
        run_id, images=len(ordered), changed=len(lists["changed"]), flagged=len(lists["flagged"]), regions=regions
    )
    out: dict[str, bytes] = {}
    contents: dict[str, list[str]] = {}
    flagged_links: list[str] = []
    for kind, listed in lists.items():
        paged = paginate(listed)
        contents[kind] = []
        for number, page in enumerate(paged, start=1):
            name = _page_name(kind, number)
            if kind == "flagged":
                flagged_links += [
                    f'<li><a href="{name}#{_anchor(e)}" class="k">{html.escape(e["path"])}</a></li>' for e in page
                ]
            nav = _nav(kind, number, len(paged))
            heading = f"{_HEADINGS[kind]}: page {number} of {len(paged)} (run {run_id})"
            body = [f"<h1>{html.escape(heading)}</h1>", nav, *(_entry_html(e) for e in page), nav]
            out[name] = _document(heading, body)
            first, last = page[0]["key_index"], page[-1]["key_index"]
            contents[kind].append(
                f'<li><a href="{name}">page {number}</a>: {len(page)} images, keys {first} to {last}</li>'
            )
            summary.pages.append(name)
    body = _index_body(summary, lists, contents, flagged_links)
    out[INDEX] = _document(f"Review of run {run_id}", body)
    return out, summary


def _index_body(
    summary: ReviewSummary, lists: dict[str, list], contents: dict[str, list[str]], flagged_links: list[str]
) -> list[str]:
    totals = "".join(
        f"<tr><td>{_CLASS_LABEL[kind]}</td><td>{summary.regions.get(kind, 0)}</td></tr>" for kind in REGION_CLASSES
    )
    body = [
        f"<h1>Review of run {html.escape(summary.run_id)}</h1>",
        "<p>What burned-in text handling did to this run's images. This page and its pictures show the "
        "removed text: they are PHI and stay in the private location.</p>",
        f"<p>{summary.changed} images changed, {summary.flagged} flagged for a human look.</p>",
        f"<table><tr><th>regions, whole run</th><th>count</th></tr>{totals}</table>",
    ]
    for kind, listed in lists.items():
        body.append(f"<h2>{_HEADINGS[kind]} ({len(listed)})</h2>")
        body.append(f"<ol>{''.join(contents[kind])}</ol>" if listed else "<p>none</p>")
    if flagged_links:
        more = len(flagged_links) - INDEX_FLAGGED
        body.append(f"<h2>{_HEADINGS['flagged']}, one by one</h2>")
        body.append(f"<ol>{''.join(flagged_links[:INDEX_FLAGGED])}</ol>")
        if more > 0:
            body.append(f"<p>and {more} more on the pages above</p>")
    return body


def build(
    private: Location, review_folder: str, run_id: str, entries: list[dict[str, Any]], audit_rows: list[dict[str, Any]]
) -> ReviewSummary:
    """Write the review pages of a run from its workers' entries; the index last.

    Only entries of keys the audit lists as written with the same image are shown, one
    per key. Pages a previous build of the same run wrote beyond this one's are removed.
    """
    written = {row["key_index"]: row.get("dicom_id") for row in audit_rows if row.get("status") == "written"}
    unique = {e["key_index"]: e for e in entries if written.get(e["key_index"]) == e["dicom_id"]}
    regions = {kind: 0 for kind in REGION_CLASSES}
    for row in audit_rows:
        for kind in REGION_CLASSES:
            regions[kind] += int(row.get(PIXEL_CLASS_COLUMNS[kind]) or 0)
    documents, summary = pages(run_id, unique.values(), regions)
    previous = load_summary(private, review_folder)
    for name, data in documents.items():
        if name != INDEX:
            storage.write_atomic(private, f"{review_folder}/{name}", data)
    storage.write_atomic(private, f"{review_folder}/{SUMMARY}", json.dumps(asdict(summary)).encode())
    storage.write_atomic(private, f"{review_folder}/{INDEX}", documents[INDEX])
    for name in set(previous.pages if previous else []) - set(documents):
        storage.remove(private, f"{review_folder}/{name}")
    return summary


def load_summary(private: Location, review_folder: str) -> ReviewSummary | None:
    key = f"{review_folder}/{SUMMARY}"
    if not storage.exists(private, key):
        return None
    return ReviewSummary(**json.loads(storage.read_bytes(private, key)))


# --------------------------------------------------------------------------- the command


def index_location(private: Location, review_folder: str) -> str:
    """The index page as a user opens it: a local path, or the URL on object storage."""
    key = f"{review_folder}/{INDEX}"
    return private.path(key) if private.is_local else f"{private.url.rstrip('/')}/{key}"


def locate(private: Location, run_id: str | None = None) -> tuple[str, ReviewSummary]:
    """The review page of ``run_id`` (default: the latest run that has one) and its counts.

    ConfigError, one line, when there is none.
    """
    runs = "runs"
    if run_id is not None:
        if not _RUN_ID.match(run_id):
            raise ConfigError(f"not a run id: {run_id!r}")
        candidates = [run_id]
    else:
        folder = private.path(runs)
        listed = private.fs.ls(folder, detail=False) if private.fs.exists(folder) else []
        candidates = sorted((p.rstrip("/").rsplit("/", 1)[-1] for p in listed), reverse=True)
    for candidate in candidates:
        review_folder = f"{runs}/{candidate}/{REVIEW_DIR}"
        summary = load_summary(private, review_folder)
        if summary is not None:
            return index_location(private, review_folder), summary
    if run_id is not None:
        raise ConfigError(f"run {run_id} has no review page in {private.url}")
    raise ConfigError(f"no run with a review page in {private.url}")
