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
