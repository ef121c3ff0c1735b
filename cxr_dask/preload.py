"""What every worker of the LocalCluster ``cxr-dask run`` starts runs before its first task.

Named in ``cluster.WORKER_PRELOAD`` (distributed's ``preload``): imported as the worker
starts, while the client is still importing and checking, and ``dask_setup`` called then.
The import itself is also what the process the workers are forked from runs once
(``workerenv.FORK_PRELOAD``): distributed and pydicom, nothing that starts a thread; and
there the passes and pyarrow too, its jemalloc's thread off (``workerenv.fork_preload``),
which ``dask_setup`` imports otherwise, in each worker.
"""

from __future__ import annotations

import sys
from typing import Any

from cxr_dask import cluster

cluster.pydicom_without_requests()  # before the passes import pydicom
# numpy's random module: distributed re-seeds it in every worker as it starts (dask's
# ``default_initializer``), which imported it there, ~10-20 ms of CPU in each forked worker
# before it can register; imported once in the process they are forked from, each only
# re-seeds (~1 ms), its own state as before.
import numpy.random  # noqa: E402, F401

# The pixel step's modules and OpenCV, which pass 2's first task imported in each worker
# (none starts a thread: tests/test_cluster.py).
from cxr_dask.deid.pixels import checks, cleaning, decoding, detection, morphology, ocr, policy  # noqa: E402, F401


def dask_setup(worker: Any) -> None:
    """Import both passes' modules now rather than at the first task; and pyarrow settles
    "no pandas" here, or the first pass-1 task imports pandas (0.3-0.5 s a worker, while
    the client waits for it) for a probe whose answer is "not pandas"."""
    from cxr_dask import pipeline  # noqa: F401

    cluster.arrow_without_pandas()


def first_uses() -> None:
    """What every worker would otherwise do at its first task, done once in the process the
    workers are forked from (``cxr_dask.frozen`` calls it there, before it freezes): pyarrow's
    probes for pandas and NumPy's masked arrays (``cluster.arrow_without_pandas``, where that
    process imported pyarrow), and the shipped tables the header profile and the free-text
    cleaning read once per process (the de-identification table, the keep-list, the defined
    terms, the type 2 requirements, the default profile, the radiology vocabulary): ~30 ms
    of CPU each worker spent on the way to its first pass-1 and pass-2 tasks
    (docs/scaling.md, "seventh round"). Only pure reads of shipped data: a run's own options
    and identifiers reach the workers later, as ever."""
    if "pyarrow" in sys.modules:
        cluster.arrow_without_pandas()
    from cxr_dask.deid import freetext, profile

    profile.load_table()
    profile.load_keep_list()
    profile.load_defined_terms()
    profile.load_type2_requirements()
    profile.get_profile()  # the default options' (``ProfileOptions()``); others are built at first use
    freetext.shipped_words()
