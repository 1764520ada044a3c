"""Figures of a model's latent space, for models with ``embed(x)``."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_only
from sklearn.decomposition import PCA

from autoencoders.callbacks.image_grid import logged_step, tensorboard


class LatentPriorFigure(Callback):
    """Scatter of validation codes (coloured by label) over samples of the prior, after every
    validation: shows whether the aggregated posterior matches the prior. Codes wider than 2
    are projected on the first two principal axes of the prior samples.

    Needs ``embed(x)`` and ``sample_prior(n)``.

    Args:
        num_points: validation images embedded (and prior samples drawn).
    """

    def __init__(self, num_points: int = 2000) -> None:
        self.num_points = num_points
        self.images: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.images, self.labels = [], []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        if sum(len(x) for x in self.images) < self.num_points:
            self.images.append(batch[0])
            self.labels.append(batch[1])

    @rank_zero_only
    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None or trainer.sanity_checking or not self.images:
            return
        x = torch.cat(self.images)[: self.num_points]
        labels = torch.cat(self.labels)[: self.num_points].cpu().numpy()
        codes = pl_module.embed(x).float().cpu().numpy()
        prior = pl_module.sample_prior(len(x)).float().cpu().numpy()
        if codes.shape[1] > 2:
            pca = PCA(n_components=2).fit(prior)
            codes, prior = pca.transform(codes), pca.transform(prior)
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.scatter(prior[:, 0], prior[:, 1], s=3, c="lightgrey", label="prior samples")
        points = ax.scatter(codes[:, 0], codes[:, 1], s=3, c=labels, cmap="tab10")
        fig.colorbar(points, ax=ax, label="label")
        ax.legend(loc="upper right")
        ax.set_title("codes of validation images vs prior")
        writer.add_figure("val/latent_vs_prior", fig, logged_step(trainer))
        plt.close(fig)
