"""``verify``'s Dask graphs: its reads of INPUT and OUTPUT as bag tasks on a cluster.

The checks themselves are plain functions in :mod:`cxr_dask.verify` (testable without a
cluster); this module only cuts their keys into tasks. The needles, crosswalk and input
records reach each worker once through the pipeline's worker-plugin broadcast
(:mod:`cxr_dask.broadcast`), and only findings, notes and id relations come back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import dask.bag as db
from distributed import Client

from cxr_dask import cluster
from cxr_dask.broadcast import broadcast_identity
from cxr_dask.config import ClusterSettings
from cxr_dask.storage import Location
from cxr_dask.verify import Audit, Harvest, OcrSettings, Report, Shared, check_partition, harvest_partition, verify
from cxr_dask.verify.core import DEFAULT_OCR


class OnCluster:
    """``verify``'s runner on a Dask cluster: bag tasks of ``partition_size`` keys each."""

    def __init__(self, client: Client, partition_size: int = 100) -> None:
        self.client = client
        self.partition_size = partition_size

    def harvest(self, items: list[tuple[int, str, int]], source: Location) -> list[Harvest]:
        bag = db.from_sequence(items, partition_size=self.partition_size)
        result: list[Harvest] = self.client.compute(bag.map_partitions(_as_list(harvest_partition), source)).result()
        return result

    def check(self, keys: list[str], output: Location, shared: Shared) -> list[Audit]:
        # The pipeline's worker plugin: each worker gets the bundle once, and so does a
        # worker that joins or restarts later (a scattered future would be lost with it).
        with broadcast_identity(self.client, shared) as ref:
            bag = db.from_sequence(keys, partition_size=self.partition_size)
            graph = bag.map_partitions(_as_list(check_partition), output, ref)
            result: list[Audit] = self.client.compute(graph).result()
        return result


def verify_on(
    client: Client,
    source: Location,
    output: Location,
    private: Location,
    ocr: OcrSettings | None = DEFAULT_OCR,
    partition_size: int = 100,
) -> Report:
    """``verify`` with its reads on ``client``'s cluster, in tasks of ``partition_size`` keys."""
    return verify(source, output, private, ocr=ocr, runner=OnCluster(client, partition_size))


def verify_on_cluster(
    settings: ClusterSettings,
    source: Location,
    output: Location,
    private: Location,
    ocr: OcrSettings | None = DEFAULT_OCR,
    partition_size: int = 100,
) -> Report:
    """``verify_on`` a cluster started (or reached, ``settings.scheduler``) for the block."""
    with cluster.connect(settings) as client:
        return verify_on(client, source, output, private, ocr=ocr, partition_size=partition_size)


def _as_list(function: Callable[..., object]) -> Callable[..., list[object]]:
    """A partition function whose one result becomes the partition's only element."""
    return functools.partial(_one_element, function)


def _one_element(function: Callable[..., object], *args: object) -> list[object]:
    return [function(*args)]
