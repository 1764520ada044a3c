"""Image grids in TensorBoard for any model with ``reconstruct`` (and ``sample``)."""

from __future__ import annotations

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid

from autoencoders.data.base import is_training_pass


def tensorboard(trainer: Trainer):
    """The ``SummaryWriter`` of the trainer's TensorBoard logger, or ``None`` when it has none."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def logged_step(trainer: Trainer) -> int:
    """The step Lightning gives logged scalars (batches trained so far), so figures line up with
    them. ``trainer.global_step`` counts every optimizer step: four per batch for the
    adversarial autoencoder (Lightning #17958)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


class ReconstructionGrid(Callback):
    """After every validation, writes originals (top row) above their reconstructions.

    The images are the first ``num_images`` of the first validation batch, so the same images are
    shown at every step (a figure of a few images: they are reconstructed again here). Models
    with ``sample(n)`` also get a grid of ``num_samples`` samples.

    Args:
        num_images: images per row.
        num_samples: samples drawn for the sample grid; 0 turns it off.
    """

    def __init__(self, num_images: int = 16, num_samples: int = 64) -> None:
        self.num_images = num_images
        self.num_samples = num_samples
        self.images: torch.Tensor | None = None

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self.images is None and batch_idx == 0 and not is_training_pass(trainer, dataloader_idx):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            self.images = x[: self.num_images].detach().clone()

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None or self.images is None or trainer.sanity_checking:
            return
        step = logged_step(trainer)
        with torch.no_grad():
            x = self.images.to(pl_module.device)
            rows = torch.cat([x, pl_module.reconstruct(x).clamp(0, 1)])
            writer.add_image("val/reconstructions", make_grid(rows, nrow=len(x)), step)
            if self.num_samples and hasattr(pl_module, "sample"):
                samples = pl_module.sample(self.num_samples).clamp(0, 1)
                writer.add_image("val/samples", make_grid(samples, nrow=16), step)


class ClassSampleGrid(Callback):
    """After every validation, writes generated images: one row per class, random styles.

    Needs ``sample(n, y)`` and ``hparams.n_classes`` (the adversarial autoencoder).

    Args:
        per_class: images per row.
    """

    def __init__(self, per_class: int = 10) -> None:
        self.per_class = per_class

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None or trainer.sanity_checking:
            return
        labels = torch.arange(pl_module.hparams.n_classes, device=pl_module.device)
        labels = labels.repeat_interleave(self.per_class)
        with torch.no_grad():
            images = pl_module.sample(len(labels), labels)
        writer.add_image(
            "val/samples_by_class", make_grid(images, nrow=self.per_class), logged_step(trainer)
        )


class ClusterExamples(Callback):
    """After test, a figure of each cluster's ``per_cluster`` most confident test images, one
    row per cluster (highest probability first), so a reader sees what every cluster holds.
    Rows are labelled with the cluster's size on the test set and, when a
    ``ClassificationMetrics(clusters=True)`` callback has mapped clusters to labels, its label.
    Reads the ``logits`` the test steps return; under DDP, rank 0's share of the test set.

    Args:
        per_cluster: images per row.
    """

    def __init__(self, per_cluster: int = 10) -> None:
        self.per_cluster = per_cluster
        self.confidence: torch.Tensor | None = None  # [clusters, per_cluster]
        self.images: torch.Tensor | None = None  # [clusters, per_cluster, C, H, W]
        self.sizes: torch.Tensor | None = None  # [clusters]

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.confidence = self.images = self.sizes = None

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0) -> None:
        probs = outputs["logits"].detach().float().softmax(dim=1)
        confidence, cluster = probs.max(dim=1)
        x, k = batch[0].detach(), probs.shape[1]
        if self.confidence is None:
            self.confidence = torch.full((k, self.per_cluster), -1.0, device=x.device)
            self.images = x.new_zeros(k, self.per_cluster, *x.shape[1:])
            self.sizes = torch.zeros(k, dtype=torch.long, device=x.device)
        self.sizes += torch.bincount(cluster, minlength=k)
        for c in cluster.unique().tolist():  # merge this batch's members into cluster c's best
            mine = cluster == c
            scores = torch.cat([self.confidence[c], confidence[mine]])
            images = torch.cat([self.images[c], x[mine]])
            top = scores.topk(self.per_cluster).indices
            self.confidence[c], self.images[c] = scores[top], images[top]

    @rank_zero_only
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        import matplotlib.pyplot as plt

        writer = tensorboard(trainer)
        if writer is None or self.images is None:
            return
        labels = next(
            (cb.cluster_to_label for cb in trainer.callbacks
             if getattr(cb, "cluster_to_label", None) is not None), None,
        )  # fmt: skip
        k = len(self.images)
        images = self.images * (self.confidence >= 0).view(k, -1, 1, 1, 1)  # empty slots black
        grid = make_grid(images.flatten(0, 1).clamp(0, 1).cpu(), nrow=self.per_cluster, padding=2)
        fig, ax = plt.subplots(figsize=(0.45 * self.per_cluster + 2, 0.45 * k + 0.5))
        ax.imshow(grid.permute(1, 2, 0))
        row = grid.shape[1] / k
        names = [
            f"{c}" + (f" -> {int(labels[c])}" if labels is not None else "")
            + f" ({int(self.sizes[c])})"
            for c in range(k)
        ]  # fmt: skip
        ax.set_yticks([row * (c + 0.5) for c in range(k)], names, fontsize=8)
        ax.set_xticks([])
        ax.set_ylabel("cluster -> label (test images)")
        fig.tight_layout()
        writer.add_figure("test/cluster_examples", fig, logged_step(trainer))
        plt.close(fig)
