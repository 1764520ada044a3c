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
# 0.1 of a NELBO of 527 nats, 0.024 and 0.135 of a GMVAE KL estimate of 0.3-0.4 nats (its
# one-sample log q(z|x) - log p(z) varies by about a nat from image to image).
SAMPLED = {"vae", "gmvae", "ssvae"}, ("loss", "nelbo", "rec", "kl", "iwae")


@pytest.mark.slow
def test_every_family_on_two_nodes_trains_and_evaluates_like_one_process(
    ddp_runs, fake_root, tmp_path, monkeypatch
):
    """One test over every family, so that its one DDP run is made once whichever pytest-xdist
    worker runs it."""
    out, encoder = ddp_runs
    failures = []
    for config in CONFIGS:
        folder = out / config
        ranks = [torch.load(folder / f"parameters{rank}.pt") for rank in (0, 1)]
        if not torch.equal(ranks[0], ranks[1]):
            failures.append(f"{config}: the ranks' parameters differ")
        ddp = json.loads((folder / "metrics.json").read_text())
        monkeypatch.chdir(folder)
        last = f"--ckpt_path=runs/{config}/version_0/checkpoints/last.ckpt"
        args = [*arguments(config, fake_root, encoder), last]
        cli = main(["validate", "--config", config, *args])  # then test the loaded weights
        for kind in ("val", "test"):
            if kind == "test":
                cli.trainer.test(cli.model, datamodule=cli.datamodule)
            one = cli.trainer.callback_metrics
            shared = [n for n in ddp[kind] if n in one and not n.startswith(SHARD_OF_RANK_0)]
            if f"{kind}/loss" not in shared:
                failures.append(f"{config}: {kind}/loss not logged by both")
            for name in shared:
                sampled = config in SAMPLED[0] and any(term in name for term in SAMPLED[1])
                rel, abs = (1e-3, 0.5) if sampled else (1e-5, 1e-6)  # nats per image if sampled
                if ddp[kind][name] != pytest.approx(float(one[name]), rel=rel, abs=abs):
                    failures.append(f"{config}: {name} {ddp[kind][name]} (2 nodes) != "
                                    f"{float(one[name])} (1 process)")  # fmt: skip
    check_training_statistics(out, encoder, fake_root, tmp_path, failures)
    assert not failures, "\n".join(failures)


def statistics(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The statistics over the training images that a checkpoint carries."""
    state = torch.load(checkpoint, weights_only=True)
    found = {k: v for k, v in state["state_dict"].items() if k.startswith("scorer.")}
    for key, value in state["callbacks"].items():
        if "ClassificationMetrics" in key:
            found["cluster_to_label"] = value["cluster_to_label"]
    return found


def check_training_statistics(out, encoder, fake_root, folder, failures) -> None:
    """Statistics over the training images (anomaly-score standardisation, the cluster-to-label
    map of unsupervised accuracy) come from a pass over them in the validation loop, sharded
    over the ranks (an odd number of images: 5801 and 21) and summed across them: they equal
    one process's, from a fit of the same (learning rate 0) weights."""
    last = "checkpoints/last.ckpt"
    for config in FROZEN:
        two = statistics(out / config / f"runs/{config}/version_0/{last}")
        os.chdir(folder)
        single = main(["fit", "--config", config, *arguments(config, fake_root, encoder)])
        one = statistics(Path(single.trainer.log_dir) / last)
        if one.keys() != two.keys() or not one:
            failures.append(f"{config}: statistics {sorted(two)} (2 nodes), {sorted(one)} (1)")
        for key in one.keys() & two.keys():
            if not torch.allclose(two[key], one[key]):
                failures.append(f"{config}: the training statistic {key} differs")
