"""docs/notebook.ipynb runs on a real Jupyter kernel, every cell without error, and shows what it says:
the tidy table, matplotlib plots, the findings and the inline report."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "notebook.ipynb"


def test_the_notebook_runs_every_cell_on_a_real_kernel_and_shows_plots_findings_and_the_report(tmp_path):
    # Run where its `../sample_logs` resolves to the repository's, and where its report lands in tmp_path.
    (tmp_path / "docs").mkdir()
    (tmp_path / "sample_logs").symlink_to(ROOT / "sample_logs", target_is_directory=True)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "keep docs/notebook.ipynb without outputs: the tests run it"
    # A cell error raises CellExecutionError with the cell's traceback: the test fails on it.
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path / "docs")}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == 2  # the training losses, and one run's loss with its spike marked
    html = [output["data"]["text/html"] for output in outputs if "text/html" in output.get("data", {})]
    assert any("LRD101" in page and "<iframe sandbox=" in page for page in html)  # the inline report
    text = "\n".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert re.search(r"lrdiag-report.html 1 \d+ runs", text)  # report(path) wrote, to_dict() is schema 1
    assert (tmp_path / "docs" / "lrdiag-report.html").stat().st_size > 100_000
    shutil.rmtree(tmp_path / "docs")
