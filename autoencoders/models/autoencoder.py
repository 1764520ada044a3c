"""Plain, denoising and convolutional autoencoders (one module, networks injected)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric, MeanSquaredError
from torchmetrics.functional.image import structural_similarity_index_measure

from autoencoders import losses
from autoencoders.augment import augment
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
        max_shift: training images (input and target alike) are translated by up to this many
            pixels (0: off); helps where the healthy training set is small (PneumoniaMNIST).
        hflip: training images are mirrored left to right at random.
        score: what ``anomaly_score`` returns per image: ``"loss"`` (the training loss),
            ``"mse"``, ``"bce"`` or ``"ssim"`` (1 - SSIM of image and reconstruction).
        score_blur: size of a box blur applied to image and reconstruction before ``"mse"`` or
            ``"ssim"`` scores (0 or 1: none); it discounts pixel-level noise and texture that
            differ between X-ray sources.
        score_standardize: with ``"mse"`` or ``"ssim"``, the per-pixel error map (squared error
            or 1 - SSIM) is standardised pixel by pixel with its mean and standard deviation over
            the healthy training images, then averaged: an error where healthy images are
            reconstructed well weighs more than the same error where they are not. The
            statistics are recomputed from the training loader before every validation during
            ``fit`` and saved in the checkpoint (buffers ``score_mean``, ``score_std``).
        optimizer: optimizer factory, called with the parameters.
        scheduler: optional learning-rate scheduler factory, stepped every epoch.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        loss: Literal["mse", "bce"] = "mse",
        noise_std: float = 0.0,
        max_shift: int = 0,
        hflip: bool = False,
        score: Literal["loss", "mse", "bce", "ssim"] = "loss",
        score_blur: int = 0,
        score_standardize: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_latent_sizes(encoder, decoder)
        if score_blur > 1 and (score not in ("mse", "ssim") or score_blur % 2 == 0):
            raise ValueError(
                f"score_blur={score_blur} needs score 'mse' or 'ssim' (got {score!r}) and an odd "
                "size, so that the blurred images keep their shape"
            )
        if score_standardize and score not in ("mse", "ssim"):
            raise ValueError(f"score_standardize needs score 'mse' or 'ssim' (got {score!r})")
        if score_standardize:  # filled by fit_score_statistics; empty until then
            self.register_buffer("score_mean", torch.empty(0))
            self.register_buffer("score_std", torch.empty(0))
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
        score = self.hparams.score
        if score in ("loss", "bce"):
            kind = self.hparams.loss if score == "loss" else score
            return losses.reconstruction(self(x), x, kind)
        if self.hparams.score_standardize:
            if self.score_mean.numel() == 0:
                raise RuntimeError(
                    "score_standardize needs the error statistics of the healthy training images: "
                    "they are computed before each validation during fit (or call "
                    "fit_score_statistics); this model has none"
                )
            errors = (self.error_map(x) - self.score_mean) / self.score_std
            return errors.flatten(1).mean(1)
        x, reconstruction = self._blurred(x)
        if score == "ssim":
            return 1 - structural_similarity_index_measure(
                reconstruction, x, data_range=1.0, reduction="none"
            )
        return (reconstruction - x).square().flatten(1).sum(1)

    def error_map(self, x: Tensor) -> Tensor:
        """Per-pixel error ``[B, C, H, W]`` of kind ``score`` (``"mse"``: squared error,
        ``"ssim"``: 1 - the SSIM map), after ``score_blur``."""
        x, reconstruction = self._blurred(x)
        if self.hparams.score == "ssim":
            _, image = structural_similarity_index_measure(
                reconstruction, x, data_range=1.0, reduction="none", return_full_image=True
            )
            return 1 - image
        return (reconstruction - x).square()

    def _blurred(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Image and reconstruction, both box-blurred when ``score_blur > 1``."""
        reconstruction, size = self.reconstruct(x), self.hparams.score_blur
        if size > 1:
            return box_blur(x, size), box_blur(reconstruction, size)
        return x, reconstruction

    @torch.no_grad()
    def fit_score_statistics(self, loader) -> None:
        """Per-pixel mean and standard deviation of ``error_map`` over the images of ``loader``
        (batches whose first element is the images), for ``score_standardize``; call it in eval
        mode (Lightning does before validation)."""
        maps = torch.cat([self.error_map(batch[0].to(self.device)) for batch in loader])
        self.score_mean = maps.mean(0, keepdim=True)
        self.score_std = maps.std(0, keepdim=True) + 1e-6

    def on_validation_epoch_start(self) -> None:
        if self.hparams.score_standardize and self.trainer.state.fn == "fit":
            if self.trainer.datamodule is None:
                raise RuntimeError(
                    "score_standardize takes its statistics from the training images of the data "
                    "module: fit with datamodule=..., not with loose dataloaders"
                )
            self.fit_score_statistics(self.trainer.datamodule.train_dataloader())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for name in ("score_mean", "score_std"):  # give the empty buffers the saved shapes
            if name in checkpoint["state_dict"] and hasattr(self, name):
                setattr(self, name, torch.empty_like(checkpoint["state_dict"][name]))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x = augment(batch[0], self.hparams.max_shift, self.hparams.hflip)
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


def box_blur(images: Tensor, size: int) -> Tensor:
    """Mean over each pixel's ``size`` x ``size`` neighbourhood (inside the image), same shape."""
    return F.avg_pool2d(images, size, stride=1, padding=size // 2, count_include_pad=False)
