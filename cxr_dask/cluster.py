"""Where the Dask work runs: a LocalCluster, or any existing scheduler by address."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster

from cxr_dask.config import RunConfig


@contextmanager
def connect(config: RunConfig) -> Iterator[Client]:
    """A client for the run: ``--scheduler`` if given, else a LocalCluster of processes.

    Worker processes (not threads) because pydicom and the pixel work hold the GIL.
    """
    if config.scheduler:
        with Client(config.scheduler) as client:
            yield client
        return
    # The scheduler runs in this process and would log every worker's coming and going;
    # follow the root logger's level (INFO only with --verbose).
    logging.getLogger("distributed").setLevel(max(logging.getLogger().getEffectiveLevel(), logging.INFO))
    with (
        LocalCluster(
            n_workers=config.workers,
            threads_per_worker=config.threads_per_worker,
            processes=True,
            memory_limit=config.memory_limit,
            dashboard_address=config.dashboard_address,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def total_threads(client: Client) -> int:
    """Threads across the cluster's workers (at least 1 while workers are starting)."""
    return max(1, sum(client.nthreads().values()))
