"""Rebuild the cache of real public DICOM files that ``bench/pixels_real.py`` reads.

The files are not committed (images, and not ours to redistribute): they are copied from
local git mirrors of public repositories into a folder outside git, by default
``/work/cache/real-dicom``. Sources:

- ``robyoung/dicom-test-files`` (the NEMA WG04 compression test set: CT, MR, NM, RG, SC,
  US, XA; the lossless JPEG-LS copies, one per image), mirrored at
  ``/work/.mirror/robyoung+dicom-test-files/repo`` (a bare git directory).

A source that is absent is reported and skipped; the script never downloads anything.

    python bench/fetch_real.py [--cache DIR] [--mirrors DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

DEFAULT_CACHE = Path("/work/cache/real-dicom")
DEFAULT_MIRRORS = Path("/work/.mirror")

#: (mirror folder, path prefix inside the repository, cache sub-folder)
SOURCES = [("robyoung+dicom-test-files", "data/WG04/JLSL/", "wg04")]


def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(repo), *args], capture_output=True, check=True).stdout


def fetch(cache: Path, mirrors: Path) -> dict[str, int]:
    """Copy every source file present into ``cache``; the number copied per source."""
    copied: dict[str, int] = {}
    for mirror, prefix, folder in SOURCES:
        repo = mirrors / mirror / "repo"
        if not repo.exists():
            print(f"source absent: {mirror} (mirror it first, e.g. the fetch tool); skipped", file=sys.stderr)
            continue
        names = _git(repo, "ls-tree", "-r", "--name-only", "HEAD", prefix).decode().split()
        target = cache / folder
        target.mkdir(parents=True, exist_ok=True)
        count = 0
        for name in names:
            try:
                data = _git(repo, "show", f"HEAD:{name}")
            except subprocess.CalledProcessError:
                print(f"absent from the mirror: {name}", file=sys.stderr)
                continue
            if data[128:132] != b"DICM":
                print(f"not a DICOM file (LFS pointer?): {name}", file=sys.stderr)
                continue
            (target / Path(name).name).write_bytes(data)
            count += 1
        copied[mirror] = count
        print(f"{mirror}: {count} files into {target}")
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--mirrors", type=Path, default=DEFAULT_MIRRORS)
    args = parser.parse_args()
    fetch(args.cache, args.mirrors)


if __name__ == "__main__":
    main()
