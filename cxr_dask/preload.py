"""What every worker of the LocalCluster ``cxr-dask run`` starts runs before its first task.

Named in ``cluster.WORKER_PRELOAD`` (distributed's ``preload``): imported as the worker
starts, while the client is still importing and checking, and ``dask_setup`` called then.
"""

from __future__ import annotations

from typing import Any

from cxr_dask import cluster

cluster.pydicom_without_requests()  # before the passes import pydicom
from cxr_dask import pipeline as pipeline  # noqa: E402  (both passes' modules, imported now rather than at the first task)


def dask_setup(worker: Any) -> None:
    """pyarrow settles "no pandas" here, or the first pass-1 task imports pandas (0.3-0.5 s
    a worker, while the client waits for it) for a probe whose answer is "not pandas"."""
    cluster.arrow_without_pandas()
