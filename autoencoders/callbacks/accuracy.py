"""Classification metrics for any model with ``classify(x) -> logits``."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from autoencoders.callbacks.image_grid import logged_step, tensorboard


class ClassificationMetrics(Callback):
    """Logs ``val/acc`` and ``test/acc`` of ``pl_module.classify`` and a confusion-matrix figure.

    With ``clusters=True`` the model's outputs are cluster ids (unsupervised AAE): each cluster
    is mapped to the majority label of its training images (counted over the training loader
    once per validation), and accuracy is measured on the mapped labels.

    Args:
        num_classes: number of true classes.
        clusters: map cluster ids to labels before scoring.
    """

    def __init__(self, num_classes: int = 10, clusters: bool = False) -> None:
        self.num_classes = num_classes
        self.clusters = clusters
        self.accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.cluster_to_label: torch.Tensor | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.accuracy.to(pl_module.device)
        self.confusion.to(pl_module.device)

    @torch.no_grad()
    def _fit_cluster_map(self, trainer: Trainer, pl_module: LightningModule) -> None:
        counts = 0
        for x, y in trainer.datamodule.train_dataloader():
            logits = pl_module.classify(x.to(pl_module.device))
            pairs = logits.argmax(dim=1) * self.num_classes + y.to(pl_module.device)
            counts = counts + torch.bincount(pairs, minlength=logits.shape[1] * self.num_classes)
        counts = trainer.strategy.reduce(counts.float(), reduce_op="sum")
        self.cluster_to_label = counts.view(-1, self.num_classes).argmax(dim=1)

    def _start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.accuracy.reset()
        self.confusion.reset()
        if self.clusters and not trainer.sanity_checking:
            was_training = pl_module.training
            pl_module.eval()
            self._fit_cluster_map(trainer, pl_module)
            pl_module.train(was_training)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer, pl_module)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer, pl_module)

    @torch.no_grad()
    def _update(self, pl_module: LightningModule, batch) -> None:
        x, y = batch
        predicted = pl_module.classify(x).argmax(dim=1)
        if self.clusters:
            if self.cluster_to_label is None:
                return
            predicted = self.cluster_to_label[predicted]
        self.accuracy.update(predicted, y)
        self.confusion.update(predicted, y)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._update(pl_module, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._update(pl_module, batch)

    def _end(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.clusters and self.cluster_to_label is None:
            return
        pl_module.log(f"{stage}/acc", self.accuracy.compute(), prog_bar=True)
        confusion = self.confusion.compute()
        writer = tensorboard(trainer)
        if writer is not None and trainer.is_global_zero and not trainer.sanity_checking:
            fig, _ = self.confusion.plot(confusion)
            fig.set_size_inches(6, 6)
            writer.add_figure(f"{stage}/confusion_matrix", fig, logged_step(trainer))
            plt.close(fig)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._end(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._end(trainer, pl_module, "test")
