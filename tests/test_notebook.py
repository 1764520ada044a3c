"""Every notebook runs top to bottom on the fake data, training a few batches."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"


@pytest.fixture(autouse=True)
def one_openmp_thread(monkeypatch):
    """The kernels get one OpenMP thread: t-SNE's OpenMP loops next to torch's spin for tens of
    seconds when another process (a benchmark, a parallel test) holds a core."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def execute(name: str, tmp_path: Path) -> list:
    """Runs ``notebooks/<name>.ipynb`` in ``tmp_path``; its code cells' outputs."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors[0].get("traceback", errors[0])[-1] if errors else None
    return outputs


def images(outputs: list) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


def text(outputs: list) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


@pytest.mark.slow
def test_quickstart_notebook_runs(fake_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOENCODERS_DATA", fake_root)
    monkeypatch.setenv("QUICKSTART_STEPS", "20")
    outputs = execute("quickstart", tmp_path)
    assert images(outputs) == 2, "a reconstruction grid and a loss curve"
    assert (tmp_path / "runs/quickstart/version_0").is_dir()


# notebook: (figures it draws, what its printed text says)
FAMILIES = {
    "aae": (3, ["accuracy on 300 test images", "true label of the test digit"]),
    "variational": (2, ["NELBO (one z sample)", "IWAE bound, k = 100"]),
    "anomaly": (4, ["with pneumonia; threshold", "balanced accuracy at the validation threshold"]),
    "representations": (1, ["'fine-tuned':", "'frozen':"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_family_notebook_trains_briefly_and_draws(name, fake_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOENCODERS_DATA", fake_root)
    monkeypatch.setenv("NOTEBOOK_STEPS", "1" if name == "anomaly" else "3")  # anomaly: epochs
    monkeypatch.setenv("NOTEBOOK_IMAGES", "300")
    outputs = execute(name, tmp_path)
    figures, lines = FAMILIES[name]
    assert images(outputs) == figures
    printed = text(outputs)
    assert all(line in printed for line in lines), printed
    assert "loaded" not in printed, "no trained run here: it trains"
