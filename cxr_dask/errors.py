"""Errors that carry a reason class and never a value from the input.

Messages of these exceptions end up in logs and in the audit table, so they must
never contain a header value, a path or any other PHI: only a short snake_case
reason class and, at most, a DICOM keyword or tag.
"""

from __future__ import annotations

from cxr_dask.reasons import Reason


class QuarantineError(Exception):
    """A file that cannot be fully de-identified; it is audited and never written.

    ``reason`` is a ``Reason`` (``cxr_dask.reasons``: every class the audit can hold,
    with its meaning); ``detail`` may name a DICOM keyword or tag, never a value.
    """

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ConfigError(ValueError):
    """Bad user input caught before any work starts (one clear line for the CLI)."""
