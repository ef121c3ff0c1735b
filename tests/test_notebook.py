"""The dashboard notebook runs top to bottom, and is stored without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "01-dashboard-run.ipynb"


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.cluster  # the notebook starts its own LocalCluster
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_DASK_NOTEBOOK_WORKDIR", str(tmp_path))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "dashboard: http://" in text
    assert "written" in text and "quarantined  0" in text
    html = "\n".join(
        o.get("data", {}).get("text/html", "") for o in outputs if o.output_type in {"execute_result", "display_data"}
    )
    assert "subject_id" in html and "study_id" in html  # the pandas tables
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the before/after figure
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) >= 2  # a live progress bar for each pass
    assert (tmp_path / "dataset" / "metadata.parquet").exists()
    assert (tmp_path / "private" / "crosswalk" / "patients.parquet").exists()


def test_notebook_starts_its_cluster_with_the_runs_worker_settings():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert "local_cluster(" in code and "LocalCluster(" not in code
