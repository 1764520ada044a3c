"""A classifier on top of an encoder: trained from scratch, or reusing a trained autoencoder's
encoder, fine-tuned or frozen."""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from autoencoders.checkpoint import read_checkpoint
from autoencoders.models.base import EvaluatedModule, log_training_step, optimizer_config
from autoencoders.nn import MLP


class EncoderClassifier(EvaluatedModule):
    """``head(encoder(x))`` trained with cross-entropy.

    Args:
        encoder: maps images to features ``[B, encoder.latent_dim]``.
        num_classes: number of classes.
        hidden: hidden sizes of the MLP head; empty gives a linear head.
        dropout: dropout before the head and after each hidden layer of the head.
        encoder_checkpoint: a checkpoint of any model of this package with an ``encoder``
            (autoencoder, VAE, AAE, ...), or a glob pattern (the newest match is used, e.g.
            ``runs/conv_ae_fashion/version_*/checkpoints/best*.ckpt``): when fitting starts its
            encoder weights are loaded into ``encoder``, which must have the same architecture
            (a file that is there is also loaded at construction, so that a wrong one fails
            before a run starts). ``None`` trains the same network from scratch.
        freeze_encoder: keep the encoder's weights fixed (no gradients, eval mode).
        augment: augmentation policy of the training images
            (``autoencoders.augment.Augment``; ``None``: off).
        tta_hflip: outside training, ``classify`` averages the class probabilities of each
            image and of its mirror image (test-time augmentation: the validation and test
            loss and every callback that calls ``classify``); training is unchanged.
        optimizer: optimizer factory, called with the parameter groups.
        scheduler: optional learning-rate scheduler factory, stepped every epoch.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int = 10,
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
        encoder_checkpoint: str | None = None,
        freeze_encoder: bool = False,
        augment: nn.Module | None = None,
        tta_hflip: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = encoder
        if freeze_encoder:  # eval mode from the start: Lightning restores each module's mode
            self.encoder.requires_grad_(False).eval()
        self.head = nn.Sequential(
            nn.Dropout(dropout), MLP(encoder.latent_dim, hidden, num_classes, dropout=dropout)
        )
        self.augment = augment if augment is not None else nn.Identity()
        self.optimizer = optimizer
        self.scheduler = scheduler
        if encoder_checkpoint is not None and newest_match(encoder_checkpoint):
            load_encoder(self.encoder, encoder_checkpoint)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``[B, num_classes]``."""
        return self.head(self.encoder(x))

    def classify(self, x: Tensor) -> Tensor:
        """Class logits ``[B, num_classes]``; with ``tta_hflip`` outside training, the log of
        the mean probabilities of ``x`` and of ``x`` mirrored (a valid logit vector)."""
        if not self.hparams.tta_hflip or self.training:
            return self(x)
        views = self(torch.cat([x, x.flip(-1)])).log_softmax(dim=1).unflatten(0, (2, len(x)))
        return views.logsumexp(dim=0) - math.log(2)

    def embed(self, x: Tensor) -> Tensor:
        """The encoder's features."""
        return self.encoder(x)

    def setup(self, stage: str) -> None:
        """Loads the pre-trained encoder before fitting (a resumed run then restores its own
        weights over it; a trained classifier loads without the autoencoder's checkpoint)."""
        if stage == "fit" and self.hparams.encoder_checkpoint is not None:
            load_encoder(self.encoder, self.hparams.encoder_checkpoint)

    def train(self, mode: bool = True):
        """A frozen encoder stays in eval mode (its dropout and batch-norm statistics too)."""
        super().train(mode)
        if self.hparams.freeze_encoder:
            self.encoder.eval()
        return self

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch["labelled"] if isinstance(batch, dict) else batch
        x = self.augment(x)
        loss = F.cross_entropy(self(x), y)
        log_training_step(self, loss, {})
        return loss

    def evaluate(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """Cross-entropy per image, the class ``logits`` (``classify``) and the encoder's
        features as ``codes``."""
        x, y = batch
        codes = self.encoder(x)
        logits = self.classify(x) if self.hparams.tta_hflip else self.head(codes)
        return {
            "loss": F.cross_entropy(logits, y, reduction="none"),
            "logits": logits,
            "codes": codes,
        }

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]
        return optimizer_config(self.optimizer, self.scheduler, trainable)


def load_encoder(encoder: nn.Module, checkpoint: str) -> None:
    """Loads the ``encoder.*`` weights of a Lightning checkpoint (a path, or a glob pattern whose
    newest match is used) into ``encoder``."""
    match = newest_match(checkpoint)
    if match is None:
        raise ValueError(
            f"no encoder checkpoint matches {checkpoint!r}: train the autoencoder first (e.g. "
            "`make fit CONFIG=conv_ae_fashion`) or pass --model.encoder_checkpoint PATH"
        )
    checkpoint = match
    state = read_checkpoint(checkpoint)["state_dict"]
    weights = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    if not weights:
        raise ValueError(f"{checkpoint} has no encoder weights (no 'encoder.*' entries)")
    try:
        encoder.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(
            f"the encoder in {checkpoint} does not match the configured encoder: {err}"
        ) from None


def newest_match(pattern: str) -> str | None:
    """The most recently modified file matching ``pattern`` (a path or a glob), or ``None``."""
    matches = sorted(glob.glob(pattern), key=os.path.getmtime)
    return matches[-1] if matches else None
