"""Clustering accuracy (majority map and Hungarian matching) and what each cluster holds."""

import itertools
from pathlib import Path
from types import SimpleNamespace

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from autoencoders.callbacks.accuracy import hungarian_accuracy
from experiments.__main__ import main
from tests.helpers import short

ONE_PROCESS = SimpleNamespace(strategy=SimpleNamespace(reduce=lambda t, reduce_op: t))


def test_hungarian_accuracy_is_the_best_one_to_one_matching():
    counts = torch.randint(0, 50, (4, 4), generator=torch.Generator().manual_seed(0))
    best = max(
        sum(int(counts[i, p[i]]) for i in range(4)) for p in itertools.permutations(range(4))
    )
    assert hungarian_accuracy(ONE_PROCESS, counts) == best / counts.sum()
    swapped = torch.tensor([[0, 9], [8, 1]])  # cluster 0 holds label 1, cluster 1 label 0
    assert hungarian_accuracy(ONE_PROCESS, swapped) == 17 / 18


def test_ten_clusters_log_hungarian_accuracy_and_every_cluster_shows_its_images(fake_root):
    ten = ["--model.init_args.n_classes=10", "--model.init_args.disc_y.init_args.in_features=10",
           "--model.init_args.encoder.init_args.latent_dim=20",
           "--model.init_args.decoder.init_args.latent_dim=20"]  # fmt: skip
    cli = main(["fit", "--config", "aae_unsupervised", *short(fake_root, *ten)])
    metrics = cli.trainer.test(ckpt_path="last", datamodule=cli.datamodule)[0]
    assert 0.1 <= metrics["test/acc_hungarian"] <= 1 and "test/acc" in metrics
    events = EventAccumulator(cli.trainer.log_dir, size_guidance={"images": 0}).Reload()
    assert "test/cluster_examples" in events.Tags()["images"]
    examples = next(c for c in cli.trainer.callbacks if type(c).__name__ == "ClusterExamples")
    assert examples.images.shape[:2] == (10, 10)
    assert int(examples.sizes.sum()) == len(cli.datamodule.test_set)
    probabilities = examples.confidence
    assert (probabilities[:, :-1] >= probabilities[:, 1:]).all(), "most confident first"


def test_thirty_clusters_have_no_one_to_one_matching(fake_root):
    cli = main(["fit", "--config", "aae_unsupervised", *short(fake_root)])
    metrics = cli.trainer.test(ckpt_path="last", datamodule=cli.datamodule)[0]
    assert "test/acc" in metrics and "test/acc_hungarian" not in metrics
    assert Path(cli.trainer.log_dir, "checkpoints/last.ckpt").is_file()
