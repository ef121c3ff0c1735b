"""Rebuild the cache of real public DICOM files that ``bench/pixels_real.py`` reads.

The files are not committed (images, and not ours to redistribute): they are copied from
local git mirrors of public repositories into a folder outside git, by default
``/work/cache/real-dicom``. Sources:

- ``robyoung/dicom-test-files`` (the NEMA WG04 compression test set: CT, MR, NM, RG, SC,
  US, XA; the lossless JPEG-LS copies, one per image), mirrored at
  ``/work/.mirror/robyoung+dicom-test-files/repo`` (a bare git directory).
- ``microsoft/presidio`` (MIT; the image redactor's test films, from the TCIA
  Pseudo-PHI-DICOM set: chest films with a fake name, dates and markers burned in, ECG
  leads on one): the two DICOM files the snapshot holds (an RLE CR film, MONOCHROME1, and a
  CT scout) as they are, and two 8-bit PNG films wrapped into secondary-capture DICOM
  (their DICOM originals are too large for the snapshot).
- The test files of three DICOM toolkits, as they are: ``fo-dicom/fo-dicom`` (MS-PL),
  ``cornerstonejs/dicomParser`` (MIT), ``ivmartel/dwv`` (GPL-3.0): CT, MR, NM, CR, US,
  RT, mammography and a few synthetic patterns, in many transfer syntaxes.
- Chest films, wrapped into secondary-capture DICOM: ``mlmed/torchxrayvision``'s test
  images (Apache-2.0; NIH ChestX-ray14, TBX11K, a COVID-19 case) and its two RSNA DICOM
  files; ``agchung/Figure1-COVID-chestxray-dataset`` and
  ``agchung/Actualmed-COVID-chestxray-dataset`` (portable and computed radiography
  films with side markers, positioning words and unit codes burned in; the snapshot
  leaves out the largest files); ``ml-workgroup/covid-19-image-repository`` (CC BY 3.0;
  Hannover Medical School's bedside films of COVID-19 patients, 640 pixels wide: ECG
  leads, lines, tubes, side markers and a few positioning words).

A source that is absent is reported and skipped; the script never downloads anything.

Held-out sets (``--holdout DIR``, default ``/work/cache/holdout``; not read by the bench,
checked with an independent OCR before and after cleaning, see ``docs/pixels.md``): seeded
samples (``HOLDOUT_SEED``) of ``muhammedtalo/COVID-19`` (COVID-19 films from papers with
panel letters and arrows, NIH ChestX-ray14 films with markers), of ``armiro/COVID-CXNet``
(COVID-19 films from papers and hospitals) and the DICOM files of
``orthanc-mirrors/orthanc-tests`` (MR, CT, PET, an ultrasound, secondary captures, SMPTE
test patterns; at most 12 slices of a series).

    python bench/fetch_real.py [--cache DIR] [--mirrors DIR] [--holdout DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

DEFAULT_CACHE = Path("/work/cache/real-dicom")
DEFAULT_MIRRORS = Path("/work/.mirror")

#: (mirror folder, path prefix inside the repository, cache sub-folder): every DICOM file
#: under the prefix, named by its path below it ("/" as "__")
SOURCES = [
    ("robyoung+dicom-test-files", "data/WG04/JLSL/", "wg04"),
    ("fo-dicom+fo-dicom", "Tests/FO-DICOM.Tests/Test Data/", "fodicom"),
    ("cornerstonejs+dicomParser", "testImages/", "dicomparser"),
    ("ivmartel+dwv", "tests/", "dwv"),
    ("mlmed+torchxrayvision", "tests/", "txv"),
]
#: (mirror folder, path prefix, cache sub-folder): every PNG or JPEG under the prefix,
#: wrapped into secondary-capture DICOM
FILMS = [
    ("mlmed+torchxrayvision", "tests/", "txv-films"),
    ("agchung+Figure1-COVID-chestxray-dataset", "images/", "figure1"),
    ("agchung+Actualmed-COVID-chestxray-dataset", "images/", "actualmed"),
    ("ml-workgroup+covid-19-image-repository", "png/", "mhh"),
]
#: (mirror folder, file inside the repository, cache sub-folder, file name): copied as they are
_PRESIDIO = "presidio-image-redactor/tests/test_data/"
FILES = [
    ("microsoft+presidio", _PRESIDIO + "0_ORIGINAL_compressed.dcm", "presidio", "0_ORIGINAL.dcm"),
    ("microsoft+presidio", "docs/samples/python/sample_data/2_ORIGINAL.dcm", "presidio", "2_ORIGINAL.dcm"),
]
#: ... and 8-bit greyscale PNGs wrapped into secondary-capture DICOM
PNGS = [
    ("microsoft+presidio", _PRESIDIO + "png_images/1_ORIGINAL.png", "presidio", "1_ORIGINAL_png.dcm"),
    ("microsoft+presidio", _PRESIDIO + "png_images/3_ORIGINAL.png", "presidio", "3_ORIGINAL_png.dcm"),
]


DEFAULT_HOLDOUT = Path("/work/cache/holdout")
HOLDOUT_SEED = 11
#: held-out set -> (mirror folder, folder inside the repository, how many films to draw)
HOLDOUT_FILMS = {
    "talo": [
        ("muhammedtalo+COVID-19", "X-Ray Image DataSet/Covid-19/", 90),
        ("muhammedtalo+COVID-19", "X-Ray Image DataSet/No_findings/", 30),
        ("muhammedtalo+COVID-19", "X-Ray Image DataSet/Pneumonia/", 30),
    ],
    "cxnet": [("armiro+COVID-CXNet", "chest_xray_images/covid19/", 120)],
}
#: (mirror folder, prefix, folders whose files are slices of one series) -> holdout "orthanc"
ORTHANC = ("orthanc-mirrors+orthanc-tests", "Database/", ("Knee", "Brainix", "Knix"))


def holdout(target: Path, mirrors: Path) -> dict[str, int]:
    """The held-out samples, drawn with ``HOLDOUT_SEED`` (the same files on every run):
    films wrapped as the bench's (named category_stem), DICOM files as they are."""
    import random

    copied: dict[str, int] = {}
    for held_out, draws in HOLDOUT_FILMS.items():
        repo = _mirror(mirrors, draws[0][0], f"holdout {held_out}")
        if repo is None:
            continue
        rng = random.Random(HOLDOUT_SEED)
        for _, prefix, count in draws:
            names = sorted(n for n in _names(repo, prefix) if _is_film(n))
            for name in rng.sample(names, min(count, len(names))):
                out = target / held_out / f"{Path(prefix).name}_{Path(name).stem}.dcm"
                copied[held_out] = copied.get(held_out, 0) + _write(repo, name, out, films=True)
    mirror, prefix, series_folders = ORTHANC
    repo = _mirror(mirrors, mirror, "holdout orthanc")
    if repo is not None:
        rng = random.Random(HOLDOUT_SEED)
        series: dict[str, list[str]] = {}
        for name in _names(repo, prefix):
            if not name.startswith(prefix + "Worklists/"):
                folder = name.split("/")[1]
                series.setdefault(folder if folder in series_folders else name, []).append(name)
        for _, members in sorted(series.items()):
            for name in rng.sample(sorted(members), 12) if len(members) > 12 else members:
                out = target / "orthanc" / name[len(prefix) :].replace("/", "__")
                copied["orthanc"] = copied.get("orthanc", 0) + _write(repo, name, out, films=False)
    print(f"holdout: {copied} into {target}")
    return copied


