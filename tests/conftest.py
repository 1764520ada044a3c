import os

import pytest
import torch

from tests.fakedata import write_all

# Read before the autouse fixture below hides it from every test (absolute: tests change the
# working directory).
REAL_DATA = os.environ.get("AUTOENCODERS_DATA")  # unset: no real data
REAL_DATA = os.path.abspath(REAL_DATA) if REAL_DATA else None

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers, one per core
    os.environ["OMP_NUM_THREADS"] = "1"  # for the processes tests start, too
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (20 s and more) run first: with two workers the many short tests
    then fill in around them, instead of one long test running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory) -> str:
    """A data root with fake MNIST, Fashion-MNIST and PneumoniaMNIST in the real formats."""
    return str(write_all(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="session")
def encoder_checkpoint(fake_root, tmp_path_factory):
    """``encoder_checkpoint(config)``: the last checkpoint of a short run of the autoencoder
    config ``config`` on the fake data (trained once per session), for the configs that
    fine-tune a pre-trained encoder."""
    from experiments.__main__ import main
    from tests.helpers import short

    folder, checkpoints = tmp_path_factory.mktemp("pretrained"), {}

    def train(config: str = "conv_ae_fashion") -> str:
        if config not in checkpoints:
            cwd = os.getcwd()
            os.chdir(folder)
            try:
                main(["fit", "--config", config, *short(fake_root)])
            finally:
                os.chdir(cwd)
            checkpoints[config] = str(folder / f"runs/{config}/version_0/checkpoints/last.ckpt")
        return checkpoints[config]

    return train


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test runs in its own working directory (``runs/`` lands there), with no
    ``$AUTOENCODERS_DATA``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOENCODERS_DATA", raising=False)


@pytest.fixture(scope="session")
def real_root() -> str:
    """The real datasets (``$AUTOENCODERS_DATA``); tests using it skip when it is not set."""
    if not REAL_DATA or not os.path.isdir(REAL_DATA):
        pytest.skip("AUTOENCODERS_DATA does not point at the real datasets")
    return REAL_DATA
