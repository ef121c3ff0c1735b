"""Moved to ``cxr_dask.testing.synth_text``: this name stays until its last caller moves."""

import sys

from cxr_dask.testing import synth_text

sys.modules[__name__] = synth_text
