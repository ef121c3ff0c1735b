"""Burned-in text on real files from registry packages (deid-data, pydicom's test files).

A real text-free radiograph keeps its pixel bytes; deid-data's greyscale ultrasound has
its PHI line (the top banner: name, id, date, time) blacked out, and nothing below it.
"""

from __future__ import annotations

from pathlib import Path

import deid_data
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from cxr_dask.deid import pixels
from cxr_dask.deid.rules import PixelOptions

DEID_DATA = Path(deid_data.__file__).parent / "data"


def _clean(path: Path | str):
    ds = pydicom.dcmread(path)
    return ds, pixels.clean(ds, PixelOptions())


def test_deid_data_ultrasound_phi_banner_is_removed():
    ds, result = _clean(DEID_DATA / "ultrasounds" / "GREYSCALE_IMAGE.dcm")
    assert result.array is not None and result.report.count("text") >= 1
    before, after = ds.pixel_array, result.array
    banner = (slice(0, 22), slice(0, 1024))  # the top line of the banner: the PHI
    lit = before[banner] > 128
    assert lit.sum() > 500, "the banner must carry text in the input"
    assert (after[banner][lit] == 0).mean() > 0.95
    # nothing blanked in the scan field below the annotation column
    field = (slice(200, 690), slice(130, 890))
    assert np.array_equal(before[field], after[field])


@pytest.mark.parametrize(
    "path",
    [
        DEID_DATA / "animals" / "cat.dcm",  # a lateral radiograph with a side marker only
        get_testdata_file("CT_small.dcm"),
        get_testdata_file("MR_small.dcm"),
    ],
    ids=["cat_radiograph", "CT_small", "MR_small"],
)
def test_real_text_free_images_keep_their_pixels(path):
    _, result = _clean(path)
    assert result.array is None, [(r.box, r.kind, r.why) for r in result.report.regions]
    assert result.report.count("text") == 0


def test_deid_data_ultrasound_probe_marker_stays_and_its_settings_column_goes():
    """The probe's "P" mark beside the settings column was clipped by a junk read on the
    column's line; the recogniser reads that box as no text, so it stays."""
    ds, result = _clean(DEID_DATA / "ultrasounds" / "GREYSCALE_IMAGE.dcm")
    before, after = ds.pixel_array, result.array
    marker = (slice(92, 118), slice(100, 126))
    assert (before[marker] > 128).sum() > 20, "the marker must be there in the input"
    assert np.array_equal(before[marker], after[marker])
    column = (slice(138, 258), slice(12, 100))  # 60%, Dyn R 58, P Med, Res, TAC1
    lit = before[column] > 128
    assert (after[column][lit] == 0).mean() > 0.9
