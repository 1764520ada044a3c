"""Statistics over the training images (anomaly-score standardisation, the cluster-to-label map
of unsupervised accuracy) come from a pass over the training images in Lightning's validation
loop: sharded under DDP and summed across ranks, so two processes give one process's numbers."""

from pathlib import Path

import pytest
import torch

from experiments.__main__ import main
from tests.helpers import run_module

FROZEN = {  # learning rates 0: both runs validate the same, freshly initialised weights
    "anomaly_pneumonia": [
        "--model.init_args.optimizer.init_args.lr=0",
        "--trainer.num_sanity_val_steps=0",
    ],
    "aae_unsupervised": [
        f"--model.init_args.{name}.init_args.lr=0"
        for name in ("ae_optimizer", "adversarial_optimizer", "cls_optimizer")
    ]
    + ["--data.val_size=4000", "--trainer.num_sanity_val_steps=0"],
}


def statistics(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, weights_only=True)
    found = {k: v for k, v in state["state_dict"].items() if k.startswith("scorer.")}
    for key, value in state["callbacks"].items():
        if "ClassificationMetrics" in key:
            found["cluster_to_label"] = value["cluster_to_label"]
    return found


@pytest.mark.parametrize("config", sorted(FROZEN))
def test_two_ddp_processes_gather_the_statistics_of_one(config, fake_root, tmp_path):
    args = [
        f"--data.root={fake_root}", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
        "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu", *FROZEN[config],
    ]  # fmt: skip
    single = main(["fit", "--config", config, *args])
    one = statistics(Path(single.trainer.log_dir) / "checkpoints/last.ckpt")
    (tmp_path / "ddp").mkdir()
    ddp = ["--trainer.devices=2", "--trainer.strategy=ddp_find_unused_parameters_true"]
    result = run_module("fit", "--config", config, *args, *ddp, cwd=tmp_path / "ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    two = statistics(tmp_path / f"ddp/runs/{config}/version_0/checkpoints/last.ckpt")
    assert one.keys() == two.keys() and len(one) >= 1
    for key in one:
        torch.testing.assert_close(two[key], one[key], msg=key)
