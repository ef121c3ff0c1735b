"""One core, header-only de-identification beside its floors and the peer tools.

For each corpus of ``common.CORPORA`` (same files for everyone), interleaved repetitions of:

- ``cp``: ``cp -r`` of the corpus (the I/O floor);
- ``pydicom``: a bare ``dcmread`` + ``save_as`` loop (the Python floor);
- ``cxr-dask``: ``process.process_file``, pass 2 for one file without Dask (read, Annex E
  header de-identification, write in the MIMIC-CXR layout); the identity map is built
  beforehand, as the client does;
- each peer of ``peers.py`` doing its default anonymization of the same files.

Ratios are cxr-dask's throughput over each contender's (above 1: cxr-dask is faster).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import peers
import pydicom

from cxr_dask import identity, inventory, process
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.deid.rules import PixelOptions
from cxr_dask.privacy import quiet_pydicom
from cxr_dask.storage import Location, list_files
from cxr_dask.testing.synth import synthesize

#: cxr-dask with burned-in text scanning on (the default); the other "cxr-dask" row is
#: header-only de-identification (``[pixels] enabled = false``).
PIXELS_ON = "cxr-dask, pixel scan on"
#: Its target: at least half the bare loop's throughput on 15 MB files with no text.
PIXELS_ON_TARGET = {"large": 0.5}

#: Targets (issue 7; the small-file ones raised by issue 16): cxr-dask's throughput over
#: the contender's, per corpus.
TARGETS = {
    ("small", "pydicom"): 1 / 1.25,  # at most 25% over the bare loop's read and write
    ("large", "pydicom"): 0.8,
    ("large", "cp"): 0.3,
    ("small", "dicognito"): 2.5,
    ("large", "dicognito"): 1.1,
    ("small", "deid"): 1.0,
    ("large", "deid"): 1.0,
    ("small", "dicom-anonymizer"): 1.0,
    ("large", "dicom-anonymizer"): 1.0,
}


def make_corpus(root: Path, name: str) -> Path:
    folder = root / name
    if not folder.exists():
        synthesize(str(folder), transfer_syntaxes=common.EXPLICIT, **common.CORPORA[name])
    return folder


def contenders(corpus: Path, scratch: Path, runners: dict[str, peers.Runner]) -> dict[str, common.Contender]:
    """(setup, work) per contender; every work reads the same files and writes new ones."""
    source = Location(str(corpus))
    files = list_files(source)
    records = inventory.scan_partition(((i, k, s) for i, (k, s) in enumerate(files)), source)
    table = inventory.mark_duplicates(inventory.to_table(records))
    ident = identity.extend(identity.IdentityMap(uid_key=b"bench-secret-0123456789"), table)
    header_only = ProfileOptions(pixels=PixelOptions(enabled=False))
    with_pixels = ProfileOptions()  # the default: burned-in text scanning on

    def clear(name: str, create: bool = True) -> Callable[[], None]:
        def setup() -> None:
            shutil.rmtree(scratch / name, ignore_errors=True)
            if create:
                (scratch / name).mkdir(parents=True)

        return setup

    def copy() -> None:
        subprocess.run(["cp", "-r", str(corpus), str(scratch / "cp")], check=True)

    def bare() -> None:
        target = scratch / "pydicom"
        for index, (key, _) in enumerate(files):
            pydicom.dcmread(corpus / key).save_as(target / f"{index}.dcm")

    def ours(name: str, options: ProfileOptions) -> Callable[[], None]:
        def work() -> None:
            destination = Location(str(scratch / name))
            for index, (key, _) in enumerate(files):
                audit, _ = process.process_file(source, destination, index, key, ident, options)
                if audit["status"] != "written":
                    raise RuntimeError(f"cxr-dask quarantined a benchmark file: {audit['reason']}")

        return work

    def peer(name: str, runner: peers.Runner) -> Callable[[], None]:
        def work() -> None:
            target = scratch / name
            for index, (key, _) in enumerate(files):
                runner(corpus / key, target / f"{index}.dcm")

        return work

    return {
        "cp": (clear("cp", create=False), copy),
        "pydicom": (clear("pydicom"), bare),
        "cxr-dask": (clear("cxr-dask"), ours("cxr-dask", header_only)),
        PIXELS_ON: (clear(PIXELS_ON), ours(PIXELS_ON, with_pixels)),
        **{name: (clear(name), peer(name, runner)) for name, runner in runners.items()},
    }


@quiet_pydicom()
def run(root: Path, repeats: int) -> dict[str, Any]:
    """Measure every contender on both corpora; the result is what header.json holds."""
    runners, missing = peers.available()
    result: dict[str, Any] = {"repeats": repeats, "unavailable": missing, "corpora": {}}
    for name in common.CORPORA:
        corpus = make_corpus(root, name)
        files = [p for p in corpus.rglob("*") if p.is_file()]
        n_bytes = sum(p.stat().st_size for p in files)
        work = contenders(corpus, root / f"scratch-{name}", dict(runners))
        failed = {}
        for peer_name in list(runners):  # a peer that fails on these files is reported, not timed
            try:
                setup, job = work[peer_name]
                setup()
                job()
            except Exception as error:
                failed[peer_name] = f"{type(error).__name__}: {error}".splitlines()[0][:160]
                del work[peer_name]
        seconds = common.interleaved_medians(work, repeats)
        ours = seconds["cxr-dask"]
        result["corpora"][name] = {
            "files": len(files),
            "megabytes": n_bytes / 1e6,
            "failed": failed,
            "contenders": {
                who: {
                    "seconds": s,
                    "files_per_s": len(files) / s,
                    "mb_per_s": n_bytes / 1e6 / s,
                    "cxr_dask_ratio": s / ours,  # cxr-dask's throughput over this one's
                }
                for who, s in seconds.items()
            },
        }
        shutil.rmtree(root / f"scratch-{name}", ignore_errors=True)
    return result


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows for bench/run.py."""
    out = []
    for corpus, data in result["corpora"].items():
        for who, c in data["contenders"].items():
            ratio, target = c["cxr_dask_ratio"], TARGETS.get((corpus, who))
            if who == "cxr-dask":
                ratio = None
            elif who == PIXELS_ON:  # this row's throughput over the bare loop's
                ratio = data["contenders"]["pydicom"]["seconds"] / c["seconds"]
                target = PIXELS_ON_TARGET.get(corpus)
            out.append(
                {
                    "section": "1 core",
                    "corpus": f"{corpus} ({data['files']} files, {data['megabytes']:.0f} MB)",
                    "what": who,
                    "files_s": c["files_per_s"],
                    "mb_s": c["mb_per_s"],
                    "ratio": ratio,
                    "target": target,
                }
            )
        for who, why in {**data["failed"]}.items():
            out.append({"section": "1 core", "corpus": corpus, "what": who, "note": f"failed: {why}"})
    for who, why in result["unavailable"].items():
        out.append({"section": "1 core", "corpus": "-", "what": who, "note": f"not installable here: {why}"})
    return out
