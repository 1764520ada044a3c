"""``python -m tests.ddp_families OUT ROOT ENCODER_CHECKPOINT``, run by ``test_ddp.py`` on each of
two "nodes" (``NODE_RANK`` 0 and 1, one process each, ``MASTER_ADDR=127.0.0.1``): every family
fits a few steps and tests under DDP; each rank saves its parameters, rank 0 the validation and
test metrics, into ``OUT/<config>/``."""

import json
import os
import sys
from pathlib import Path

import torch

from experiments.__main__ import main

ODD_SIZES = ["--data.val_size=199"]  # with the fake test sets of 301 and 41 images
# Learning rates 0: the statistics over the training images that these two gather in their
# validation (score standardisation, the cluster-to-label map) are compared with one process's
# fit of the same, freshly initialised weights (tests/test_ddp.py).
FROZEN = {
    "anomaly_pneumonia": ["--model.init_args.optimizer.init_args.lr=0"],
    "aae_unsupervised": [
        f"--model.init_args.{name}.init_args.lr=0"
        for name in ("ae_optimizer", "adversarial_optimizer", "cls_optimizer")
    ],
}
CONFIGS = {
    "ae_mnist": ODD_SIZES,
    "conv_ae_fashion": ODD_SIZES,
    "stacked_ae_fashion": ODD_SIZES,
    "vae": [*ODD_SIZES, "--trainer.callbacks.init_args.iwae_samples=4"],
    "gmvae": [*ODD_SIZES, "--trainer.callbacks.init_args.iwae_samples=4"],
    "ssvae": ODD_SIZES,
    "aae": ODD_SIZES,
    "aae_unsupervised": [*ODD_SIZES, *FROZEN["aae_unsupervised"]],
    "classifier_fashion_finetune": [*ODD_SIZES, "--model.init_args.encoder_checkpoint=ENCODER"],
    "anomaly_pneumonia": ["--data.init_args.balanced_eval=false", *FROZEN["anomaly_pneumonia"]],
}


def arguments(config: str, root: str, encoder: str) -> list[str]:
    """The data, the few steps and the callbacks' overrides of ``config``, on one process."""
    extra = [arg.replace("ENCODER", encoder) for arg in CONFIGS[config]]
    return [f"--data.root={root}", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
            "--trainer.accelerator=cpu", *extra]  # fmt: skip


def metrics(trainer, prefix: str) -> dict[str, float]:
    return {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if name.startswith(prefix) and value.numel() == 1
    }


def run(config: str, out: Path, args: list[str]) -> None:
    ddp = ["--trainer.num_nodes=2", "--trainer.devices=1",
           "--trainer.strategy=ddp_find_unused_parameters_true"]  # fmt: skip
    folder = out / config
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    fit = main(["fit", "--config", config, *args, *ddp])
    rank = fit.trainer.global_rank
    parameters = torch.cat([p.detach().flatten() for p in fit.model.parameters()])
    torch.save(parameters, folder / f"parameters{rank}.pt")
    val = metrics(fit.trainer, "val/")
    fit.trainer.test(fit.model, datamodule=fit.datamodule)  # the weights of last.ckpt
    if rank == 0:
        found = {"val": val, "test": metrics(fit.trainer, "test/")}
        (folder / "metrics.json").write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    out, root, encoder = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    for name in CONFIGS:
        run(name, out, arguments(name, root, encoder))
