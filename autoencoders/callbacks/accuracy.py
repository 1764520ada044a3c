"""Classification metrics for any model with ``classify(x) -> logits``."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from sklearn.metrics import classification_report
from torchmetrics import CatMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from autoencoders.callbacks.image_grid import logged_step, tensorboard


class ClassificationMetrics(Callback):
    """Logs ``val/acc`` and ``test/acc`` of ``pl_module.classify`` and a confusion-matrix figure.

    With ``clusters=True`` the model's outputs are cluster ids (unsupervised AAE): each cluster
    is mapped to the majority label of its training images (counted over the training loader
    once per validation), and accuracy is measured on the mapped labels.

    With ``report=True`` the test also writes scikit-learn's classification report (precision,
    recall, F1 and support per class) as a TensorBoard text and a bar figure, and logs
    ``test/macro_f1``.

    Args:
        num_classes: number of true classes.
        clusters: map cluster ids to labels before scoring.
        report: write the per-class report after test.
        class_names: names for the report and figures (default: the class indices).
    """

    def __init__(
        self,
        num_classes: int = 10,
        clusters: bool = False,
        report: bool = False,
        class_names: list[str] | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.clusters = clusters
        self.report = report
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names given for {num_classes} classes")
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.predicted, self.targets = CatMetric(), CatMetric()
        self.cluster_to_label: torch.Tensor | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for metric in (self.accuracy, self.confusion, self.predicted, self.targets):
            metric.to(pl_module.device)

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
        for metric in (self.accuracy, self.confusion, self.predicted, self.targets):
            metric.reset()
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
        if self.report:
            self.predicted.update(predicted.float())
            self.targets.update(y.float())

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
            fig, _ = self.confusion.plot(confusion, labels=self.class_names)
            fig.set_size_inches(7, 7)
            writer.add_figure(f"{stage}/confusion_matrix", fig, logged_step(trainer))
            plt.close(fig)
        if self.report and stage == "test":
            self._write_report(trainer, pl_module)

    def _write_report(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """scikit-learn's per-class precision / recall / F1 as text, figure and ``macro_f1``."""
        predicted = self.predicted.compute().long().cpu().numpy()
        targets = self.targets.compute().long().cpu().numpy()
        labels = list(range(self.num_classes))
        kwargs = dict(labels=labels, target_names=self.class_names, zero_division=0)
        table = classification_report(targets, predicted, output_dict=True, **kwargs)
        pl_module.log("test/macro_f1", float(table["macro avg"]["f1-score"]))
        writer = tensorboard(trainer)
        if writer is None or not trainer.is_global_zero:
            return
        step = logged_step(trainer)
        text = classification_report(targets, predicted, digits=4, **kwargs)
        writer.add_text("test/classification_report", "    " + text.replace("\n", "\n    "), step)
        fig, ax = plt.subplots(figsize=(max(6, 0.8 * self.num_classes), 3.5))
        width = 0.27
        for i, measure in enumerate(("precision", "recall", "f1-score")):
            values = [table[name][measure] for name in self.class_names]
            ax.bar([c + (i - 1) * width for c in labels], values, width, label=measure)
        ax.set_xticks(labels, self.class_names, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.legend(loc="lower right")
        fig.tight_layout()
        writer.add_figure("test/classification_report", fig, step)
        plt.close(fig)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._end(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._end(trainer, pl_module, "test")
