"""``cxr-dask verify``: an auditor's check of a finished dataset, independent of the de-identifier.

The package: :mod:`.vocabulary` (what identifies, how it is written), :mod:`.needles`
(the inputs' identifying values and the search), :mod:`.pixels` (screen, OCR,
containers), :mod:`.core` (the checks and the run), :mod:`.mappings` (the id mappings
for the MIDI-B validator). It imports nothing from ``cxr_dask.deid``, and builds no Dask
graph: on a cluster it runs through :mod:`cxr_dask.pipeline_verify`.
"""

from cxr_dask.verify.core import (
    Audit,
    Finding,
    Harvest,
    InProcess,
    InputRecord,
    Report,
    Runner,
    Shared,
    check_partition,
    harvest_partition,
    verify,
)
from cxr_dask.verify.needles import Needle, Needles
from cxr_dask.verify.pixels import OcrFailure, OcrSettings

__all__ = [
    "Audit",
    "Finding",
    "Harvest",
    "InProcess",
    "InputRecord",
    "Needle",
    "Needles",
    "OcrFailure",
    "OcrSettings",
    "Report",
    "Runner",
    "Shared",
    "check_partition",
    "harvest_partition",
    "verify",
]
