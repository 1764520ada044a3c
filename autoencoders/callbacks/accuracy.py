"""Classification metrics for any model whose evaluation steps return class ``logits``."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from sklearn.metrics import classification_report
from torchmetrics import CatMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from autoencoders.callbacks.image_grid import logged_step, tensorboard
from autoencoders.data.base import is_training_pass


class ClassificationMetrics(Callback):
    """Logs ``val/acc`` and ``test/acc`` of the ``logits`` that the model's validation and test
    steps return, and a confusion-matrix figure.

    With ``clusters=True`` the logits are over clusters (unsupervised AAE): each cluster is
    mapped to the majority label of its training images, counted in a pass over the training
    images before every validation (``needs_training_pass``: sharded under DDP, the counts summed
    across ranks), and accuracy is measured on the mapped labels (Makhzani et al.'s measure).
    The map is saved in checkpoints, so ``test`` of a checkpoint uses the map of its validation.
    With as many clusters as classes, ``{stage}/acc_hungarian`` is also logged: the accuracy of
    the one-to-one cluster-to-label matching that maximises it on the evaluated images
    (scipy's ``linear_sum_assignment``, as IIC and VaDE report).

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
        self.clusters = self.needs_training_pass = clusters  # the map needs training images
        self.report = report
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names given for {num_classes} classes")
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.predicted, self.targets = CatMetric(), CatMetric()
        self.counts: torch.Tensor | None = None  # [clusters, classes] of the training pass
        self.cluster_to_label: torch.Tensor | None = None
        self.evaluated: torch.Tensor | None = None  # [clusters, classes] of the evaluated set

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for metric in (self.accuracy, self.confusion, self.predicted, self.targets):
            metric.to(pl_module.device)

    def state_dict(self) -> dict:
        return {"cluster_to_label": self.cluster_to_label}

    def load_state_dict(self, state_dict: dict) -> None:
        self.cluster_to_label = state_dict.get("cluster_to_label")

    def _start(self) -> None:
        for metric in (self.accuracy, self.confusion, self.predicted, self.targets):
            metric.reset()
        self.evaluated = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start()

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start()

    def _pairs(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The cluster x label counts ``[clusters, classes]`` of a batch."""
        k = logits.shape[1]
        pairs = logits.argmax(dim=1) * self.num_classes + y
        return torch.bincount(pairs, minlength=k * self.num_classes).view(k, self.num_classes)

    def _count(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Adds a training-pass batch to the cluster x label counts."""
        counts = self._pairs(logits, y)
        self.counts = counts if self.counts is None else self.counts + counts

    def _update(self, trainer: Trainer, outputs, batch) -> None:
        if not isinstance(outputs, dict) or "logits" not in outputs:
            raise RuntimeError(
                "ClassificationMetrics reads the 'logits' that validation_step and test_step "
                "return; this model's steps return none"
            )
        predicted, y = outputs["logits"].argmax(dim=1), batch[1]
        if self.clusters:
            if self.counts is not None:  # the training pass just ended: a new map, all ranks'
                counts = trainer.strategy.reduce(self.counts.float(), reduce_op="sum")
                self.cluster_to_label, self.counts = counts.argmax(dim=1), None
            if self.cluster_to_label is None:
                return
            if outputs["logits"].shape[1] == self.num_classes:
                counts = self._pairs(outputs["logits"].detach(), y)
                self.evaluated = counts if self.evaluated is None else self.evaluated + counts
            predicted = self.cluster_to_label.to(predicted.device)[predicted]
        self.accuracy.update(predicted, y)
        self.confusion.update(predicted, y)
        if self.report:
            self.predicted.update(predicted.float())
            self.targets.update(y.float())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        if is_training_pass(trainer, dl_idx):
            self._count(outputs["logits"].detach(), batch[1])
        else:
            self._update(trainer, outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._update(trainer, outputs, batch)

    def _end(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.clusters and self.cluster_to_label is None:
            return
        pl_module.log(f"{stage}/acc", self.accuracy.compute(), prog_bar=True)
        if self.evaluated is not None:
            pl_module.log(f"{stage}/acc_hungarian", hungarian_accuracy(trainer, self.evaluated))
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


def hungarian_accuracy(trainer: Trainer, counts: torch.Tensor) -> torch.Tensor:
    """Accuracy of the best one-to-one cluster-to-label matching of the cluster x label
    ``counts`` (summed across ranks first)."""
    from scipy.optimize import linear_sum_assignment

    counts = trainer.strategy.reduce(counts.float(), reduce_op="sum")
    rows, cols = linear_sum_assignment(counts.cpu().numpy(), maximize=True)
    return counts[rows, cols].sum() / counts.sum()
