"""pydicom is quiet while cxr-dask works, and as it was before once it is done."""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import pydicom
import pydicom.config
import pytest
from distributed import Client
from dx_header import make_dx, to_bytes

from cxr_dask import cluster, inventory
from cxr_dask.config import RunConfig
from cxr_dask.privacy import quiet_pydicom
from cxr_dask.storage import Location

BAD_DATE = "19xx0316"


def _settings() -> tuple[object, ...]:
    logger = logging.getLogger("pydicom")
    return (
        pydicom.config.settings.reading_validation_mode,
        pydicom.config.settings.writing_validation_mode,
        logger.level,
        logger.propagate,
        len(warnings.filters),
    )


def _echoes(action, caplog: pytest.LogCaptureFixture) -> list[str]:
    """What ``action`` lets pydicom say, in warnings and log records."""
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG, logger="pydicom"):
        warnings.simplefilter("always")
        action()
    return [str(w.message) for w in caught] + [record.getMessage() for record in caplog.records]


def _set_bad_date() -> None:
    pydicom.dataset.Dataset().add_new(0x00100030, "DA", BAD_DATE)


@pytest.fixture
def pydicom_defaults():
    """pydicom as a notebook has it: values validated with a warning, logs propagated."""
    logger = logging.getLogger("pydicom")
    saved = _settings()
    pydicom.config.settings.reading_validation_mode = pydicom.config.WARN
    pydicom.config.settings.writing_validation_mode = pydicom.config.WARN
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    yield
    pydicom.config.settings.reading_validation_mode, pydicom.config.settings.writing_validation_mode = saved[:2]
    logger.setLevel(saved[2])
    logger.propagate = saved[3]


def test_the_block_silences_pydicom_and_restores_it(pydicom_defaults, caplog) -> None:
    before = _settings()
    assert any(BAD_DATE in message for message in _echoes(_set_bad_date, caplog))  # the probe can fail
    with quiet_pydicom():
        assert _echoes(_set_bad_date, caplog) == []
        with quiet_pydicom():  # nested: still quiet after the inner block
            pass
        assert _echoes(_set_bad_date, caplog) == []
    assert _settings() == before
    assert any(BAD_DATE in message for message in _echoes(_set_bad_date, caplog))


def test_threads_share_one_block_the_last_to_leave_restores(pydicom_defaults) -> None:
    before = _settings()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[int] = []

    def first() -> None:
        with quiet_pydicom():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with quiet_pydicom():
            second_in.set()
            first_out.wait(5)
            seen.append(pydicom.config.settings.reading_validation_mode)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [pydicom.config.IGNORE]  # the first thread left, the second was still quiet
    assert _settings() == before


def test_a_per_file_function_called_in_a_notebook_leaves_pydicom_as_it_was(
    pydicom_defaults, caplog, tmp_path: Path
) -> None:
    """``scan_file`` over a file whose name is PHI: not in pydicom's log, settings back."""
    with quiet_pydicom():
        data = to_bytes(make_dx())
    name = "DOE_JOHN_MRN99887766.dcm"
    (tmp_path / name).write_bytes(data)
    reading = lambda: pydicom.dcmread(tmp_path / name)  # noqa: E731
    assert any(name in message for message in _echoes(reading, caplog))  # the probe can fail
    before = _settings()
    scan = lambda: inventory.scan_file(Location(str(tmp_path)), name, 0, len(data))  # noqa: E731
    assert not any(name in message for message in _echoes(scan, caplog))
    assert _settings() == before


def _worker_mode() -> int:
    return pydicom.config.settings.reading_validation_mode


def test_a_run_s_cluster_keeps_its_workers_quiet_and_gives_them_back(client: Client) -> None:
    """``cluster.Starting`` on a given scheduler: quiet workers while held, as before after."""
    before = client.run(_worker_mode)
    config = RunConfig(input="in", output="out", private="private", scheduler=client.scheduler.address)
    with cluster.Starting(config) as starting:
        assert set(starting.client().run(_worker_mode).values()) == {pydicom.config.IGNORE}
    assert client.run(_worker_mode) == before


_NOTEBOOK = """
import importlib, json, logging, pkgutil, sys, warnings
import pydicom.config

def settings():
    logger = logging.getLogger("pydicom")
    return [
        pydicom.config.settings.reading_validation_mode,
        pydicom.config.settings.writing_validation_mode,
        logger.level,
        logger.propagate,
        sum("pydicom" in repr(f) for f in warnings.filters),  # other libraries add their own
    ]

before = settings()
import cxr_dask
for module in pkgutil.walk_packages(cxr_dask.__path__, "cxr_dask."):
    importlib.import_module(module.name)
imported = settings()
from cxr_dask.testing.synth import synthesize
synthesize(sys.argv[1], patients=1, rows=32, columns=32)
print(json.dumps([before, imported, settings()]))
"""


def test_a_notebook_importing_every_module_and_synthesizing_finds_pydicom_as_it_was(tmp_path: Path) -> None:
    """No module switches pydicom off when imported, nor does the synthetic corpus after it
    is written (its block ends): a fresh interpreter, as a notebook's kernel is."""
    import json
    import subprocess
    import sys

    script = tmp_path / "notebook.py"
    script.write_text(_NOTEBOOK)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "corpus")], capture_output=True, text=True, check=True
    )
    before, imported, synthesized = json.loads(done.stdout.strip().splitlines()[-1])
    assert before[0] == pydicom.config.WARN  # pydicom's own default: the probe can fail
    assert imported == before
    assert synthesized == before
    assert any((tmp_path / "corpus").rglob("*.dcm"))
