"""The review page: thumbnails and crops rendered on workers, pages built at commit.

Unit tests build ``PixelResult``s by hand, with a region of every class (``flagged``
included, which the detector decides on its own); the end-to-end tests run a
``cxr-dask synth`` corpus on the LocalCluster and check the page against the audit.
"""

from __future__ import annotations

import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cxr_dask import cli, journal, metadata, pipeline, review
from cxr_dask.config import RunConfig
from cxr_dask.deid.pixels import REGION_CLASSES, PixelReport, PixelResult, RegionRecord
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.deid.rules import PixelOptions, RegionRule
from cxr_dask.dicom import layout
from cxr_dask.storage import Location

MB5 = 5 * 1024 * 1024
RULE_BOX = (0, 0, 60, 14)


# --------------------------------------------------------------------------- helpers


class Links(HTMLParser):
    """Every link and image source of a page, its sections and its text, via html.parser."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.sections: list[str] = []
        self.rel: dict[str, str] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("href"):
            self.hrefs.append(found["href"])
            if found.get("rel"):
                self.rel[found["rel"]] = found["href"]
        if tag == "img":
            self.srcs.append(found["src"])
        if tag == "section":
            self.sections.append(found["id"])

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> Links:
    parser = Links()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def check_pages(folder: Path) -> dict[str, Links]:
    """Every page reachable from the index parses, links only to files that exist, and
    weighs (HTML plus its pictures) at most 5 MB. Returns the parsed pages by name."""
    seen: dict[str, Links] = {}
    queue = ["index.html"]
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        page = parse(folder / name)
        seen[name] = page
        for target in page.hrefs + page.srcs:
            assert "://" not in target and not target.startswith("/") and ".." not in target, target
            file, _, anchor = target.partition("#")
            assert (folder / file).is_file(), (name, target)
            if anchor:
                assert anchor in parse(folder / file).sections, (name, target)
        weight = (folder / name).stat().st_size + sum((folder / src).stat().st_size for src in set(page.srcs))
        assert weight <= MB5, (name, weight)
        queue += [href for href in page.hrefs if href.endswith(".html")]
    return seen


def listed_keys(pages: dict[str, Links], prefix: str) -> list[int]:
    return [int(s[1:]) for name, page in sorted(pages.items()) if name.startswith(prefix) for s in page.sections]


def image_with_text(rows: int = 300, columns: int = 400, seed: int = 0) -> np.ndarray:
    """A 12-bit gradient with bright blocks where the regions of ``regions_of_every_kind`` are."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(200, 1800, columns, dtype=np.float64)[None, :] + rng.normal(0, 30, (rows, columns))
    arr = np.clip(ramp, 0, 4095).astype(np.uint16)
    for region in regions_of_every_kind():
        x0, y0, x1, y1 = region.box
        arr[y0:y1:3, x0:x1] = 4000  # stripes: something for a crop to show
    return arr


def regions_of_every_kind() -> list[RegionRecord]:
    return [
        RegionRecord((20, 30, 180, 52), "text", "words read"),
        RegionRecord((300, 250, 330, 280), "marker", "allow-listed"),
        RegionRecord(RULE_BOX, "rule", "known-region rule"),
        RegionRecord((200, 100, 360, 120), "strict", "strict mode"),
        RegionRecord((40, 200, 150, 222), "flagged", "low-confidence read"),
        RegionRecord((250, 60, 290, 90), "left", "no text read"),
    ]


def result_of(source: np.ndarray, regions: list[RegionRecord], black: int = 0) -> PixelResult:
    """What ``pixels.clean`` returns for these regions: blanking classes blanked."""
    after = source.copy()
    for region in regions:
        if region.kind in review.REMOVED_CLASSES:
            x0, y0, x1, y1 = region.box
            after[y0:y1, x0:x1] = black
    changed = not np.array_equal(after, source)
    report = PixelReport(action="cleaned" if changed else "untouched", regions=list(regions))
    return PixelResult(report, after if changed else None, source if regions else None)


def fake_id(key_index: int) -> str:
    digits = f"{key_index:040x}"
    return "-".join(digits[i : i + 8] for i in range(0, 40, 8))


def audit_for(entries: list[dict]) -> list[dict]:
    rows = []
    for entry in entries:
        counts = {metadata.PIXEL_CLASS_COLUMNS[k]: 0 for k in REGION_CLASSES}
        for region in entry["regions"]:
            counts[metadata.PIXEL_CLASS_COLUMNS[region["kind"]]] += 1
        rows.append(metadata.audit_row(entry["key_index"], "written", dicom_id=entry["dicom_id"], **counts))
    return rows


