"""Figures and scores of a model's latent space, from the ``codes`` its evaluation steps return."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_only
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from sklearn.model_selection import KFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from autoencoders.callbacks.image_grid import logged_step, tensorboard
from autoencoders.data.base import is_training_pass


class LatentPriorFigure(Callback):
    """Scatter of validation codes (coloured by label) over samples of the prior, after every
    validation: shows whether the aggregated posterior matches the prior. Codes wider than 2
    are projected on the first two principal axes of the prior samples.

    Reads the ``codes`` the validation steps return; needs ``sample_prior(n)``.

    Args:
        num_points: validation images embedded (and prior samples drawn).
    """

    def __init__(self, num_points: int = 2000) -> None:
        self.num_points = num_points
        self.codes: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.codes, self.labels = [], []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        if is_training_pass(trainer, dl_idx):
            return
        if sum(len(c) for c in self.codes) < self.num_points:
            self.codes.append(outputs["codes"].detach())
            self.labels.append(batch[1])

    @rank_zero_only
    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None or trainer.sanity_checking or not self.codes:
            return
        codes = torch.cat(self.codes)[: self.num_points].float().cpu().numpy()
        labels = torch.cat(self.labels)[: self.num_points].cpu().numpy()
        prior = pl_module.sample_prior(len(codes)).float().cpu().numpy()
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


class LatentMap(Callback):
    """After test, maps of the same test images side by side, coloured by class: the model's
    codes (its 2-D latent, or the first two principal components of a wider one), PCA of the raw
    pixels, and t-SNE of the raw pixels. Each map gets two numbers, so "which separates the
    classes better" is measured: ``test/knn_acc_<map>`` (5-nearest-neighbour accuracy, 5-fold
    cross-validation over the points) and ``test/silhouette_<map>`` (silhouette of the classes).
    ``test/knn_acc_codes`` scores the full codes too.

    Reads the ``codes`` the test steps return. The images are the first ``num_points`` of the
    test set (rank 0's shard under DDP).

    Args:
        num_points: test images mapped.
        tsne: include the t-SNE map (the slow part: about 10 s for 2000 points).
        seed: random state of t-SNE and of the cross-validation folds.
        class_names: legend entries (default: the class indices).
    """

    def __init__(
        self,
        num_points: int = 2000,
        tsne: bool = True,
        seed: int = 0,
        class_names: list[str] | None = None,
    ) -> None:
        self.num_points = num_points
        self.tsne = tsne
        self.seed = seed
        self.class_names = class_names
        self.images: list[torch.Tensor] = []
        self.codes: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.images, self.codes, self.labels = [], [], []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        if sum(len(x) for x in self.images) < self.num_points:
            self.images.append(batch[0].detach())
            self.codes.append(outputs["codes"].detach())
            self.labels.append(batch[1].detach())

    @torch.no_grad()
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or not self.images:
            return
        x = torch.cat(self.images)[: self.num_points]
        labels = torch.cat(self.labels)[: self.num_points].cpu().numpy()
        codes = torch.cat(self.codes)[: self.num_points].float().cpu().numpy()
        pixels = x.flatten(1).float().cpu().numpy()
        maps = {
            "latent": codes if codes.shape[1] == 2 else PCA(2).fit_transform(codes),
            "pca": PCA(2).fit_transform(pixels),
        }
        if self.tsne:
            maps["tsne"] = TSNE(2, init="pca", random_state=self.seed).fit_transform(pixels)
        folds = KFold(5, shuffle=True, random_state=self.seed)
        knn = KNeighborsClassifier(5)
        scores = {"codes": cross_val_score(knn, codes, labels, cv=folds).mean()}
        scores |= {
            name: cross_val_score(knn, m, labels, cv=folds).mean() for name, m in maps.items()
        }
        for name, value in scores.items():
            pl_module.log(f"test/knn_acc_{name}", float(value), rank_zero_only=True)
        for name, points in maps.items():
            silhouette = silhouette_score(points, labels)
            pl_module.log(f"test/silhouette_{name}", float(silhouette), rank_zero_only=True)
        writer = tensorboard(trainer)
        if writer is None:
            return
        titles = {"latent": "model latent", "pca": "PCA of pixels", "tsne": "t-SNE of pixels"}
        if codes.shape[1] > 2:
            titles["latent"] = f"model latent ({codes.shape[1]}-d, PCA)"
        fig, axes = plt.subplots(1, len(maps), figsize=(5.5 * len(maps), 5.2))
        colours = plt.get_cmap("tab10")
        for ax, (name, points) in zip(axes, maps.items(), strict=True):
            ax.scatter(points[:, 0], points[:, 1], s=3, c=colours(labels % 10))
            ax.set_title(f"{titles[name]}: 5-NN acc {scores[name]:.3f}")
            ax.set_xticks([]), ax.set_yticks([])
        classes = sorted(set(labels.tolist()))
        names = [self.class_names[c] if self.class_names else str(c) for c in classes]
        handles = [plt.Line2D([], [], ls="", marker="o", color=colours(c % 10)) for c in classes]
        fig.legend(handles, names, loc="center right", fontsize="small")
        fig.tight_layout(rect=(0, 0, 0.9, 1))
        writer.add_figure("test/latent_maps", fig, logged_step(trainer))
        plt.close(fig)
