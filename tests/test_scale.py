"""Archive scale without a cluster: 400,000 inventory rows, MIMIC-CXR proportions.

Counts only (never times): the identity map mints one id per patient, study and image,
all distinct; the map the client broadcasts stays a few tens of MB; and each pass's
graph stays at a few thousand tasks with the default partitioning, so the scheduler
is not what limits a run at this size. ``bench/scale.py`` reports the seconds and memory.
"""

from __future__ import annotations

import pickle

import dask
import pyarrow.compute as pc
import pytest
from dask._task_spec import Alias

from cxr_dask import identity as ident
from cxr_dask import pipeline
from cxr_dask.broadcast import IdentityRef
from cxr_dask.config import RunConfig
from cxr_dask.journal import RunJournal
from cxr_dask.testing.synth import inventory_table

N_KEYS = 400_000
MAX_TASKS = 4_000


@pytest.fixture(scope="module")
def table():
    return inventory_table(N_KEYS, seed=3)


def test_identity_map_for_400k_rows_mints_every_id_once(table):
    identity = ident.extend(ident.IdentityMap(uid_key=b"scale-test-secret-0123456789"), table)
    n_patients = pc.count_distinct(table.column("patient_id")).as_py()
    n_studies = pc.count_distinct(table.column("accession_number")).as_py()
    assert (len(identity.patients), len(identity.studies), len(identity.images)) == (n_patients, n_studies, N_KEYS)
    assert n_patients > 60_000 and n_studies > 200_000  # MIMIC-CXR's shape, not a toy
    assert len({s for s, _ in identity.patients.values()}) == n_patients
    assert len({st for _, st in identity.studies.values()}) == n_studies
    assert len({d for d, _, _ in identity.images.values()}) == N_KEYS
    # every image points at its own study's ids
    sop = table.column("sop_instance_uid")[12345].as_py()
    _, subject, study = identity.images[sop]
    assert subject in {s for s, _ in identity.patients.values()}
    assert study in {st for _, st in identity.studies.values()}
    broadcast = len(pickle.dumps(identity, protocol=5))
    assert broadcast < 100 * 2**20, broadcast  # sent once per worker, not per task


def _tasks(bag) -> tuple[int, int]:
    """(keys in the graph as built, executable tasks after the bag's own optimisation)."""
    (optimised,) = dask.optimize(bag)
    graph = dict(optimised.__dask_graph__())
    return len(bag.__dask_graph__()), sum(not isinstance(task, Alias) for task in graph.values())


@pytest.mark.parametrize("threads", [2, 128])
def test_pass_graphs_for_400k_keys_stay_small(tmp_path, threads):
    config = RunConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), private=str(tmp_path / "private"))
    files = [(f"p{i // 6:06d}/s{i // 2:07d}/{i:07d}.dcm", 15_000_000) for i in range(N_KEYS)]
    partition_size = config.partition_size_for(N_KEYS, threads)
    scan = pipeline.scan_bag(
        config, pipeline.scan_items(files), partition_size, RunJournal(config.private_location, "run")
    )
    # the real run passes the broadcast's name (an IdentityRef), as here
    items = [(index, key) for index, (key, _) in enumerate(files)]
    deidentify = pipeline.deidentify_bag(
        config, items, IdentityRef("identity"), partition_size, RunJournal(config.private_location, "run")
    )
    for bag in (scan, deidentify):
        built, executed = _tasks(bag)
        assert bag.npartitions * partition_size >= N_KEYS
        assert built <= MAX_TASKS, built
        assert executed == bag.npartitions <= MAX_TASKS // 2
