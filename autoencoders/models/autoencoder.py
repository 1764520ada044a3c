"""Plain, denoising and convolutional autoencoders (one module, networks injected)."""

from __future__ import annotations

from typing import Literal

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanSquaredError

from autoencoders import losses
from autoencoders.models.base import (
    EvaluatedModule,
    check_size,
    log_training_step,
    optimizer_config,
)
from autoencoders.scores import ReconstructionScore


class Autoencoder(EvaluatedModule):
    """An encoder / decoder pair trained to reconstruct its input.

    With ``noise_std > 0`` it is a denoising autoencoder: the encoder sees the image plus
    Gaussian noise (clipped to ``[0, 1]``) during training, and the target is the clean image.

    Args:
        encoder: maps images ``[B, C, H, W]`` to codes ``[B, D]``.
        decoder: maps codes ``[B, D]`` to image logits ``[B, C, H, W]``.
        loss: ``"mse"`` (squared error of ``sigmoid(logits)``) or ``"bce"`` (Bernoulli NLL).
        noise_std: standard deviation of the training input noise; 0 turns it off.
        augment: augmentation policy of the training images, input and target alike
            (``autoencoders.augment.Augment``; ``None``: off).
        scorer: what ``anomaly_score`` returns per image
            (``autoencoders.scores.ReconstructionScore``); ``None``: the training loss.
        optimizer: optimizer factory, called with the parameters.
        scheduler: optional learning-rate scheduler factory, stepped every epoch.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        loss: Literal["mse", "bce"] = "mse",
        noise_std: float = 0.0,
        augment: nn.Module | None = None,
        scorer: ReconstructionScore | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if hasattr(encoder, "latent_dim"):
            check_size(decoder, "latent_dim", encoder.latent_dim, "the encoder's code size")
        self.encoder = encoder
        self.decoder = decoder
        self.augment = augment if augment is not None else nn.Identity()
        self.scorer = scorer
        self.needs_training_pass = scorer is not None and scorer.standardize  # its statistics
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.mse = nn.ModuleDict({"val": MeanSquaredError(), "test": MeanSquaredError()})

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction logits of ``x``."""
        return self.decoder(self.encoder(x))

    def reconstruct(self, x: Tensor) -> Tensor:
        """Reconstructed images in ``[0, 1]``."""
        return torch.sigmoid(self(x))

    def embed(self, x: Tensor) -> Tensor:
        """Codes ``[B, D]``."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Images in ``[0, 1]`` decoded from codes ``[B, D]``."""
        return torch.sigmoid(self.decoder(z))

    def anomaly_score(self, x: Tensor) -> Tensor:
        """Per-image anomaly score ``[B]`` (no input noise)."""
        return self._score(x, self(x))

    def _score(self, x: Tensor, logits: Tensor) -> Tensor:
        if self.scorer is None:
            return losses.reconstruction(logits, x, self.hparams.loss)
        return self.scorer(x, torch.sigmoid(logits))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x = self.augment(batch[0])
        noisy = x
        if self.hparams.noise_std > 0:
            noisy = (x + self.hparams.noise_std * torch.randn_like(x)).clamp(0, 1)
        rec = losses.reconstruction(self(noisy), x, self.hparams.loss).mean()
        log_training_step(self, rec, {})
        return rec

    def training_pass_step(self, batch: tuple[Tensor, Tensor]) -> None:
        """Gathers the scorer's statistics over the healthy training images."""
        self.scorer.gather(batch[0], self.reconstruct(batch[0]))

    def evaluate(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """Per-image reconstruction loss, anomaly ``score``, ``codes`` and ``reconstruction``."""
        if self.scorer is not None and self.scorer.sums is not None:  # training pass just ended
            self.scorer.finish(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        x = batch[0]
        codes = self.encoder(x)
        logits = self.decoder(codes)
        reconstruction = torch.sigmoid(logits)
        return {
            "loss": losses.reconstruction(logits, x, self.hparams.loss),
            "score": self._score(x, logits),
            "codes": codes,
            "reconstruction": reconstruction,
        }

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> dict[str, Tensor]:
        outputs = super()._evaluate(batch, stage)
        self.mse[stage].update(outputs["reconstruction"], batch[0])
        self.log(f"{stage}/mse", self.mse[stage], add_dataloader_idx=False)
        return outputs

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x = batch[0]
        outputs = {"reconstruction": self.reconstruct(x), "score": self.anomaly_score(x)}
        if not torch.isnan(self.anomaly_threshold):
            outputs["anomaly"] = (outputs["score"] >= self.anomaly_threshold).long()
        return outputs

    def configure_optimizers(self):
        return optimizer_config(self.optimizer, self.scheduler, self.parameters())
