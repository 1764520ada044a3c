"""Anomaly detection for any model with ``anomaly_score(x) -> [B]``: a decision threshold fitted
on validation scores, and the detection metrics it gives on test.

Label 1 is the anomaly (PneumoniaMNIST: pneumonia); an image is called anomalous when its score
is at least the threshold.
"""

from __future__ import annotations

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
    binary_roc,
    binary_stat_scores,
)
from torchvision.utils import make_grid

from autoencoders.callbacks.image_grid import logged_step, tensorboard

RULES = ("max_accuracy", "max_f1", "youden", "healthy_quantile")


def fit_threshold(scores: Tensor, labels: Tensor, rule: str, quantile: float = 0.95) -> float:
    """The threshold that ``rule`` picks among the observed scores.

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
    candidates = scores.unique()  # ascending
    predicted = scores.unsqueeze(0) >= candidates.unsqueeze(1)  # [C, N]
    positive = labels.bool().unsqueeze(0)
    tp = (predicted & positive).sum(1).double()
    fp = (predicted & ~positive).sum(1).double()
    fn = (~predicted & positive).sum(1).double()
    tn = (~predicted & ~positive).sum(1).double()
    if rule == "max_accuracy":
        objective = (tp + tn) / len(scores)
    elif rule == "max_f1":
        objective = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    else:
        objective = tp / (tp + fn) - fp / (fp + tn)
    return candidates[objective.argmax()].item()


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
    """Scores validation and test images with ``pl_module.anomaly_score``, fits the threshold on
    validation, and reports detection metrics.

    After every validation: ``val/auroc``, ``val/auprc``, ``val/threshold`` (and the metrics of
    the new threshold on validation). After test: ``test/auroc``, ``test/auprc``, ``test/acc``,
    ``test/balanced_acc``, ``test/f1``, ``test/sensitivity``, ``test/specificity`` at the last
    fitted threshold, plus figures: score histograms per class with the threshold, the ROC curve,
    the confusion matrix, and the worst false positives / negatives above their
    reconstructions. Scores are gathered from every rank (torchmetrics ``CatMetric``), so the
    numbers under DDP equal one process's. The threshold is saved in checkpoints, and
    ``predict`` outputs get ``threshold`` and ``anomaly`` (0 / 1) columns.

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
        self.threshold: float | None = None
        self.scores, self.labels = CatMetric(), CatMetric()
        self.images: list[Tensor] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.scores.to(pl_module.device)
        self.labels.to(pl_module.device)

    def state_dict(self) -> dict:
        return {"threshold": self.threshold, "rule": self.rule}

    def load_state_dict(self, state_dict: dict) -> None:
        self.threshold = state_dict["threshold"]

    def _start(self) -> None:
        self.scores.reset()
        self.labels.reset()
        self.images = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start()

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start()

    @torch.no_grad()
    def _update(self, pl_module: LightningModule, batch) -> None:
        x, y = batch
        self.scores.update(pl_module.anomaly_score(x).float())
        self.labels.update(y.float())
        self.images.append(x.detach().cpu())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._update(pl_module, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._update(pl_module, batch)

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
        self.threshold = fit_threshold(scores, labels, rule, self.quantile)
        logs = {"val/threshold": torch.tensor(self.threshold)}
        if labels.min() != labels.max():
            metrics = detection_metrics(scores, labels, self.threshold)
            logs |= {f"val/{k}": v for k, v in metrics.items()}
        pl_module.log_dict({k: v.float() for k, v in logs.items()})

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.threshold is None:
            rank_zero_warn("no threshold fitted yet (validate first): test metrics skipped")
            return
        scores, labels = self.scores.compute(), self.labels.compute().long()
        metrics = detection_metrics(scores, labels, self.threshold)
        pl_module.log_dict({f"test/{k}": v.float() for k, v in metrics.items()})
        writer = tensorboard(trainer)
        if writer is not None and trainer.is_global_zero:
            step = logged_step(trainer)
            writer.add_figure("test/scores", self._score_figure(scores, labels), step)
            writer.add_figure("test/confusion_matrix", self._confusion_figure(scores, labels), step)
            grid = self._worst_grid(pl_module, scores.cpu(), labels.cpu())
            writer.add_image("test/worst_errors", grid, step)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        if self.threshold is not None and isinstance(outputs, dict) and "score" in outputs:
            outputs["threshold"] = torch.full_like(outputs["score"], self.threshold)
            outputs["anomaly"] = (outputs["score"] >= self.threshold).long()

    def _score_figure(self, scores: Tensor, labels: Tensor):
        scores, labels = scores.cpu(), labels.cpu()
        fig, (hist, roc) = plt.subplots(1, 2, figsize=(11, 4))
        for value, name in ((0, "normal"), (1, "anomaly")):
            hist.hist(scores[labels == value].numpy(), bins=40, alpha=0.6, label=name)
        hist.axvline(self.threshold, color="k", linestyle="--", label=f"threshold ({self.rule})")
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

    def _confusion_figure(self, scores: Tensor, labels: Tensor):
        confusion = BinaryConfusionMatrix(sync_on_compute=False).to(scores.device)  # rank 0 only
        confusion.update((scores >= self.threshold).long(), labels)
        fig, _ = confusion.plot(labels=["normal", "anomaly"])
        fig.set_size_inches(4.5, 4.5)
        return fig

    @torch.no_grad()
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
        x = images[worst].to(pl_module.device)
        rows = [x]
        if hasattr(pl_module, "reconstruct"):
            rows.append(pl_module.reconstruct(x).clamp(0, 1))
        return make_grid(torch.cat(rows), nrow=len(x), pad_value=1)
