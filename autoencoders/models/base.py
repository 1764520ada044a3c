"""What every family shares: evaluation that returns what it computed, the anomaly threshold
as model state, and optimizers and schedulers built from the injected factories."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from pytorch_lightning import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric

from autoencoders.data.base import is_training_pass


class EvaluatedModule(LightningModule):
    """Validation and test steps run ``evaluate(batch)`` once: per-image tensors, always
    ``loss`` (logged as ``{stage}/loss``, a torchmetrics mean) and what the family computes on
    the way (``logits``, ``rec`` and ``kl``, ``score``, ``codes``), returned for the evaluation
    callbacks. With ``needs_training_pass`` (the model's or a callback's), validation loader 0
    holds the training images, which go to ``training_pass_step`` and are not logged. The
    buffer ``anomaly_threshold`` (NaN until ``AnomalyThreshold`` fits it) lets a loaded
    checkpoint ``detect`` anomalies without any callback."""

    needs_training_pass = False

    def __init__(self) -> None:
        super().__init__()
        self.eval_losses = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})
        self.register_buffer("anomaly_threshold", torch.tensor(float("nan")))

    def evaluate(self, batch) -> dict[str, Tensor]:
        """Per-image results of an evaluation batch, at least ``loss`` ``[B]``."""
        raise NotImplementedError

    def training_pass_step(self, batch) -> dict[str, Tensor]:
        """A batch of training images seen in validation (see ``needs_training_pass``)."""
        return self.evaluate(batch)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        if is_training_pass(self.trainer, dataloader_idx):
            return self.training_pass_step(batch)
        return self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        return self._evaluate(batch, "test")

    def _evaluate(self, batch, stage: str) -> dict[str, Tensor]:
        outputs = self.evaluate(batch)
        self.eval_losses[stage].update(outputs["loss"])
        self.log(f"{stage}/loss", self.eval_losses[stage], prog_bar=True, add_dataloader_idx=False)
        return outputs

    def detect(self, x: Tensor) -> dict[str, Tensor]:
        """``score`` (``anomaly_score``) and ``anomaly`` (1 where the score reaches the fitted
        threshold) per image."""
        if torch.isnan(self.anomaly_threshold):
            raise RuntimeError(
                "this model has no anomaly threshold: fit it with the AnomalyThreshold callback "
                "(validation fits it and checkpoints save it)"
            )
        score = self.anomaly_score(x)
        return {"score": score, "anomaly": (score >= self.anomaly_threshold).long()}


def log_training_step(module: LightningModule, loss: Tensor, terms: dict[str, Tensor]) -> None:
    """Logs a training step's ``train/loss`` (the progress bar shows it) and its other
    ``terms`` on the batches whose logs Lightning writes to the logger (every
    ``log_every_n_steps``-th) and on the first batch of every epoch (the bar has a loss at
    once): each ``self.log`` costs 1-2 ms of host time (Lightning's result bookkeeping), a
    tenth of a VAE step on this project's CPU, and values logged in between are never written.
    The step returns every term for the callbacks (``NonFiniteGuard`` queues them all, every
    step, on the device)."""
    trainer = module._trainer
    if (
        trainer is None
        or trainer._logger_connector.should_update_logs
        or trainer.fit_loop.epoch_loop.batch_idx == 0
        or trainer.fast_dev_run
    ):
        module.log("train/loss", loss, prog_bar=True)
        module.log_dict(terms)


def check_size(network: nn.Module, attribute: str, expected: int, rule: str) -> None:
    """Fails early when a network declares a size (``attribute``, where it has one) other than
    the one the model needs, naming the ``rule``."""
    actual = getattr(network, attribute, None)
    if actual is not None and actual != expected:
        name = type(network).__name__
        raise ValueError(f"{name} {attribute}={actual}, expected {expected}: {rule}")


def optimizer_config(optimizer, scheduler, params: Iterable) -> dict | object:
    """The ``configure_optimizers`` result of an optimizer factory and an optional scheduler
    factory (LightningCLI's ``OptimizerCallable`` / ``LRSchedulerCallable``)."""
    built = optimizer(params)
    if scheduler is None:
        return built
    return {"optimizer": built, "lr_scheduler": scheduler(built)}


def step_schedulers(module: LightningModule) -> None:
    """Steps every learning-rate scheduler of a manual-optimization module (call it at the end
    of each training epoch: Lightning steps them only under automatic optimization)."""
    schedulers = module.lr_schedulers()
    if schedulers is None:
        return
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        scheduler.step()
