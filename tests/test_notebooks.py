"""The notebooks run headless (nbclient) against a results folder of synthetic records.

``QTHA_RESULTS`` points them at the fixture; the committed files must carry no outputs.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from report.synthetic_records import write_fixture

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each notebook starts a Python kernel process


@pytest.mark.parametrize("name", ["analysis.ipynb", "figures.ipynb"])
def test_notebook_runs_headless(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    results = write_fixture(tmp_path / "results")
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{name} is committed with outputs"
    monkeypatch.setenv("QTHA_RESULTS", str(results))
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    if name == "figures.ipynb":
        assert (results / "figures" / "design_card_loss_curves.png").stat().st_size > 1024
        assert any(o.get("data", {}).get("image/png") for c in code for o in c.outputs)
