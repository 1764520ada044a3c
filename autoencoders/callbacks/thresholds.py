"""Anomaly detection for any model whose evaluation steps return a per-image ``score``: a
decision threshold fitted on validation scores, kept in the model, and the detection metrics it
gives on test.

Label 1 is the anomaly (PneumoniaMNIST: pneumonia); an image is called anomalous when its score
is at least the threshold.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import CatMetric
from torchmetrics.classification import BinaryConfusionMatrix
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_precision_recall_curve,
    binary_roc,
    binary_stat_scores,
)
from torchvision.utils import make_grid

from autoencoders.callbacks.image_grid import logged_step, tensorboard
from autoencoders.data.base import is_training_pass

RULES = ("max_accuracy", "max_f1", "youden", "healthy_quantile")


def fit_threshold(scores: Tensor, labels: Tensor, rule: str, quantile: float = 0.95) -> float:
    """The threshold that ``rule`` picks among the observed scores, from torchmetrics' ROC and
    precision-recall curves.

    Args:
        scores: anomaly scores ``[N]``.
        labels: 1 for anomalies, 0 for normal images ``[N]``.
        rule: ``max_accuracy`` (seed 001's), ``max_f1``, ``youden`` (max sensitivity +
            specificity - 1), or ``healthy_quantile`` (the ``quantile`` of the normal scores:
            needs no anomalies). Ties go to the lowest threshold.
        quantile: quantile of ``healthy_quantile``.
    """
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; choose one of {list(RULES)}")
    scores, labels = scores.double(), labels.long()
    if rule == "healthy_quantile":
        return torch.quantile(scores[labels == 0], quantile).item()
    unit = unit_interval(scores)  # the curves' thresholds are on this monotone scale
    if rule == "max_f1":
        precision, recall, thresholds = binary_precision_recall_curve(unit, labels)  # ascending
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        best = thresholds[f1[:-1].argmax()]
    else:
        fpr, tpr, thresholds = binary_roc(unit, labels)  # descending, the first above every score
        if rule == "youden":
            objective = tpr - fpr
        else:
            positives = labels.sum()
            objective = (tpr * positives + (1 - fpr) * (len(labels) - positives)) / len(labels)
        lowest_best = len(objective) - 1 - objective.flip(0).argmax()
        best = thresholds[lowest_best]
    above = scores[unit >= best]  # back on the scores' scale, exactly
    return above.min().item() if len(above) else float("inf")


def unit_interval(scores: Tensor) -> Tensor:
    """Scores mapped monotonically onto ``[0, 1]`` (min-max). torchmetrics' binary metrics take
    values outside ``[0, 1]`` for logits and squash them with a sigmoid, which saturates scores
    such as a negative ELBO of 500 into ties; rank metrics are unchanged by this map."""
    scores = scores.double()
    return (scores - scores.min()) / (scores.max() - scores.min()).clamp(min=1e-12)


def detection_metrics(scores: Tensor, labels: Tensor, threshold: float) -> dict[str, Tensor]:
    """AUROC, AUPRC and the metrics of the decision ``score >= threshold`` (torchmetrics)."""
    labels = labels.long()
    predicted = (scores >= threshold).long()
    tp, fp, tn, fn, _ = binary_stat_scores(predicted, labels).double()
    sensitivity = tp / (tp + fn).clamp(min=1)
    specificity = tn / (tn + fp).clamp(min=1)
    return {
        "auroc": binary_auroc(unit_interval(scores), labels),
        "auprc": binary_average_precision(unit_interval(scores), labels),
        "acc": (tp + tn) / len(labels),
        "balanced_acc": (sensitivity + specificity) / 2,
        "f1": 2 * tp / (2 * tp + fp + fn).clamp(min=1),
        "sensitivity": sensitivity,
        "specificity": specificity,
    }


class AnomalyThreshold(Callback):
    """Fits the model's anomaly threshold on the validation ``score`` outputs and reports
    detection metrics.

    After every validation: ``val/auroc``, ``val/auprc``, ``val/threshold`` (and the metrics of
    the new threshold on validation); the threshold goes into the model's
    ``anomaly_threshold`` buffer, so checkpoints carry it and a loaded model can ``detect``.
    After test: ``test/auroc``, ``test/auprc``, ``test/acc``, ``test/balanced_acc``,
    ``test/f1``, ``test/sensitivity``, ``test/specificity`` at the model's threshold, plus
    figures: score histograms per class with the threshold, the ROC curve, the confusion matrix,
    and the worst false positives / negatives above their reconstructions. Scores are gathered
    from every rank (torchmetrics ``CatMetric``), so the numbers under DDP equal one process's.

    A validation set without anomalies cannot support a supervised rule: the callback warns and
    falls back to ``healthy_quantile`` instead of collapsing to the lowest score.

    Args:
        rule: ``max_accuracy``, ``max_f1``, ``youden`` or ``healthy_quantile``.
        quantile: quantile of the normal scores used by ``healthy_quantile``.
        num_worst: false positives and false negatives shown in the figure.
    """

    def __init__(self, rule: str = "youden", quantile: float = 0.95, num_worst: int = 8) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown threshold rule {rule!r}; choose one of {list(RULES)}")
        self.rule = rule
        self.quantile = quantile
        self.num_worst = num_worst
        self.scores, self.labels = CatMetric(), CatMetric()
        self.images: list[Tensor] = []
        self.reconstructions: list[Tensor] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.scores.to(pl_module.device)
        self.labels.to(pl_module.device)

    def _start(self) -> None:
        self.scores.reset()
        self.labels.reset()
        self.images, self.reconstructions = [], []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start()

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start()

    def _update(self, outputs, batch) -> None:
        if not isinstance(outputs, dict) or "score" not in outputs:
            raise RuntimeError(
                "AnomalyThreshold reads the 'score' that validation_step and test_step return; "
                "this model's steps return none"
            )
        x, y = batch
        self.scores.update(outputs["score"].detach().float())
        self.labels.update(y.float())
        self.images.append(x.detach().cpu())
        if "reconstruction" in outputs:
            self.reconstructions.append(outputs["reconstruction"].detach().cpu())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        if not is_training_pass(trainer, dl_idx):
            self._update(outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._update(outputs, batch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        scores, labels = self.scores.compute(), self.labels.compute().long()
        rule = self.rule
        if rule != "healthy_quantile" and labels.min() == labels.max():
            rank_zero_warn(
                f"the validation set has only {'anomalies' if labels[0] else 'normal images'}: "
                f"threshold rule {rule!r} needs both classes; using healthy_quantile "
                f"(quantile {self.quantile}) instead"
            )
            rule = "healthy_quantile"
        if trainer.sanity_checking:
            return
        threshold = fit_threshold(scores, labels, rule, self.quantile)
        pl_module.anomaly_threshold.fill_(threshold)
        logs = {"val/threshold": torch.tensor(threshold)}
        if labels.min() != labels.max():
            metrics = detection_metrics(scores, labels, threshold)
            logs |= {f"val/{k}": v for k, v in metrics.items()}
            pl_module.log("val/auroc", logs.pop("val/auroc").float(), prog_bar=True)
        pl_module.log_dict({k: v.float() for k, v in logs.items()})

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        threshold = pl_module.anomaly_threshold.item()
        if math.isnan(threshold):
            rank_zero_warn("the model has no anomaly threshold (validate first): test skipped")
            return
        scores, labels = self.scores.compute(), self.labels.compute().long()
        metrics = detection_metrics(scores, labels, threshold)
        pl_module.log_dict({f"test/{k}": v.float() for k, v in metrics.items()})
        writer = tensorboard(trainer)
        if writer is not None and trainer.is_global_zero:
            step = logged_step(trainer)
            figure = self._score_figure(scores, labels, threshold)
            writer.add_figure("test/scores", figure, step)
            figure = self._confusion_figure(scores, labels, threshold)
            writer.add_figure("test/confusion_matrix", figure, step)
            grid = self._worst_grid(pl_module, scores.cpu(), labels.cpu())
            writer.add_image("test/worst_errors", grid, step)

    def _score_figure(self, scores: Tensor, labels: Tensor, threshold: float):
        scores, labels = scores.cpu(), labels.cpu()
        fig, (hist, roc) = plt.subplots(1, 2, figsize=(11, 4))
        for value, name in ((0, "normal"), (1, "anomaly")):
            hist.hist(scores[labels == value].numpy(), bins=40, alpha=0.6, label=name)
        hist.axvline(threshold, color="k", linestyle="--", label=f"threshold ({self.rule})")
        hist.set_xlabel("anomaly score")
        hist.set_ylabel("images")
        hist.legend()
        fpr, tpr, _ = binary_roc(unit_interval(scores), labels)
        roc.plot(fpr.numpy(), tpr.numpy())
        roc.plot([0, 1], [0, 1], color="grey", linestyle=":")
        roc.set_xlabel("false positive rate")
        roc.set_ylabel("true positive rate")
        roc.set_title(f"ROC, AUROC {binary_auroc(unit_interval(scores), labels):.3f}")
        fig.tight_layout()
        return fig

    def _confusion_figure(self, scores: Tensor, labels: Tensor, threshold: float):
        confusion = BinaryConfusionMatrix(sync_on_compute=False).to(scores.device)  # rank 0 only
        confusion.update((scores >= threshold).long(), labels)
        fig, _ = confusion.plot(labels=["normal", "anomaly"])
        fig.set_size_inches(4.5, 4.5)
        return fig

    def _worst_grid(self, pl_module: LightningModule, scores: Tensor, labels: Tensor) -> Tensor:
        """Top row: the highest-scoring normal images (false positives first) and the
        lowest-scoring anomalies; bottom row: their reconstructions (this rank's images)."""
        images = torch.cat(self.images)
        if len(images) != len(scores):  # DDP: show this rank's shard
            scores, labels = scores[: len(images)], labels[: len(images)]
        normal, anomaly = (labels == 0).nonzero()[:, 0], (labels == 1).nonzero()[:, 0]
        k = self.num_worst
        worst = torch.cat(
            [
                normal[scores[normal].argsort(descending=True)[:k]],
                anomaly[scores[anomaly].argsort()[:k]],
            ]
        )
        rows = [images[worst]]
        if len(self.reconstructions) == len(self.images):
            rows.append(torch.cat(self.reconstructions)[worst].clamp(0, 1))
        return make_grid(torch.cat(rows), nrow=len(worst), pad_value=1)