def write_entries(private: Location, folder: str, results: list[PixelResult], photometric: str = "MONOCHROME2"):
    entries = []
    for key_index, result in enumerate(results):
        rendered = review.render(result, photometric)
        assert rendered is not None
        dicom_id = fake_id(key_index)
        path = layout.image_path(10000000 + key_index, 50000000 + key_index, dicom_id)
        entries.append(review.write_images(private, folder, key_index, dicom_id, path, rendered))
    return entries


# --------------------------------------------------------------------------- render (worker side)


def test_nothing_is_rendered_for_images_without_regions_to_review():
    source = image_with_text()
    assert review.render(result_of(source, []), "MONOCHROME2") is None
    markers_only = result_of(source, [RegionRecord((300, 250, 330, 280), "marker", "allow-listed")])
    assert not review.needs_review(markers_only)
    assert review.render(markers_only, "MONOCHROME2") is None
    for kind in ("text", "rule", "strict", "flagged"):
        region = next(r for r in regions_of_every_kind() if r.kind == kind)
        assert review.needs_review(result_of(source, [region])), kind
    # candidates every reader agreed hold no text (edges, wires) are counted, not shown
    left = [r for r in regions_of_every_kind() if r.kind in ("left", "marker")]
    assert not review.needs_review(result_of(source, left))
    assert review.render(result_of(source, left), "MONOCHROME2") is None
    shown = review.render(result_of(source, regions_of_every_kind()), "MONOCHROME2")
    assert "left" not in {r.kind for r in shown.regions} and len(shown.crops) == len(shown.regions)


