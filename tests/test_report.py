"""``cxr-dask run --report FILE.html`` saves Dask's performance report of the run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cxr_dask.testing.synth import synthesize

pytestmark = pytest.mark.cluster  # the command starts its own LocalCluster


def test_report_is_dask_performance_report_of_the_run(tmp_path):
    synthesize(str(tmp_path / "raw"), patients=1, seed=2, rows=32, columns=32)
    report = tmp_path / "reports" / "run.html"
    args = [str(tmp_path / "raw"), str(tmp_path / "dataset"), "--private", str(tmp_path / "private")]
    args += ["--workers", "1", "--no-progress", "--report", str(report)]
    result = subprocess.run(
        [sys.executable, "-m", "cxr_dask.cli", "run", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"performance report: {report}" in result.stdout
    html = report.read_text()
    assert "Dask Performance Report" in html
    assert "scan_partition" in html and "deidentify_partition" in html  # both passes' tasks are in it