def _mirror(mirrors: Path, mirror: str, what: str) -> Path | None:
    """A mirror's bare git directory, or None (said on stderr) when it is absent."""
    repo = mirrors / mirror / "repo"
    if repo.exists():
        return repo
    print(f"source absent: {mirror} (mirror it first, e.g. the fetch tool); {what} skipped", file=sys.stderr)
    return None


def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(repo), *args], capture_output=True, check=True).stdout


def _names(repo: Path, prefix: str) -> list[str]:
    return _git(repo, "ls-tree", "-r", "-z", "--name-only", "HEAD", prefix).decode().split("\0")[:-1]


def _is_film(name: str) -> bool:
    return name.lower().endswith((".png", ".jpg", ".jpeg"))


def _show(repo: Path, name: str) -> bytes | None:
    """A file's bytes, or None when the snapshot left it out."""
    try:
        return _git(repo, "show", f"HEAD:{name}")
    except subprocess.CalledProcessError:
        return None


def _write(repo: Path, name: str, out: Path, films: bool) -> int:
    """Write one file of the mirror to ``out``: with ``films`` a PNG or JPEG wrapped into
    DICOM, else a DICOM file as it is; 1 if written, 0 if the snapshot left it out or it
    is not what was asked for (a README, an LFS pointer)."""
    data = _show(repo, name)
    if data is None:
        return 0
    if films and data.startswith((b"\x89PNG", b"\xff\xd8")):
        data = _wrap_png(data)
    elif films or data[128:132] != b"DICM":
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return 1


