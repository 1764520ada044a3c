"""Stacked (denoising) autoencoders: greedy layer-wise pre-training, then the stack fine-tuned as a
classifier (Bengio et al. 2007; Vincent et al. 2010, section 3.5, with input corruption).

One run does both phases. For the first ``pretrain_epochs * len(hidden)`` epochs, stage ``k``
(``pretrain_epochs`` epochs each) trains layer ``k`` alone as an autoencoder of the codes of the
frozen layers below it; then every layer and a linear head train together with cross-entropy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from autoencoders.models.base import EvaluatedModule, log_training_step, optimizer_config
from autoencoders.nn.mlp import make_activation


class StackedAutoencoder(EvaluatedModule):
    """An MLP encoder pre-trained layer by layer, then fine-tuned with a classification head.

    Args:
        hidden: sizes of the encoder's layers, e.g. ``[500, 200, 50]``.
        input_shape: ``(channels, height, width)`` of the images.
        num_classes: classes of the fine-tuned classifier.
        pretrain_epochs: epochs of each layer's pre-training stage (0 skips pre-training).
        noise_std: Gaussian corruption of each layer's input during its pre-training (denoising).
        activation: activation of the encoder layers.
        dropout: dropout on every layer's output during fine-tuning.
        optimizer: optimizer factory, called with all parameters once; at the start of every
            epoch only the current stage's parameters keep ``requires_grad`` (the layer being
            pre-trained and its decoder; then the encoder stack and the head), so the optimizer
            leaves the others alone. Under DDP use ``strategy: ddp_find_unused_parameters_true``.
        scheduler: optional learning-rate scheduler factory, stepped every epoch.
    """

    def __init__(
        self,
        hidden: Sequence[int] = (500, 200, 50),
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        pretrain_epochs: int = 3,
        noise_std: float = 0.0,
        activation: str = "relu",
        dropout: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        sizes = [math.prod(input_shape), *hidden]
        self.encoder = nn.ModuleList(
            nn.Sequential(nn.Linear(n_in, n_out), make_activation(activation))
            for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.decoder = nn.ModuleList(
            nn.Linear(n_out, n_in) for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.head = nn.Linear(sizes[-1], num_classes)
        self.dropout = nn.Dropout(dropout)
        self.optimizer = optimizer
        self.scheduler = scheduler

    @property
    def stage(self) -> int:
        """The layer being pre-trained, or ``len(hidden)`` once fine-tuning."""
        if self._trainer is None:
            return len(self.encoder)
        return min(self.current_epoch // max(1, self.hparams.pretrain_epochs), len(self.encoder))

    @property
    def fine_tuning(self) -> bool:
        return self.hparams.pretrain_epochs == 0 or self.stage == len(self.encoder)

    def on_train_epoch_start(self) -> None:
        """Freezes everything outside the current stage."""
        if self.fine_tuning:
            trained = [self.encoder, self.head]
        else:
            trained = [self.encoder[self.stage], self.decoder[self.stage]]
        self.requires_grad_(False)
        for module in trained:
            module.requires_grad_(True)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``[B, num_classes]``."""
        h = x.flatten(1)
        for layer in self.encoder:
            h = self.dropout(layer(h))
        return self.head(h)

    def classify(self, x: Tensor) -> Tensor:
        """Class logits ``[B, num_classes]``."""
        return self(x)

    def embed(self, x: Tensor) -> Tensor:
        """The top layer's code ``[B, hidden[-1]]``."""
        h = x.flatten(1)
        for layer in self.encoder:
            h = layer(h)
        return h

    def reconstruct(self, x: Tensor) -> Tensor:
        """The image through every encoder layer and back through every decoder, in ``[0, 1]``."""
        h = self.embed(x)
        for decoder in reversed(self.decoder[1:]):
            h = decoder(h)
        return torch.sigmoid(self.decoder[0](h)).view_as(x)

    def layer_loss(self, x: Tensor, k: int) -> Tensor:
        """Per-sample squared reconstruction error of layer ``k`` on the frozen codes below it
        (the image itself for layer 0, compared after a sigmoid): ``[B]``."""
        with torch.no_grad():
            h = x.flatten(1)
            for layer in self.encoder[:k]:
                h = layer(h)
        noisy = h + self.hparams.noise_std * torch.randn_like(h) if self.hparams.noise_std else h
        output = self.decoder[k](self.encoder[k](noisy))
        if k == 0:
            output = torch.sigmoid(output)
        return (output - h).square().sum(1)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch["labelled"] if isinstance(batch, dict) else batch
        if self.fine_tuning:
            loss = F.cross_entropy(self(x), y)
            term = "train/cls"
        else:
            loss = self.layer_loss(x, self.stage).mean()
            term = f"train/rec_layer{self.stage}"
        log_training_step(self, loss, {term: loss.detach(), "train/stage": float(self.stage)})
        return loss

    def evaluate(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """The classifier's cross-entropy per image (high until fine-tuning starts), its
        ``logits`` and the top layer's ``codes`` (no dropout outside training)."""
        x, y = batch
        codes = self.embed(x)
        logits = self.head(codes)
        return {
            "loss": F.cross_entropy(logits, y, reduction="none"),
            "logits": logits,
            "codes": codes,
        }

    def configure_optimizers(self):
        return optimizer_config(self.optimizer, self.scheduler, self.parameters())
