import pytest

from tests.fakedata import write_all


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory) -> str:
    """A data root with fake MNIST, Fashion-MNIST and PneumoniaMNIST in the real formats."""
    return str(write_all(tmp_path_factory.mktemp("data")))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test runs in its own working directory (``runs/`` lands there), with no
    ``$AUTOENCODERS_DATA``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOENCODERS_DATA", raising=False)
