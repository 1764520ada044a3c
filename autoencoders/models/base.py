"""What several families share: ``{stage}/loss`` on validation and test, and optimizers built from
the injected factories."""

from __future__ import annotations

from collections.abc import Iterable

from pytorch_lightning import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric


class EvaluatedModule(LightningModule):
    """Validation and test log ``{stage}/loss``: the mean over the whole split of
    ``eval_loss(batch)`` (one value per image), a torchmetrics mean so DDP ranks agree.
    Everything else is measured by callbacks."""

    def __init__(self) -> None:
        super().__init__()
        self.eval_losses = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})

    def eval_loss(self, batch) -> Tensor:
        """Per-image loss ``[B]`` of an evaluation batch."""
        raise NotImplementedError

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch, stage: str) -> None:
        self.eval_losses[stage].update(self.eval_loss(batch))
        self.log(f"{stage}/loss", self.eval_losses[stage], prog_bar=True)


def optimizer_config(optimizer, scheduler, params: Iterable) -> dict | object:
    """The ``configure_optimizers`` result of an optimizer factory and an optional scheduler
    factory (LightningCLI's ``OptimizerCallable`` / ``LRSchedulerCallable``)."""
    built = optimizer(params)
    if scheduler is None:
        return built
    return {"optimizer": built, "lr_scheduler": scheduler(built)}