def test_thumbnails_and_crops_are_small_windowed_and_monochrome1_is_inverted():
    source = np.tile(np.linspace(0, 4095, 1200, dtype=np.uint16), (900, 1))  # dark left, bright right
    regions = [RegionRecord((0, 0, 1200, 400), "rule", "known-region rule"), *regions_of_every_kind()]
    shown = review.render(result_of(source, regions), "MONOCHROME2")
    inverted = review.render(result_of(source, regions, black=4095), "MONOCHROME1")
    assert shown.regions[0].kind == "flagged"  # what a reviewer must look at comes first
    for picture in (shown.before, shown.after, *shown.crops):
        assert max(picture.width, picture.height) <= review.THUMB_SIDE
        opened = Image.open(io.BytesIO(picture.data))
        assert opened.size == (picture.width, picture.height)
    after = np.asarray(Image.open(io.BytesIO(shown.after.data)).convert("L"), dtype=np.float64)
    after_inverted = np.asarray(Image.open(io.BytesIO(inverted.after.data)).convert("L"), dtype=np.float64)
    bottom = after.shape[0] - 5  # below the blanked rule region: the plain gradient
    assert after[bottom, :10].mean() < 30 and after[bottom, -10:].mean() > 225
    assert after_inverted[bottom, :10].mean() > 225 and after_inverted[bottom, -10:].mean() < 30
    assert after[: after.shape[0] // 4].mean() < 10  # the blanked region shows black
    assert after_inverted[: after.shape[0] // 4].mean() < 10  # MONOCHROME1's black (its maximum) too


@pytest.mark.parametrize("shape", [(900, 1200), (300, 200), (2999, 2501), (6, 3000)])
def test_the_after_thumbnail_equals_a_full_reduction_of_the_changed_image(shape):
    source = image_with_text(*shape, seed=5) if min(shape) >= 300 else np.full(shape, 900, dtype=np.uint16)
    regions = [*regions_of_every_kind(), RegionRecord((shape[1] - 7, shape[0] - 3, shape[1], shape[0]), "text", "x")]
    result = result_of(source, regions)
    small, factor = review._reduce(source, review.THUMB_SIDE)
    patched = review._reduce_within(small, result.array, factor, [r.box for r in regions])
    np.testing.assert_allclose(patched, review._reduce(result.array, review.THUMB_SIDE)[0], rtol=1e-5)
    rendered = review.render(result, "MONOCHROME2")
    assert all(max(p.width, p.height) <= review.THUMB_SIDE for p in (rendered.before, *rendered.crops) if p)


def test_crops_stop_at_the_image_budget_and_the_rest_are_listed_without():
    source = image_with_text(600, 800, seed=3)
    many = [RegionRecord((x, y, x + 60, y + 20), "text", "words read") for y in range(0, 560, 40) for x in (0, 400)]
    many += [RegionRecord((100, 100, 140, 120), "flagged", "low-confidence read")] * 60
    rendered = review.render(result_of(source, many), "MONOCHROME2")
    assert len(rendered.crops) == len(many)
    kept = [c for c in rendered.crops if c is not None]
    assert len(kept) == review.MAX_CROPS
    assert all(c is None for c in rendered.crops[review.MAX_CROPS :])
    spent = len(rendered.before.data) + len(rendered.after.data) + sum(len(c.data) for c in kept)
    assert spent <= review.IMAGE_BYTES + max(len(c.data) for c in kept)


# --------------------------------------------------------------------------- pages (client side)


def test_pages_are_bounded_parse_as_html_and_link_only_existing_pictures(tmp_path):
    private = Location(str(tmp_path / "private"))
    folder = "runs/R1/review"
    results = []
    for i in range(47):
        regions = regions_of_every_kind()
        if i % 3 == 1:
            regions = [r for r in regions if r.kind != "flagged"]  # changed, not flagged
        elif i % 3 == 2:
            regions = [r for r in regions if r.kind in ("flagged", "marker")]  # flagged, not changed
        results.append(result_of(image_with_text(seed=i), regions))
    entries = write_entries(private, folder, results)
    summary = review.build(private, folder, "R1", entries, audit_for(entries))

    root = tmp_path / "private" / folder
    pages = check_pages(root)
    changed = [e["key_index"] for e in entries if e["action"] == "cleaned"]
    flagged = [e["key_index"] for e in entries if any(r["kind"] == "flagged" for r in e["regions"])]
    assert listed_keys(pages, "changed-") == changed and len(changed) == 32
    assert listed_keys(pages, "flagged-") == flagged and len(flagged) == 31
    assert all(len(page.sections) <= review.PAGE_IMAGES for page in pages.values())
    assert len([name for name in pages if name.startswith("changed-")]) == 2
    assert set(pages) - {"index.html"} == set(summary.pages)
    assert (summary.images, summary.changed, summary.flagged) == (47, 32, 31)
    assert summary.regions == {"text": 32, "marker": 47, "rule": 32, "strict": 32, "flagged": 31, "left": 0}
    # the index lists every flagged image, linked to its place on a flagged page
    flagged_paths = [e["path"] for e in entries if e["key_index"] in flagged]
    assert [h for h in pages["index.html"].hrefs if "#" in h] == [
        f"flagged-{1 + i // review.PAGE_IMAGES:04d}.html#k{k:09d}" for i, k in enumerate(flagged)
    ]
    index_text = " ".join(pages["index.html"].text)
    assert all(path in index_text for path in flagged_paths)
    # previous/next chain each list in order
    assert pages["changed-0001.html"].rel == {"next": "changed-0002.html"}
    assert pages["changed-0002.html"].rel == {"prev": "changed-0001.html"}
    # every crop of a flagged region is there, with its class and reason on the page
    text = " ".join(pages["flagged-0001.html"].text)
    assert "low-confidence read" in text and "flagged" in text
    for entry in entries:
        assert entry["path"] in " ".join(t for p in pages.values() for t in p.text)
        for region in entry["regions"]:
            assert region["crop"] is not None and (root / region["crop"]["src"]).is_file()


def test_pagination_keeps_each_page_under_its_byte_budget():
    entry = {"before": {"bytes": 300_000}, "after": {"bytes": 300_000}, "regions": [{"crop": {"bytes": 400_000}}]}
    entries = [dict(entry, key_index=i) for i in range(10)]
    paged = review.paginate(entries, images=20, budget=2_500_000)
    assert [len(p) for p in paged] == [2, 2, 2, 2, 2]
    assert review.paginate([], images=20) == []
    assert [len(p) for p in review.paginate(entries, images=3, budget=10**9)] == [3, 3, 3, 1]


def test_a_run_without_changed_images_still_gets_an_index(tmp_path):
    private = Location(str(tmp_path))
    summary = review.build(private, "runs/R0/review", "R0", [], [metadata.audit_row(0, "written", dicom_id="x")])
    pages = check_pages(tmp_path / "runs/R0/review")
    assert set(pages) == {"index.html"} and summary.pages == [] and summary.changed == 0


def test_a_rebuild_lists_each_image_once_and_drops_pages_it_no_longer_has(tmp_path):
    private = Location(str(tmp_path))
    folder = "runs/R2/review"
    results = [result_of(image_with_text(seed=i), regions_of_every_kind()) for i in range(25)]
    entries = write_entries(private, folder, results)
    audit = audit_for(entries)
    first = review.build(private, folder, "R2", entries + entries[:5], audit)
    assert first.pages == ["changed-0001.html", "changed-0002.html", "flagged-0001.html", "flagged-0002.html"]
    # the audit decides: a key quarantined in the end, or another image, is not shown
    audit[0] = metadata.audit_row(0, "quarantined", reason="unwritable")
    audit[1]["dicom_id"] = fake_id(999)
    second = review.build(private, folder, "R2", entries[:20] + entries[:20], audit)
    pages = check_pages(tmp_path / folder)
    assert listed_keys(pages, "changed-") == list(range(2, 20))
    assert second.pages == ["changed-0001.html", "flagged-0001.html"]
    assert not (tmp_path / folder / "changed-0002.html").exists()


def test_journal_reads_review_entries_of_finished_tasks_only_once_each(tmp_path):
    private = Location(str(tmp_path))
    run = journal.RunJournal(private, "R3")
    results = [result_of(image_with_text(seed=i), regions_of_every_kind()) for i in range(4)]
    entries = write_entries(private, run.review_folder, results)
    audit = audit_for(entries)
    run.write_part([0, 1], audit[:2], [], review_entries=entries[:2])
    run.write_part([1, 2], audit[1:3], [], review_entries=entries[1:3])  # a task re-run elsewhere
    run.write_part([3], audit[3:], [], review_entries=entries[3:])
    (part,) = (tmp_path / run.parts_folder).glob(f"{3:09d}-{3:09d}-*{journal.AUDIT_SUFFIX}")
    part.unlink()  # the task died before its mark
    read = run.read_review_entries()
    assert sorted(e["key_index"] for e in read) == [0, 1, 2]
    assert not list((tmp_path / run.parts_folder).glob("*review*"))  # review parts live below review/


def test_an_audit_part_written_before_a_class_was_added_reads_with_the_class_null(tmp_path):
    """A run resumed after an upgrade: its earlier parts lack ``pixel_regions_left``."""
    run = journal.RunJournal(Location(str(tmp_path)), "R4")
    rows = [metadata.audit_row(k, "written", dicom_id=fake_id(k), pixel_regions_flagged=1) for k in range(3)]
    run.write_part([0, 1], rows[:2], [])
    (part,) = (tmp_path / run.parts_folder).glob(f"*{journal.AUDIT_SUFFIX}")
    pq.write_table(pq.read_table(part).drop_columns(["pixel_regions_left"]), part)
    run.write_part([2], rows[2:], [])
    audit = run.read_audit()
    assert audit.schema == metadata.AUDIT_SCHEMA
    assert audit.column("pixel_regions_left").to_pylist() == [None, None, None]
    assert audit.column("pixel_regions_flagged").to_pylist() == [1, 1, 1]


def test_audit_counts_regions_by_class_and_never_words():
    report = PixelReport(action="cleaned", regions=[*regions_of_every_kind(), RegionRecord((0, 0, 5, 5), "text", "x")])
    counts = metadata.pixel_class_counts(report)
    assert counts == {
        "pixel_regions_text": 2,
        "pixel_regions_marker": 1,
        "pixel_regions_rule": 1,
        "pixel_regions_strict": 1,
        "pixel_regions_flagged": 1,
        "pixel_regions_left": 1,
    }
    assert all(metadata.AUDIT_SCHEMA.field(column).type == "int64" for column in counts)
    assert metadata.pixel_class_counts(PixelReport(action="disabled")) == {}


def test_review_command_finds_the_latest_page_or_says_there_is_none(tmp_path, capsys):
    private = tmp_path / "private"
    assert cli.main(["review", str(private)]) == 2
    assert "no run with a review page" in capsys.readouterr().err
    location = Location(str(private))
    first, second = "20260101T000000000000Z", "20260102T000000000000Z"
    review.build(location, f"runs/{first}/review", first, [], [])
    later = write_entries(location, f"runs/{second}/review", [result_of(image_with_text(), regions_of_every_kind())])
    review.build(location, f"runs/{second}/review", second, later, audit_for(later))
    (private / "runs" / "20260103T000000000000Z").mkdir()  # an unfinished run: no page yet
    assert cli.main(["review", str(private)]) == 0
    out = capsys.readouterr().out
    assert f"review page: {private}/runs/20260102T000000000000Z/review/index.html" in out
    assert "1 images changed, 1 flagged for a human look" in out
    assert "text blanked 1, markers kept 1, rule 1, strict 1, flagged 1, left in place (no text read) 0" in out
    assert cli.main(["review", str(private), "--run", first]) == 0
    assert "0 images changed" in capsys.readouterr().out
    assert cli.main(["review", str(private), "--run", "20260103T000000000000Z"]) == 2
    assert "has no review page" in capsys.readouterr().err
    assert cli.main(["review", str(private), "--run", "../x"]) == 2


# --------------------------------------------------------------------------- end to end


def _config(workspace: dict[str, Path], **overrides) -> RunConfig:
    rule = RegionRule(name="agfa-corner", regions=((0, 0, 60, 14),), manufacturer="^AGFA")
    return RunConfig(
        str(workspace["input"]),
        str(workspace["output"]),
        str(workspace["private"]),
        progress=False,
        profile=ProfileOptions(pixels=PixelOptions(rules=(rule,))),
        **overrides,
    )


@pytest.fixture(scope="module")
def synth_run(client, tmp_path_factory) -> dict:
    """``cxr-dask synth`` output run through the pipeline with a known-region rule."""
    base = tmp_path_factory.mktemp("review")
    assert cli.main(["synth", str(base / "raw"), "--patients", "5", "--seed", "3", "--size", "320x288"]) == 0
    workspace = {"input": base / "raw", "output": base / "dataset", "private": base / "private"}
    summary = pipeline.run(client, _config(workspace, partition_size=3))
    (run_folder,) = (workspace["private"] / "runs").iterdir()
    audit = pq.read_table(run_folder / "audit.parquet").to_pylist()
    return {"workspace": workspace, "summary": summary, "audit": audit, "folder": run_folder / "review"}


@pytest.mark.cluster
def test_every_changed_image_of_a_synth_run_is_on_the_page_by_its_output_path(synth_run):
    audit, folder = synth_run["audit"], synth_run["folder"]
    changed = {row["key_index"]: row for row in audit if row["pixel_action"] == "cleaned"}
    assert len(changed) >= 5
    assert any(row["pixel_regions_rule"] for row in changed.values())
    assert any(row["pixel_regions_text"] for row in changed.values())
    pages = check_pages(folder)
    assert sorted(listed_keys(pages, "changed-")) == sorted(changed)
    text = " ".join(t for page in pages.values() for t in page.text)
    for row in changed.values():
        path = layout.image_path(row["subject_id"], row["study_id"], row["dicom_id"])
        assert path in text
    for row in audit:  # class counts in the audit for every written image, never a word
        if row["status"] == "written":
            counted = sum(row[column] for column in metadata.PIXEL_CLASS_COLUMNS.values())
            assert counted == row["pixel_regions_found"] + (row["pixel_regions_rule"] or 0)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["changed"] == len(changed)
    assert str(folder / "index.html") in "\n".join(synth_run["summary"].lines())


@pytest.mark.cluster
def test_the_review_page_never_lands_in_the_output(synth_run):
    output = synth_run["workspace"]["output"]
    found = [p for p in output.rglob("*") if p.is_file()]
    assert found and all(p.suffix in (".dcm", ".parquet") for p in found)
    assert not [p for p in output.rglob("*") if "review" in p.name]


@pytest.mark.cluster
def test_review_command_prints_the_runs_page_and_counts(synth_run, capsys):
    private = synth_run["workspace"]["private"]
    assert cli.main(["review", str(private)]) == 0
    out = capsys.readouterr().out
    changed = sum(row["pixel_action"] == "cleaned" for row in synth_run["audit"])
    assert f"review page: {synth_run['folder'] / 'index.html'}" in out
    assert f"{changed} images changed" in out


@pytest.mark.cluster
def test_a_resumed_run_lists_each_image_once(client, synth_run, tmp_path):
    """Tasks lost before their completion mark are redone, in other partitions; the page
    is rebuilt from every finished part, with no image twice and none missing."""
    base = tmp_path / "copy"
    shutil.copytree(synth_run["workspace"]["private"].parent, base)
    workspace = {"input": base / "raw", "output": base / "dataset", "private": base / "private"}
    (run_folder,) = (workspace["private"] / "runs").iterdir()
    audit_parts = sorted((run_folder / "parts").glob(f"*{journal.AUDIT_SUFFIX}"))
    for part in audit_parts[::2]:  # these tasks "died" after their review part
        part.unlink()
    (run_folder / "review" / "index.html").unlink()
    active = {"run_id": run_folder.name, "input": str(workspace["input"]), "output": str(workspace["output"])}
    (workspace["private"] / "runs" / "active.json").write_text(json.dumps(active))

    summary = pipeline.run(client, _config(workspace, partition_size=2))
    assert summary.resumed and summary.run_id == run_folder.name
    pages = check_pages(run_folder / "review")
    changed = sorted(row["key_index"] for row in synth_run["audit"] if row["pixel_action"] == "cleaned")
    assert listed_keys(pages, "changed-") == changed
    audit = pq.read_table(run_folder / "audit.parquet").to_pylist()
    assert sorted(r["key_index"] for r in audit if r["pixel_action"] == "cleaned") == changed
