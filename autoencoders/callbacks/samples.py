"""Samples from a generative model's prior, and how diverse they are."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_warn
from torchvision.utils import make_grid

from autoencoders.callbacks.image_grid import logged_step, tensorboard
from autoencoders.checkpoint import check_family, read_checkpoint
from autoencoders.data.base import is_training_pass
from autoencoders.models.classifier import newest_match


class PriorSampleGrid(Callback):
    """A grid of ``num_samples`` images from ``pl_module.sample(n)`` after every validation and
    after test, always from the same random draw (seed ``seed``, without touching the training
    random stream).

    With ``classifier_checkpoint`` (e.g. a run of ``mnist_classifier.yaml``), the test samples are
    also classified: a histogram of their classes goes to TensorBoard (the seed's diversity table)
    and ``test/sample_class_entropy`` (nats; log(10) = 2.30 when all ten digits are equally
    frequent, 0 when every sample is the same digit) is logged.

    Args:
        num_samples: images per grid (200 as in CS236).
        nrow: images per grid row.
        classifier_checkpoint: checkpoint of an ``EncoderClassifier``, or a glob pattern (the
            newest match is used, e.g. ``runs/mnist_classifier/version_*/checkpoints/best*``);
            when nothing matches, a warning says so and the histogram is skipped.
        seed: seed of the sample draw.
    """

    def __init__(
        self,
        num_samples: int = 200,
        nrow: int = 20,
        classifier_checkpoint: str | None = None,
        seed: int = 0,
    ) -> None:
        self.num_samples = num_samples
        self.nrow = nrow
        self.classifier_checkpoint = classifier_checkpoint
        self.seed = seed
        found = newest_match(classifier_checkpoint) if classifier_checkpoint else None
        if found:  # another family's checkpoint fails here, before a run starts
            hint = " (classifier_checkpoint: train one with `make fit CONFIG=mnist_classifier`)"
            check_family(found, read_checkpoint(found), "EncoderClassifier", hint)

    @torch.no_grad()
    def _samples(self, pl_module: LightningModule) -> torch.Tensor:
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            return pl_module.sample(self.num_samples).clamp(0, 1)

    def _write_grid(self, trainer: Trainer, samples: torch.Tensor, tag: str) -> None:
        writer = tensorboard(trainer)
        if writer is not None and trainer.is_global_zero:
            writer.add_image(tag, make_grid(samples, nrow=self.nrow), logged_step(trainer))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write_grid(trainer, self._samples(pl_module), "val/prior_samples")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        samples = self._samples(pl_module)
        self._write_grid(trainer, samples, "test/prior_samples")
        checkpoint = find_checkpoint(self.classifier_checkpoint)
        if checkpoint is None:
            return
        counts = class_counts(checkpoint, samples, pl_module.device)
        p = counts / counts.sum()
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        pl_module.log("test/sample_class_entropy", entropy)
        writer = tensorboard(trainer)
        if writer is not None and trainer.is_global_zero:
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.bar(range(len(counts)), counts.cpu().numpy())
            ax.set_xticks(range(len(counts)))
            ax.set_xlabel("class predicted by the classifier")
            ax.set_ylabel(f"samples (of {self.num_samples})")
            ax.set_title(f"entropy {entropy:.3f} nats (max {math.log(len(counts)):.3f})")
            fig.tight_layout()
            writer.add_figure("test/sample_classes", fig, logged_step(trainer))
            plt.close(fig)


def find_checkpoint(pattern: str | None) -> str | None:
    """The newest file matching ``pattern`` (a path or a glob), or ``None`` with a warning."""
    if pattern is None:
        return None
    match = newest_match(pattern)
    if match is None:
        rank_zero_warn(
            f"no classifier checkpoint matches {pattern!r}: the class histogram of the samples "
            "is skipped (train one with `make fit CONFIG=mnist_classifier`)"
        )
        return None
    return match


@torch.no_grad()
def class_counts(checkpoint: str, samples: torch.Tensor, device: torch.device) -> torch.Tensor:
    """How many ``samples`` the classifier of ``checkpoint`` puts in each class."""
    from autoencoders.models import EncoderClassifier

    classifier = EncoderClassifier.load_from_checkpoint(
        checkpoint, map_location=device, weights_only=True
    ).eval()
    logits = classifier.classify(samples.to(device))
    return torch.bincount(logits.argmax(1), minlength=logits.shape[1]).float()


class LatentGaussianGrid(Callback):
    """Generation from a plain autoencoder: after every validation, decodes ``num_samples``
    codes drawn from a Gaussian fitted (mean and full covariance) to the ``codes`` that the
    validation steps return for the first ``num_fit`` validation images, and interpolates
    linearly between the codes of pairs of validation images (one row per pair, the two
    originals' reconstructions at its ends).

    Needs ``embed(x)`` and ``decode(z)`` for the interpolation rows.

    Args:
        num_samples: images in the sample grid.
        num_fit: validation images whose codes fit the Gaussian (this rank's).
        pairs: interpolation rows.
        steps: images per interpolation row.
        seed: seed of the sample draw (the training random stream is left alone).
    """

    def __init__(
        self, num_samples: int = 64, num_fit: int = 5000, pairs: int = 8, steps: int = 10,
        seed: int = 0,
    ) -> None:  # fmt: skip
        self.num_samples = num_samples
        self.num_fit = num_fit
        self.pairs = pairs
        self.steps = steps
        self.seed = seed
        self.images: torch.Tensor | None = None
        self.codes: list[torch.Tensor] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.codes = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        if is_training_pass(trainer, dl_idx):
            return
        if self.images is None and batch_idx == 0:
            self.images = batch[0][: 2 * self.pairs].detach().clone()
        if sum(len(c) for c in self.codes) < self.num_fit:
            self.codes.append(outputs["codes"].detach().float())

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        was_training = pl_module.training
        pl_module.eval()
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the draw
            torch.manual_seed(self.seed)
            codes = torch.cat(self.codes)[: self.num_fit]
            eye = torch.eye(codes.shape[1], device=codes.device)
            gaussian = torch.distributions.MultivariateNormal(
                codes.mean(0), torch.cov(codes.T) + 1e-5 * eye
            )
            z = gaussian.sample((self.num_samples,))
        step = logged_step(trainer)
        samples = pl_module.decode(z.to(pl_module.dtype)).clamp(0, 1)
        writer.add_image("val/samples_latent_gaussian", make_grid(samples, nrow=16), step)
        if self.images is not None and len(self.images) >= 2:
            ends = pl_module.embed(self.images.to(pl_module.device))
            start, end = ends[0::2], ends[1::2]
            n = min(len(start), len(end))
            t = torch.linspace(0, 1, self.steps, device=ends.device).view(1, -1, 1)
            path = start[:n, None] * (1 - t) + end[:n, None] * t  # [pairs, steps, D]
            images = pl_module.decode(path.flatten(0, 1)).clamp(0, 1)
            writer.add_image("val/interpolations", make_grid(images, nrow=self.steps), step)
        pl_module.train(was_training)
