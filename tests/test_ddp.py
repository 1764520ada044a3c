"""DDP proven equal to one process, on two "nodes" of one process each over the loopback
address (``num_nodes=2``, ``NODE_RANK``, ``MASTER_ADDR=127.0.0.1``: the manual multi-node
launch of the README): every family trains a few steps with the same parameters on both ranks,
and its validation and test metrics, over sets of odd size, equal those of one process
evaluating the same checkpoint (each image is evaluated once: no padding)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.__main__ import main
from tests.ddp_families import CONFIGS, FROZEN, arguments
from tests.helpers import ROOT, pretrained


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ddp_runs(fake_root, encoder_checkpoint, tmp_path_factory):
    """Runs ``tests/ddp_families.py`` on two nodes; returns its output folder."""
    out = tmp_path_factory.mktemp("ddp")
    encoder = pretrained("classifier_fashion_finetune", encoder_checkpoint)[0].split("=", 1)[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [sys.executable, "-m", "tests.ddp_families", str(out), fake_root, encoder]
    nodes = [
        subprocess.Popen(
            command,
            env={**env, "NODE_RANK": str(rank)},
            cwd=out,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    for node in nodes:
        _, err = node.communicate(timeout=900)
        assert node.returncode == 0, err[-3000:]
    return out, encoder


# LatentMap draws its 2-D maps from rank 0's shard of the test set and scores those (its
# docstring says so): its k-NN and silhouette scores are the one process's over half the images.
SHARD_OF_RANK_0 = ("test/knn_acc_", "test/silhouette_")
# The variational families evaluate one-sample ELBO estimates (and a 4-sample IWAE bound): the
# ranks draw other samples than one process does, equal in expectation only. Measured gaps:
# 0.1 of a NELBO of 527 nats, 0.024 of a GMVAE KL estimate of 0.37 nats.
SAMPLED = {"vae", "gmvae", "ssvae"}, ("loss", "nelbo", "rec", "kl", "iwae")


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_two_nodes_train_and_evaluate_like_one_process(config, ddp_runs, fake_root, monkeypatch):
    out, encoder = ddp_runs
    folder = out / config
    ranks = [torch.load(folder / f"parameters{rank}.pt") for rank in (0, 1)]
    assert torch.equal(ranks[0], ranks[1]), "both ranks hold the same parameters"

    ddp = json.loads((folder / "metrics.json").read_text())
    monkeypatch.chdir(folder)
    last = f"--ckpt_path=runs/{config}/version_0/checkpoints/last.ckpt"
    args = [*arguments(config, fake_root, encoder), last]
    for stage in ("validate", "test"):
        one = main([stage, "--config", config, *args]).trainer.callback_metrics
        kind = "val" if stage == "validate" else "test"
        shared = sorted(n for n in set(ddp[kind]) & set(one) if not n.startswith(SHARD_OF_RANK_0))
        assert f"{kind}/loss" in shared, (ddp[kind].keys(), one.keys())
        for name in shared:
            sampled = config in SAMPLED[0] and any(term in name for term in SAMPLED[1])
            rel, abs = (1e-3, 0.1) if sampled else (1e-5, 1e-6)  # nats per image when sampled
            assert ddp[kind][name] == pytest.approx(float(one[name]), rel=rel, abs=abs), name


def statistics(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The statistics over the training images that a checkpoint carries."""
    state = torch.load(checkpoint, weights_only=True)
    found = {k: v for k, v in state["state_dict"].items() if k.startswith("scorer.")}
    for key, value in state["callbacks"].items():
        if "ClassificationMetrics" in key:
            found["cluster_to_label"] = value["cluster_to_label"]
    return found


@pytest.mark.parametrize("config", sorted(FROZEN))
def test_two_nodes_gather_the_training_statistics_of_one_process(
    config, ddp_runs, fake_root, tmp_path, monkeypatch
):
    """Statistics over the training images (anomaly-score standardisation, the cluster-to-label
    map of unsupervised accuracy) come from a pass over them in the validation loop, sharded
    over the ranks (an odd number of images: 5801 and 21) and summed across them."""
    out, encoder = ddp_runs
    last = "checkpoints/last.ckpt"
    two = statistics(out / config / f"runs/{config}/version_0/{last}")
    single = main(["fit", "--config", config, *arguments(config, fake_root, encoder)])
    one = statistics(Path(single.trainer.log_dir) / last)
    assert one.keys() == two.keys() and len(one) >= 1
    for key in one:
        torch.testing.assert_close(two[key], one[key], msg=key)
