"""The bad-input corpus mixed with good files: a reason for each, no crash, no leak, quiet logs.

The good files are the session's small corpus (every transfer syntax): the subject here
is the bad files, each with its own reason, next to good ones that must still be written.
"""

from __future__ import annotations

import logging
import re
import shutil

import pyarrow.parquet as pq
import pytest

from cxr_dask import pipeline
from cxr_dask.config import RunConfig
from cxr_dask.deid.header import MAX_VALUE_BYTES
from cxr_dask.storage import Location, list_files
from cxr_dask.testing.synth import SynthCorpus, bad_corpus
from cxr_dask.verify import verify

SAFE_DETAIL = re.compile(r"^(?:[A-Za-z]+|\([0-9A-F]{4},[0-9A-F]{4}\))$")


@pytest.fixture(scope="module")
def bad_run(client, small_corpus: SynthCorpus, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("bad")
    workspace = {"input": base / "raw", "output": base / "dataset", "private": base / "private"}
    shutil.copytree(small_corpus.root, workspace["input"])
    # the absurd text value: twice what the de-identifier accepts (the default 50 MB costs
    # pass 1 tens of seconds of word counting before pass 2 quarantines the file)
    bad = bad_corpus(str(workspace["input"]), seed=5, huge_value_bytes=2 * MAX_VALUE_BYTES)
    config = RunConfig(*(str(workspace[k]) for k in ("input", "output", "private")), progress=False)
    client.run(lambda: logging.getLogger("cxr_dask").setLevel(logging.DEBUG))
    handler = _Capture()
    root, ours = logging.getLogger(), logging.getLogger("cxr_dask")
    level = ours.level
    root.addHandler(handler)
    ours.setLevel(logging.DEBUG)
    try:
        summary = pipeline.run(client, config)
    finally:
        root.removeHandler(handler)
        ours.setLevel(level)
    keys = [key for key, _ in list_files(Location(str(workspace["input"])))]
    (run_folder,) = (workspace["private"] / "runs").iterdir()
    audit = pq.read_table(run_folder / "audit.parquet").to_pylist()
    worker_logs = client.get_worker_logs()
    return {
        "workspace": workspace,
        "bad": bad,
        "summary": summary,
        "keys": keys,
        "audit": {keys[row["key_index"]]: row for row in audit},
        "logs": handler.text + "\n" + repr(worker_logs),
    }


class _Capture(logging.Handler):
    """Every record the client process logs during the run, formatted with its arguments."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += self.format(record) + "\n"


def test_every_bad_file_gets_its_reason_and_the_good_ones_are_written(bad_run, small_corpus):
    corpus = small_corpus
    audit = bad_run["audit"]
    assert len(audit) == len(bad_run["keys"]) == len(corpus.images) + len(bad_run["bad"])
    got = {bad.relpath: (audit[bad.relpath]["status"], audit[bad.relpath]["reason"]) for bad in bad_run["bad"]}
    expected = {bad.relpath: ("written" if bad.reason is None else "quarantined", bad.reason) for bad in bad_run["bad"]}
    assert got == expected
    assert {bad.reason for bad in bad_run["bad"]} == {
        None,  # no StudyDate, malformed dates, the winning copies, old JPEG, big endian, no Part 10 header
        "truncated_or_no_pixel_data",  # cut in the header, or a length field claiming gigabytes
        "undecodable_pixel_data",  # cut in the pixels, too few pixels, native bytes under RLE
        "not_dicom",
        "empty_file",
        "dicomdir",
        "no_patient_id",
        "unknown_transfer_syntax",
        "undecodable_value",
        "oversized_element",
        "duplicate_sop_instance_uid",  # a byte-identical copy of a written image
        "duplicate_differing_copy",  # a copy that lost the rule (cut short, or created no later)
        "undecodable_pixels",  # a broken codestream, chosen first; its good twin is written
    }
    for image in corpus.images:
        assert audit[image.relpath]["status"] == "written"
    for row in audit.values():
        assert row["detail"] is None or SAFE_DETAIL.match(row["detail"]), row["detail"]


def test_nothing_reaches_output_unanonymized(bad_run):
    workspace = bad_run["workspace"]
    report = verify(*(Location(str(workspace[k])) for k in ("input", "output", "private")))
    assert report.findings == []
    written = sum(1 for row in bad_run["audit"].values() if row["status"] == "written")
    assert report.outputs["DICOM"] == written == bad_run["summary"].written


def test_logs_hold_no_header_value_and_no_input_path(bad_run, small_corpus):
    corpus = small_corpus
    logs = bad_run["logs"]
    assert "pass 2" in logs  # the capture saw the run's own log lines
    needles = {value for bad in bad_run["bad"] for value in bad.phi if len(value) >= 6}
    needles |= {value for value in corpus.phi_values() if len(value) >= 6}
    needles |= {part for key in bad_run["keys"] for part in key.split("/")[:-1]}  # folders carry PHI
    leaked = sorted(needle for needle in needles if needle.lower() in logs.lower())
    assert leaked == []


def test_every_copy_of_a_repeated_image_names_the_written_one(bad_run):
    audit, keys = bad_run["audit"], bad_run["keys"]
    folder = bad_run["bad"][0].relpath.split("/")[0]
    winners = {
        "duplicate_1_copy.dcm": "duplicate_1.dcm",
        "duplicate_2.dcm": "duplicate_1.dcm",
        "retried_0_cut.dcm": "retried_1_whole.dcm",  # sorted first, cut short: never chosen
        "twin_0_broken.dcm": "twin_1_good.dcm",  # chosen, quarantined, the twin tried next
    }
    for loser, winner in winners.items():
        row = audit[f"{folder}/{loser}"]
        assert keys[row["duplicate_of"]] == f"{folder}/{winner}", loser
    written = [row for row in audit.values() if row["status"] == "written"]
    assert all(row["duplicate_of"] is None for row in written)
    assert len({row["dicom_id"] for row in written}) == len(written)  # each image once
