from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(fake_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOENCODERS_DATA", fake_root)
    monkeypatch.setenv("QUICKSTART_STEPS", "40")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2, "a reconstruction grid and a loss curve"
    assert (tmp_path / "runs/quickstart/version_0").is_dir()