def _copy(repo: Path, prefix: str, target: Path, films: bool) -> int:
    """Every DICOM file under ``prefix`` as it is (named by its path below it, "/" as
    "__"), or with ``films`` every PNG or JPEG wrapped (named by its stem, which the
    labels use; by its path when two films share a stem); how many."""
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    written: set[str] = set()
    for name in _names(repo, prefix):
        if films and not _is_film(name):
            continue
        out = name[len(prefix) :].replace("/", "__")
        if films:
            out = Path(name).stem + ".dcm"
            if out in written:  # another film of this stem: never overwrite it
                out = name[len(prefix) :].replace("/", "__") + ".dcm"
        wrote = _write(repo, name, target / out, films)
        if wrote and films:
            written.add(out)
        count += wrote
    return count


def fetch(cache: Path, mirrors: Path) -> dict[str, int]:
    """Copy every source file present into ``cache``; the number copied per source."""
    copied: dict[str, int] = {}
    for mirror, prefix, folder in SOURCES + FILMS:
        repo = _mirror(mirrors, mirror, folder)
        if repo is None:
            continue
        count = _copy(repo, prefix, cache / folder, films=(mirror, prefix, folder) in FILMS)
        copied[f"{mirror} {folder}"] = count
        print(f"{mirror}: {count} files into {cache / folder}")
    for mirror, name, folder, out in FILES + PNGS:
        repo = _mirror(mirrors, mirror, name)
        if repo is None:
            continue
        data = _show(repo, name)
        if data is None:
            print(f"absent from the mirror: {name}", file=sys.stderr)
            continue
        if (data[128:132] != b"DICM") if name.endswith(".dcm") else not data.startswith(b"\x89PNG"):
            print(f"not the expected file (LFS pointer?): {name}", file=sys.stderr)
            continue
        target = cache / folder
        target.mkdir(parents=True, exist_ok=True)
        (target / out).write_bytes(data if name.endswith(".dcm") else _wrap_png(data))
        copied[mirror] = copied.get(mirror, 0) + 1
        print(f"{mirror}: {name} into {target / out}")
    return copied


def _wrap_png(data: bytes) -> bytes:
    """A PNG or JPEG as an uncompressed greyscale secondary-capture DICOM file
    (MONOCHROME2; 16 bits when the PNG has them, else 8), one patient and study of its
    own (ids derived from its bytes), so ``cxr-dask run`` and ``verify`` take it too."""
    import hashlib
    import io

    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    image = Image.open(io.BytesIO(data))
    if image.mode in ("I;16", "I;16B", "I"):
        arr = np.asarray(image).astype(np.uint16)
    else:
        arr = np.asarray(image.convert("L"), dtype=np.uint8)
    bits = arr.dtype.itemsize * 8
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    digest = hashlib.sha256(data).hexdigest()  # a PNG's first bytes are the same for one size
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[digest])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study", digest])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["series", digest])
    tag = ds.SOPInstanceUID[-8:]
    ds.PatientName, ds.PatientID, ds.AccessionNumber = f"FILM^{tag}", f"FILM{tag}", f"ACC{tag}"
    ds.StudyDate = ds.SeriesDate = "20200401"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = arr.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--mirrors", type=Path, default=DEFAULT_MIRRORS)
    parser.add_argument("--holdout", type=Path, nargs="?", const=DEFAULT_HOLDOUT, help="draw the held-out sets here")
    args = parser.parse_args()
    if args.holdout:
        holdout(args.holdout, args.mirrors)
        return
    fetch(args.cache, args.mirrors)


if __name__ == "__main__":
    main()
