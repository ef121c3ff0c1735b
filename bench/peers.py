"""The peer de-identifiers, each doing its default anonymization of one file, then a write.

Installed by the ``bench`` extra from PyPI. A peer that cannot be imported here is
reported as unavailable (with the reason) rather than silently left out of the table.
Each runner takes ``(source path, target path)``: read, anonymize with the tool's
defaults, write; exactly the loop the bare pydicom floor runs, plus the tool's work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pydicom

Runner = Callable[[Path, Path], None]


def _dicognito() -> Runner:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()

    def run(source: Path, target: Path) -> None:
        ds = pydicom.dcmread(source)
        anonymizer.anonymize(ds)
        ds.save_as(target)

    return run


def _deid() -> Runner:
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers
    from deid.logger import bot

    bot.level = 0  # its per-file progress lines would dominate small files
    recipe = DeidRecipe()  # the default "dicom" recipe

    def run(source: Path, target: Path) -> None:
        # save=False, then save_as: deid's own save names outputs by basename only
        (ds,) = replace_identifiers([str(source)], deid=recipe, save=False)
        ds.save_as(target)

    return run


def _dicom_anonymizer() -> Runner:
    from dicomanonymizer.simpledicomanonymizer import anonymize_dicom_file

    def run(source: Path, target: Path) -> None:
        anonymize_dicom_file(str(source), str(target))

    return run


PEERS: dict[str, Callable[[], Runner]] = {
    "dicognito": _dicognito,
    "deid": _deid,
    "dicom-anonymizer": _dicom_anonymizer,
}


def available() -> tuple[dict[str, Runner], dict[str, str]]:
    """Runners for the peers that import, and a one-line reason for each that does not."""
    runners, missing = {}, {}
    logging.getLogger("dicognito").setLevel(logging.ERROR)
    for name, make in PEERS.items():
        try:
            runners[name] = make()
        except Exception as error:  # ImportError, or a peer broken on this Python/pydicom
            missing[name] = f"{type(error).__name__}: {error}".splitlines()[0][:160]
    return runners, missing
