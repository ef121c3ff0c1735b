"""Moved to ``cxr_dask.testing.synth``: this name stays until its last caller moves."""

import sys

from cxr_dask.testing import synth

sys.modules[__name__] = synth
