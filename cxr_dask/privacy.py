"""Keep header values out of logs and warnings.

pydicom's value validation warns *and logs* the offending value ("Invalid value for VR
DA: '...'"), and some of its parse errors quote raw bytes. On a de-identification worker
that would copy PHI into worker logs, so every entry point calls ``quiet_pydicom`` first:
values are still validated where it matters (the header walk decides what survives), but
never echoed.
"""

from __future__ import annotations

import logging
import warnings

import pydicom.config


def quiet_pydicom() -> None:
    """Stop pydicom from echoing header values to logs and warnings (idempotent)."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    logger = logging.getLogger("pydicom")
    logger.setLevel(logging.CRITICAL)
    logger.propagate = False
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
