"""What every worker of the LocalCluster ``cxr-dask run`` starts runs before its first task.

Named in ``cluster.WORKER_PRELOAD`` (distributed's ``preload``): imported as the worker
starts, while the client is still importing and checking, and ``dask_setup`` called then.
The import itself is also what the process the workers are forked from runs once
(``workerenv.FORK_PRELOAD``): distributed and pydicom, nothing that starts a thread; and
there the passes and pyarrow too, its jemalloc's thread off (``workerenv.fork_preload``),
which ``dask_setup`` imports otherwise, in each worker.
"""

from __future__ import annotations

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
