"""Adversarial autoencoder (Makhzani et al., "Adversarial Autoencoders", ICLR 2016 workshop).

Section 5 (semi-supervised classification): the encoder q(y, z | x) outputs label logits and a
style code; the decoder reconstructs x from (softmax(y), z). Two discriminators push the
aggregated posteriors toward the priors: a categorical prior on y and a Gaussian prior on z. Each
mini-batch runs three phases with their own optimizers:

1. reconstruction: encoder and decoder minimise the reconstruction loss;
2. regularization: the discriminators learn to tell prior samples from codes, then the encoder
   (the generator) is updated to fool both;
3. semi-supervised classification: cross-entropy of the label logits on a labelled mini-batch.

Optionally (``consistency``, not in the paper) phase 3 also trains the label head on pseudo-labels
of the unlabelled batch, and the generator phase adds a class-balance term. Section 6
(clustering) is the same model without labels: y is a cluster id over ``n_classes`` clusters.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from autoencoders import losses
from autoencoders.consistency import Consistency
from autoencoders.models.base import EvaluatedModule, check_size, log_training_step, step_schedulers


class AdversarialAutoencoder(EvaluatedModule):
    """Semi-supervised (or clustering) adversarial autoencoder with manual optimization.

    Args:
        encoder: maps images to ``[B, n_classes + style_dim]``: label logits, then the style.
        decoder: maps ``[B, n_classes + style_dim]`` (label probabilities, style) to image logits.
        disc_z: discriminator on the style, ``[B, style_dim] -> [B, 1]`` logits.
        disc_y: discriminator on the label probabilities, ``[B, n_classes] -> [B, 1]`` logits.
        n_classes: number of classes (or clusters).
        style_dim: size of the style code z (its prior is N(0, I)).
        loss: reconstruction loss, ``"bce"`` or ``"mse"``.
        input_noise: std of Gaussian noise added to encoder inputs in training; the
            reconstruction target stays the clean image.
        augment: augmentation policy applied to every training image (labelled and
            unlabelled), e.g. ``autoencoders.augment.Augment``; the reconstruction target is
            the augmented clean image. ``None``: off.
        cls_weight: weight of the labelled cross-entropy.
        consistency: the unlabelled terms (``autoencoders.consistency.Consistency``): its
            consistency term joins phase 3, its class-balance term the generator phase (the
            label discriminator judges one code at a time, so one cluster for every image fools
            it as well as an even split). ``None``: the paper's model.
        ae_optimizer: optimizer of phase 1 (encoder and decoder).
        adversarial_optimizer: optimizer of phase 2, called twice: for both discriminators, and
            for the encoder as the generator.
        cls_optimizer: optimizer of phase 3 (encoder).
        scheduler: optional learning-rate scheduler, one per optimizer, stepped at the end of
            every training epoch.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        disc_z: nn.Module,
        disc_y: nn.Module,
        n_classes: int = 10,
        style_dim: int = 10,
        loss: Literal["bce", "mse"] = "bce",
        input_noise: float = 0.0,
        augment: nn.Module | None = None,
        cls_weight: float = 1.0,
        consistency: Consistency | None = None,
        ae_optimizer: OptimizerCallable = torch.optim.Adam,
        adversarial_optimizer: OptimizerCallable = torch.optim.Adam,
        cls_optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        rule = f"n_classes + style_dim = {n_classes} + {style_dim}, label logits then the style"
        check_size(encoder, "latent_dim", n_classes + style_dim, rule)
        check_size(decoder, "latent_dim", n_classes + style_dim, rule)
        self.encoder, self.decoder = encoder, decoder
        self.disc_z, self.disc_y = disc_z, disc_y
        self.augment = augment if augment is not None else nn.Identity()
        self.consistency = consistency
        self.optimizers_ = (ae_optimizer, adversarial_optimizer, cls_optimizer)
        self.scheduler = scheduler

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Label logits ``[B, n_classes]`` and style ``[B, style_dim]``."""
        h = self.encoder(x)
        return h[:, : self.hparams.n_classes], h[:, self.hparams.n_classes :]

    def decode(self, y: Tensor, z: Tensor) -> Tensor:
        """Image logits from label probabilities (or one-hot labels) and style."""
        return self.decoder(torch.cat([y, z], dim=1))

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction logits of ``x``."""
        logits, z = self.encode(x)
        return self.decode(logits.softmax(dim=1), z)

    # --- protocols -----------------------------------------------------------------------------

    def classify(self, x: Tensor) -> Tensor:
        """Label (or cluster) logits ``[B, n_classes]``."""
        return self.encode(x)[0]

    def reconstruct(self, x: Tensor) -> Tensor:
        """Reconstructed images in ``[0, 1]``."""
        return torch.sigmoid(self(x))

    def embed(self, x: Tensor) -> Tensor:
        """The style code z ``[B, style_dim]`` (the part matched to the Gaussian prior)."""
        return self.encode(x)[1]

    def sample_prior(self, n: int) -> Tensor:
        """``n`` draws from the Gaussian prior on the style."""
        return torch.randn(n, self.hparams.style_dim, device=self.device)

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """Images of class ``y`` (``[n]`` integer labels; random when ``None``), random style."""
        if y is None:
            y = torch.randint(self.hparams.n_classes, (n,), device=self.device)
        one_hot = F.one_hot(y.to(self.device), self.hparams.n_classes).float()
        return torch.sigmoid(self.decode(one_hot, self.sample_prior(n)))

    def anomaly_score(self, x: Tensor) -> Tensor:
        """Per-image reconstruction loss ``[B]``."""
        return losses.reconstruction(self(x), x, self.hparams.loss)

    # --- the three phases ----------------------------------------------------------------------

    def _noisy(self, x: Tensor) -> Tensor:
        if self.hparams.input_noise <= 0:
            return x
        return x + self.hparams.input_noise * torch.randn_like(x)

    def reconstruction_loss(self, x: Tensor) -> Tensor:
        """Phase 1: reconstruct the clean image from a (noisy) input."""
        return losses.reconstruction(self(self._noisy(x)), x, self.hparams.loss).mean()

    def discriminator_loss(self, logits: Tensor, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Phase 2a: both discriminators, prior samples as real (1), the encoder's codes (label
        ``logits`` and style ``z``, detached here) as fake (0); real and fake in one call."""
        n, k = len(z), self.hparams.n_classes
        real = {
            "z": self.sample_prior(n),
            "y": F.one_hot(torch.randint(k, (n,), device=self.device), k).float(),
        }
        fake = {"z": z.detach(), "y": logits.detach().softmax(dim=1)}
        is_real = torch.cat([torch.ones(n, device=self.device), torch.zeros(n, device=self.device)])
        total, logs = 0.0, {}
        for name, disc in (("z", self.disc_z), ("y", self.disc_y)):
            out = disc(torch.cat([real[name], fake[name]])).squeeze(1)
            # the mean over real plus the mean over fake (equal halves)
            loss = 2 * F.binary_cross_entropy_with_logits(out, is_real)
            total = total + loss
            logs[f"train/disc_{name}"] = loss.detach()
            logs[f"train/disc_{name}_acc"] = ((out > 0).float() == is_real).float().mean()
        return total, logs

    def generator_loss(self, logits: Tensor, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Phase 2b: the encoder's codes (label ``logits`` and style ``z``, with their graph) make
        both discriminators call them real (plus the consistency component's class-balance
        term)."""
        probs = logits.softmax(dim=1)
        on_z, on_y = self.disc_z(z).squeeze(1), self.disc_y(probs).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(on_z, torch.ones_like(on_z))
        loss = loss + F.binary_cross_entropy_with_logits(on_y, torch.ones_like(on_y))
        if self.consistency is None or self.consistency.balance_weight == 0:
            return loss, {}
        balance = self.consistency.balance(probs)
        return loss + balance, {"train/balance": balance.detach()}

    def label_loss(
        self, labelled: tuple[Tensor, Tensor] | None, view: Tensor | None, clean: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Phase 3 in one encoder call (noise added here): the cross-entropy of the label logits
        of the ``labelled`` images (softmax applied once, inside) and, with a consistency
        component, its terms for the unlabelled training ``view`` against the prediction for
        the ``clean`` images: the consistency term, plus the class-balance term of the view's
        predictions (in this step: without it a consistency term with no labels beside it
        pulls every image into one cluster). With batch norm in the encoder the statistics are
        those of both batches together."""
        images = ([labelled[0]] if labelled is not None else []) + (
            [view] if view is not None else []
        )
        logits = self.classify(self._noisy(torch.cat(images)))
        loss, logs = 0.0, {}
        if labelled is not None:
            m = len(labelled[0])
            cls = self.hparams.cls_weight * F.cross_entropy(logits[:m], labelled[1])
            loss, logs["train/cls"], logits = cls, cls.detach(), logits[m:]
        if view is not None:
            with torch.no_grad():
                target = self.classify(clean)
            consistency = self.consistency(logits, target)
            if self.consistency.balance_weight > 0:
                consistency = consistency + self.consistency.balance(logits.softmax(dim=1))
            loss, logs["train/consistency"] = loss + consistency, consistency.detach()
        return loss, logs

    def _step(self, optimizer, loss_fn, *args) -> tuple[Tensor, dict[str, Tensor]]:
        """One phase: ``loss_fn(*args)`` -> ``(loss, logs)`` is built and minimised with only
        ``optimizer``'s parameters requiring gradients, so backward skips the weight gradients
        of the networks the phase does not train (the discriminators in the generator phase)."""
        with self.toggled_optimizer(optimizer):
            loss, logs = loss_fn(*args)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        return loss.detach(), logs

    # --- Lightning hooks -----------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        labelled = None
        if isinstance(batch, dict):  # semi-supervised: {"unlabelled": x, "labelled": (x, y)}
            x, labelled = batch["unlabelled"], batch["labelled"]
        else:  # unsupervised clustering: (x, y) with y unused
            x = batch[0]
        opt_ae, opt_disc, opt_gen, opt_cls = self.optimizers()
        clean, x = x, self.augment(x)
        if labelled is not None:
            labelled = (self.augment(labelled[0]), labelled[1])
        rec, _ = self._step(opt_ae, lambda: (self.reconstruction_loss(x), {}))
        with torch.no_grad():  # the codes of the updated encoder
            codes = self.encode(self._noisy(x))
        _, logs = self._step(opt_disc, self.discriminator_loss, *codes)
        # fresh codes (their own noise draw) for the generator: reusing the ones above, which
        # the discriminators have just learnt, lost 0.8 points over 3 seeds (BENCHMARKS.md)
        gen, gen_logs = self._step(
            opt_gen, lambda: self.generator_loss(*self.encode(self._noisy(x)))
        )
        logs.update({"train/gen": gen, **gen_logs})
        view = None
        if self.consistency is not None and self.consistency.weight > 0:
            view = self.consistency.view(clean, x)
        if labelled is not None or view is not None:
            logs.update(self._step(opt_cls, self.label_loss, labelled, view, clean)[1])
        log_training_step(self, rec, logs)  # the bar: the reconstruction loss only
        return {"train/loss": rec, **logs}

    def on_train_epoch_end(self) -> None:
        step_schedulers(self)

    def evaluate(self, batch) -> dict[str, Tensor]:
        """Per-image reconstruction loss (``loss``), label ``logits`` and style ``codes``."""
        x = batch[0]
        logits, z = self.encode(x)
        rec = losses.reconstruction(self.decode(logits.softmax(dim=1), z), x, self.hparams.loss)
        return {"loss": rec, "logits": logits, "codes": z}

    def predict_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        probs = self.classify(x).softmax(dim=1)
        probability, label = probs.max(dim=1)
        return {"label": label, "probability": probability, "probs": probs}

    def configure_optimizers(self):
        ae_opt, adversarial_opt, cls_opt = self.optimizers_
        autoencoder = [*self.encoder.parameters(), *self.decoder.parameters()]
        discriminators = [*self.disc_z.parameters(), *self.disc_y.parameters()]
        optimizers = [
            ae_opt(autoencoder),
            adversarial_opt(discriminators),
            adversarial_opt(self.encoder.parameters()),
            cls_opt(self.encoder.parameters()),
        ]
        schedulers = [self.scheduler(opt) for opt in optimizers] if self.scheduler else []
        return optimizers, schedulers
