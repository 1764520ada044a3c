"""Plain, denoising and convolutional autoencoders (one module, networks injected)."""

from __future__ import annotations

from typing import Literal

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric, MeanSquaredError
from torchmetrics.functional.image import structural_similarity_index_measure

from autoencoders import losses
from autoencoders.models.base import optimizer_config


class Autoencoder(LightningModule):
    """An encoder / decoder pair trained to reconstruct its input.

    With ``noise_std > 0`` it is a denoising autoencoder: the encoder sees the image plus
    Gaussian noise (clipped to ``[0, 1]``) during training, and the target is the clean image.

    Args:
        encoder: maps images ``[B, C, H, W]`` to codes ``[B, D]``.
        decoder: maps codes ``[B, D]`` to image logits ``[B, C, H, W]``.
        loss: ``"mse"`` (squared error of ``sigmoid(logits)``) or ``"bce"`` (Bernoulli NLL).
        noise_std: standard deviation of the training input noise; 0 turns it off.
        score: what ``anomaly_score`` returns per image: ``"loss"`` (the training loss),
            ``"mse"``, ``"bce"`` or ``"ssim"`` (1 - SSIM of image and reconstruction).
        optimizer: optimizer factory, called with the parameters.
        scheduler: optional learning-rate scheduler factory, stepped every epoch.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        loss: Literal["mse", "bce"] = "mse",
        noise_std: float = 0.0,
        score: Literal["loss", "mse", "bce", "ssim"] = "loss",
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_latent_sizes(encoder, decoder)
        self.encoder = encoder
        self.decoder = decoder
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.metrics = nn.ModuleDict(
            {
                stage: nn.ModuleDict(
                    {"loss": MeanMetric(), "rec": MeanMetric(), "mse": MeanSquaredError()}
                )
                for stage in ("val", "test")
            }
        )

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
        """Per-image reconstruction error ``[B]`` of kind ``score`` (no input noise)."""
        score, logits = self.hparams.score, self(x)
        if score == "ssim":
            return 1 - structural_similarity_index_measure(
                torch.sigmoid(logits), x, data_range=1.0, reduction="none"
            )
        return losses.reconstruction(logits, x, self.hparams.loss if score == "loss" else score)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x = batch[0]
        noisy = x
        if self.hparams.noise_std > 0:
            noisy = (x + self.hparams.noise_std * torch.randn_like(x)).clamp(0, 1)
        rec = losses.reconstruction(self(noisy), x, self.hparams.loss).mean()
        self.log_dict({"train/loss": rec, "train/rec": rec}, prog_bar=True)
        return rec

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x = batch[0]
        logits = self(x)
        rec = losses.reconstruction(logits, x, self.hparams.loss)
        metrics = self.metrics[stage]
        metrics["loss"].update(rec)
        metrics["rec"].update(rec)
        metrics["mse"].update(torch.sigmoid(logits), x)
        self.log_dict({f"{stage}/{name}": m for name, m in metrics.items()}, prog_bar=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x = batch[0]
        return {"reconstruction": self.reconstruct(x), "score": self.anomaly_score(x)}

    def configure_optimizers(self):
        return optimizer_config(self.optimizer, self.scheduler, self.parameters())


def check_latent_sizes(encoder: nn.Module, decoder: nn.Module) -> None:
    """Fails early, with both sizes named, when encoder and decoder disagree on the code size."""
    enc, dec = getattr(encoder, "latent_dim", None), getattr(decoder, "latent_dim", None)
    if enc is not None and dec is not None and enc != dec:
        raise ValueError(
            f"encoder latent_dim={enc} but decoder latent_dim={dec}: set both to the same size"
        )
