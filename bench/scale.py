"""Archive scale without a cluster: 400,000 inventory rows in MIMIC-CXR's proportions.

Measures, on the client: minting the identity map (``identity.extend``) in seconds and
peak memory, the map's own bytes (``KeyTable.nbytes``) and pickled size (what each worker
holds; a run's workers read it from the crosswalk in PRIVATE, so the client sends only
the pickled ``CrosswalkLoader``, also measured), and the tasks of the pass-1 and pass-2
graphs for 400,000 keys with the default partitioning (before and after dask's own
optimisation). Run alone it prints its numbers: ``python bench/scale.py``.
"""

from __future__ import annotations

import gc
import pickle
import time
import tracemalloc
from pathlib import Path
from typing import Any

import dask
import pyarrow as pa
from dask._task_spec import Alias

from cxr_dask import identity, pipeline
from cxr_dask.broadcast import CrosswalkLoader, IdentityPlugin, IdentityRef
from cxr_dask.config import RunConfig
from cxr_dask.journal import RunJournal
from cxr_dask.storage import Location
from cxr_dask.testing.synth import inventory_table

N_KEYS = 400_000
#: Threads of the cluster the default partitioning is computed for (MIMIC-CXR plan).
CLUSTER_THREADS = 64


def _graph_tasks(bag) -> tuple[int, int]:
    (optimised,) = dask.optimize(bag)
    graph = dict(optimised.__dask_graph__())
    return len(bag.__dask_graph__()), sum(not isinstance(t, Alias) for t in graph.values())


def run(root: Path | None = None, repeats: int = 1) -> dict[str, Any]:
    del root, repeats  # needs no files; one measurement (seconds, not a micro-benchmark)
    started = time.perf_counter()
    table = inventory_table(N_KEYS, seed=3)
    table_seconds = time.perf_counter() - started

    gc.collect()
    arrow_before = pa.total_allocated_bytes()
    tracemalloc.start()
    started = time.perf_counter()
    ident = identity.extend(identity.IdentityMap(uid_key=b"bench-secret-0123456789"), table)
    traced_seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the map's Arrow columns are allocated by Arrow's pool, which tracemalloc does not see
    arrow_held = pa.total_allocated_bytes() - arrow_before
    # tracemalloc slows allocation down: time it again without
    started = time.perf_counter()
    identity.extend(identity.IdentityMap(uid_key=b"bench-secret-0123456789"), table)
    seconds = time.perf_counter() - started

    started = time.perf_counter()
    broadcast = pickle.dumps(ident, protocol=5)
    pickle_seconds = time.perf_counter() - started
    tables = (ident.patients, ident.first_dates, ident.studies, ident.images)
    map_bytes = sum(table.nbytes for table in tables if isinstance(table, identity.KeyTable))
    loader = CrosswalkLoader(Location("/nonexistent/private"), b"bench-secret-0123456789", None)
    plugin = IdentityPlugin("cxr-dask-identity-0123456789abcdef0123456789abcdef", loader)

    config = RunConfig(input="/nonexistent/in", output="/nonexistent/out", private="/nonexistent/private")
    partition_size = config.partition_size_for(N_KEYS, CLUSTER_THREADS)
    keys = table.column("key").to_pylist()
    files = [(key, 15_000_000) for key in keys]
    items = list(enumerate(keys))
    started = time.perf_counter()
    scan = pipeline.scan_bag(
        config, pipeline.scan_items(files), partition_size, RunJournal(config.private_location, "run")
    )
    deidentify = pipeline.deidentify_bag(
        config, items, IdentityRef("identity"), partition_size, RunJournal(config.private_location, "run")
    )
    graph_seconds = time.perf_counter() - started
    (scan_built, scan_tasks), (deid_built, deid_tasks) = _graph_tasks(scan), _graph_tasks(deidentify)
    return {
        "rows": N_KEYS,
        "patients": len(ident.patients),
        "studies": len(ident.studies),
        "inventory_table_mb": table.nbytes / 1e6,
        "inventory_table_seconds": table_seconds,
        "extend_seconds": seconds,
        "extend_seconds_traced": traced_seconds,
        "extend_peak_mb": (peak + arrow_held) / 1e6,
        "extend_python_peak_mb": peak / 1e6,
        "extend_arrow_held_mb": arrow_held / 1e6,
        "broadcast_mb": len(broadcast) / 1e6,
        "identity_map_mb": map_bytes / 1e6,
        "identity_map_bytes_per_image": map_bytes / N_KEYS,
        "plugin_bytes": len(pickle.dumps(plugin, protocol=5)),
        "pickle_seconds": pickle_seconds,
        "cluster_threads": CLUSTER_THREADS,
        "partition_size": partition_size,
        "graph_build_seconds": graph_seconds,
        "pass1_graph_keys": scan_built,
        "pass1_tasks": scan_tasks,
        "pass2_graph_keys": deid_built,
        "pass2_tasks": deid_tasks,
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    corpus = f"{result['rows']:,} keys"
    return [
        {
            "section": "400k",
            "corpus": corpus,
            "what": "identity map: seconds",
            "value": result["extend_seconds"],
            "limit": 60,
        },
        {
            "section": "400k",
            "corpus": corpus,
            "what": "identity map: peak MB (traced + Arrow)",
            "value": result["extend_peak_mb"],
            "limit": 2000,
        },
        {"section": "400k", "corpus": corpus, "what": "identity map: MB pickled", "value": result["broadcast_mb"]},
        {
            "section": "400k",
            "corpus": corpus,
            "what": "the client's broadcast (the crosswalk's location): bytes",
            "value": result.get("plugin_bytes", "-"),
        },
        {
            "section": "400k",
            "corpus": corpus,
            "what": "pass-1 graph: keys / tasks",
            "value": f"{result['pass1_graph_keys']} / {result['pass1_tasks']}",
            "limit": 4000,
        },
        {
            "section": "400k",
            "corpus": corpus,
            "what": "pass-2 graph: keys / tasks",
            "value": f"{result['pass2_graph_keys']} / {result['pass2_tasks']}",
            "limit": 4000,
        },
    ]


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
