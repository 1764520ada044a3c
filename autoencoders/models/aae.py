"""Adversarial autoencoder (Makhzani et al., "Adversarial Autoencoders", ICLR 2016 workshop).

Section 5 (semi-supervised classification): the encoder q(y, z | x) outputs label logits and a
style code; the decoder reconstructs x from (softmax(y), z). Two discriminators push the
aggregated posteriors toward the priors: a categorical prior on y and a Gaussian prior on z. Each
mini-batch runs three phases with their own optimizers:

1. reconstruction: encoder and decoder minimise the reconstruction loss;
2. regularization: the discriminators learn to tell prior samples from codes, then the encoder
   (the generator) is updated to fool both;
3. semi-supervised classification: cross-entropy of the label logits on a labelled mini-batch.

Optionally (``consistency_weight > 0``, not in the paper) phase 3 also trains the label head to
agree on the unlabelled mini-batch: the prediction for the clean image, made without gradient, is
the target for its augmented, noisy training view, either as soft probabilities (Pi-model / UDA)
or, with ``consistency_threshold``, as a hard label where it is confident enough (FixMatch).

Section 6 (unsupervised clustering) is the same model trained on unlabelled data only: y is then
a cluster id over ``n_classes`` clusters, and phase 3 is skipped. There ``balance_weight`` (not in
the paper) keeps the encoder from putting all images into one cluster.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from autoencoders import losses
from autoencoders.augment import augment, random_cutout
from autoencoders.models.autoencoder import check_latent_sizes


class AdversarialAutoencoder(LightningModule):
    """Semi-supervised (or clustering) adversarial autoencoder with manual optimization.

    Args:
        encoder: maps images to ``[B, n_classes + style_dim]``: label logits, then the style.
        decoder: maps ``[B, n_classes + style_dim]`` (label probabilities, style) to image logits.
        disc_z: discriminator on the style, ``[B, style_dim] -> [B, 1]`` logits.
        disc_y: discriminator on the label probabilities, ``[B, n_classes] -> [B, 1]`` logits.
        n_classes: number of classes (or clusters).
        style_dim: size of the style code z.
        prior_std: standard deviation of the Gaussian prior on z.
        loss: reconstruction loss, ``"bce"`` or ``"mse"``.
        input_noise: std of Gaussian noise added to encoder inputs in training; the
            reconstruction target stays the clean image.
        max_shift: training images (labelled and unlabelled) are translated by up to this many
            pixels in each direction, a new random shift per image and step; the reconstruction
            target is the shifted clean image. 0 turns it off.
        max_degrees: training images are also rotated by up to this many degrees (0: off).
        max_scale: and scaled by a factor in ``[1 - max_scale, 1 + max_scale]`` (0: off).
        elastic_alpha: before that, training images are elastically distorted
            (``augment.random_elastic``): a random displacement field smoothed with std
            ``elastic_sigma`` pixels and scaled by ``elastic_alpha`` pixels (0: off).
        elastic_sigma: smoothness of the elastic field, in pixels (Simard et al.: 4).
        disc_noise: std of Gaussian noise added to the discriminators' inputs (both real and fake).
        label_smoothing: one-sided smoothing: the discriminators' target for prior samples is
            ``1 - label_smoothing``.
        rec_weight: weight of the reconstruction loss.
        gen_weight: weight of the generator loss.
        label_gen_weight: weight of the label code's term within the generator loss, relative
            to the style's (0: the encoder is not pushed to make its label probabilities look
            one-hot; the label discriminator still trains and logs its accuracy).
        balance_weight: weight of KL(mean label probabilities || uniform) over each batch,
            added to the generator loss (``losses.class_balance``; 0: off, the paper's model).
            The label discriminator judges one code at a time, so putting every image into one
            class fools it as well as an even split does. Without labels that is what happens:
            in ``aae_unsupervised`` (then with 16 clusters) without this term, 70-100 of every
            100 training images sit in one cluster from step 100 on, all 100 at step 300.
            This batch-level term is the part of matching the categorical prior that a
            per-code discriminator cannot see (as CatGAN's marginal entropy term).
        cls_weight: weight of the labelled cross-entropy.
        consistency_weight: weight of the unlabelled consistency term of phase 3 (0: off, the
            paper's model).
        consistency_threshold: 0 uses the clean image's label probabilities as a soft target;
            above 0, its most probable label is a hard target where its probability reaches
            the threshold, and other images add nothing (FixMatch's pseudo-labels).
        consistency_cutout: side of a square blanked at a random place in the view that the
            consistency term trains on (a stronger view, as in FixMatch; 0: off). The other
            phases see the view without it.
        align_targets: rescale the consistency targets by uniform / the label head's running
            mean prediction on unlabelled images (``losses.align_distribution``, ReMixMatch),
            so a class the model over-predicts gets fewer pseudo-labels.
        consistency_rampup: epochs (fractions allowed) over which the consistency weight rises
            linearly from 0 to ``consistency_weight``, so the first, unsure predictions are not
            taught as targets at full weight (Mean Teacher's ramp-up; 0: full weight at once).
        ae_optimizer: optimizer of phase 1 (encoder and decoder).
        disc_optimizer: optimizer of phase 2a (both discriminators).
        gen_optimizer: optimizer of phase 2b (encoder).
        cls_optimizer: optimizer of phase 3 (encoder).
        ae_scheduler, disc_scheduler, gen_scheduler, cls_scheduler: optional learning-rate
            schedulers, stepped at the end of every training epoch.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        disc_z: nn.Module,
        disc_y: nn.Module,
        n_classes: int = 10,
        style_dim: int = 10,
        prior_std: float = 1.0,
        loss: Literal["bce", "mse"] = "bce",
        input_noise: float = 0.0,
        max_shift: int = 0,
        max_degrees: float = 0.0,
        max_scale: float = 0.0,
        elastic_alpha: float = 0.0,
        elastic_sigma: float = 4.0,
        disc_noise: float = 0.0,
        label_smoothing: float = 0.0,
        rec_weight: float = 1.0,
        gen_weight: float = 1.0,
        label_gen_weight: float = 1.0,
        balance_weight: float = 0.0,
        cls_weight: float = 1.0,
        consistency_weight: float = 0.0,
        consistency_threshold: float = 0.0,
        consistency_cutout: int = 0,
        align_targets: bool = False,
        consistency_rampup: float = 0.0,
        ae_optimizer: OptimizerCallable = torch.optim.Adam,
        disc_optimizer: OptimizerCallable = torch.optim.Adam,
        gen_optimizer: OptimizerCallable = torch.optim.Adam,
        cls_optimizer: OptimizerCallable = torch.optim.Adam,
        ae_scheduler: LRSchedulerCallable | None = None,
        disc_scheduler: LRSchedulerCallable | None = None,
        gen_scheduler: LRSchedulerCallable | None = None,
        cls_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        check_latent_sizes(encoder, decoder)
        code = getattr(encoder, "latent_dim", n_classes + style_dim)
        if code != n_classes + style_dim:
            raise ValueError(
                f"encoder latent_dim={code} must equal n_classes + style_dim "
                f"= {n_classes} + {style_dim}: label logits, then the style"
            )
        if align_targets and consistency_weight <= 0:
            raise ValueError(
                "align_targets rescales the consistency targets: it needs consistency_weight > 0"
            )
        if consistency_rampup > 0 and consistency_weight <= 0:
            raise ValueError(
                "consistency_rampup ramps up the consistency term: it needs consistency_weight > 0"
            )
        if align_targets:  # running mean of the label probabilities, saved in checkpoints
            self.register_buffer("mean_prediction", torch.full((n_classes,), 1.0 / n_classes))
        self.encoder, self.decoder = encoder, decoder
        self.disc_z, self.disc_y = disc_z, disc_y
        self.optimizers_ = (ae_optimizer, disc_optimizer, gen_optimizer, cls_optimizer)
        self.schedulers_ = (ae_scheduler, disc_scheduler, gen_scheduler, cls_scheduler)
        self.metrics = nn.ModuleDict(
            {
                stage: nn.ModuleDict({"loss": MeanMetric(), "rec": MeanMetric()})
                for stage in ("val", "test")
            }
        )

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
        return self.hparams.prior_std * torch.randn(n, self.hparams.style_dim, device=self.device)

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

    def _augment(self, x: Tensor) -> Tensor:
        hp = self.hparams
        return augment(
            x,
            hp.max_shift,
            max_degrees=hp.max_degrees,
            max_scale=hp.max_scale,
            elastic_alpha=hp.elastic_alpha,
            elastic_sigma=hp.elastic_sigma,
        )

    def _noisy(self, x: Tensor) -> Tensor:
        if self.hparams.input_noise <= 0:
            return x
        return x + self.hparams.input_noise * torch.randn_like(x)

    def _critic(self, disc: nn.Module, codes: Tensor) -> Tensor:
        if self.hparams.disc_noise > 0:
            codes = codes + self.hparams.disc_noise * torch.randn_like(codes)
        return disc(codes).squeeze(1)

    def reconstruction_loss(self, x: Tensor) -> Tensor:
        """Phase 1: reconstruct the clean image from a (noisy) input."""
        rec = losses.reconstruction(self(self._noisy(x)), x, self.hparams.loss)
        return self.hparams.rec_weight * rec.mean()

    def discriminator_loss(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Phase 2a: both discriminators, prior samples as real (1), codes as fake (0)."""
        with torch.no_grad():
            logits, z = self.encode(self._noisy(x))
        n, k = len(x), self.hparams.n_classes
        fake = {"z": z, "y": logits.softmax(dim=1)}
        real = {
            "z": self.sample_prior(n),
            "y": F.one_hot(torch.randint(k, (n,), device=self.device), k).float(),
        }
        real_target = torch.full((n,), 1.0 - self.hparams.label_smoothing, device=self.device)
        total, logs = 0.0, {}
        for name, disc in (("z", self.disc_z), ("y", self.disc_y)):
            on_real, on_fake = self._critic(disc, real[name]), self._critic(disc, fake[name])
            loss = F.binary_cross_entropy_with_logits(on_real, real_target)
            loss = loss + F.binary_cross_entropy_with_logits(on_fake, torch.zeros_like(on_fake))
            total = total + loss
            logs[f"train/disc_{name}"] = loss.detach()
            logs[f"train/disc_{name}_acc"] = (
                (on_real > 0).float().mean() + (on_fake < 0).float().mean()
            ).detach() / 2
        return total, logs

    def generator_loss(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Phase 2b: the encoder makes both discriminators call its codes real (and, with
        ``balance_weight``, spreads the batch evenly over the classes)."""
        hp = self.hparams
        logits, z = self.encode(self._noisy(x))
        probs = logits.softmax(dim=1)
        on_z, on_y = self._critic(self.disc_z, z), self._critic(self.disc_y, probs)
        loss = F.binary_cross_entropy_with_logits(on_z, torch.ones_like(on_z))
        loss_y = F.binary_cross_entropy_with_logits(on_y, torch.ones_like(on_y))
        loss = hp.gen_weight * (loss + hp.label_gen_weight * loss_y)
        balance = losses.class_balance(probs)  # logged: 0 when the classes are used evenly
        if hp.balance_weight > 0:
            loss = loss + hp.balance_weight * balance
        return loss, {"train/balance": balance.detach()}

    def classification_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Phase 3: cross-entropy of the label logits (softmax applied once, inside)."""
        return self.hparams.cls_weight * F.cross_entropy(self.classify(self._noisy(x)), y)

    def consistency_loss(self, view: Tensor, clean: Tensor) -> Tensor:
        """Phase 3, unlabelled: cross-entropy of the label logits for a training ``view`` (noise
        added here) against the probabilities predicted, without gradient, for the ``clean``
        images it was made from."""
        with torch.no_grad():
            target = self.classify(clean).softmax(dim=1)
            if self.hparams.align_targets:
                target = losses.track_and_align(target, self.mean_prediction)
        if self.hparams.consistency_cutout > 0:
            view = random_cutout(view, self.hparams.consistency_cutout)
        logits = self.classify(self._noisy(view))
        loss = losses.consistency(logits, target, self.hparams.consistency_threshold).mean()
        return self.hparams.consistency_weight * loss

    def consistency_ramp(self, batch_idx: int) -> float:
        """Factor in ``[0, 1]`` on the consistency term at this training step."""
        if self.hparams.consistency_rampup <= 0:
            return 1.0
        epochs = self.current_epoch + batch_idx / self.trainer.num_training_batches
        return min(1.0, epochs / self.hparams.consistency_rampup)

    def _step(self, optimizer, loss: Tensor) -> Tensor:
        with self.toggled_optimizer(optimizer):
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        return loss.detach()

    # --- Lightning hooks -----------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> None:
        labelled = None
        if isinstance(batch, dict):  # semi-supervised: {"unlabelled": x, "labelled": (x, y)}
            x, labelled = batch["unlabelled"], batch["labelled"]
        else:  # unsupervised clustering: (x, y) with y unused
            x = batch[0]
        opt_ae, opt_disc, opt_gen, opt_cls = self.optimizers()
        clean, x = x, self._augment(x)
        if labelled is not None:
            labelled = (self._augment(labelled[0]), labelled[1])
        rec = self._step(opt_ae, self.reconstruction_loss(x))
        disc, disc_logs = self.discriminator_loss(x)
        self._step(opt_disc, disc)
        gen, gen_logs = self.generator_loss(x)
        gen = self._step(opt_gen, gen)
        logs = {"train/loss": rec, "train/rec": rec, "train/gen": gen, **disc_logs, **gen_logs}
        phase3 = []  # the labelled cross-entropy, the unlabelled consistency term
        if labelled is not None:
            phase3.append(self.classification_loss(*labelled))
            logs["train/cls"] = phase3[-1].detach()
        if self.hparams.consistency_weight > 0:
            phase3.append(self.consistency_ramp(batch_idx) * self.consistency_loss(x, clean))
            logs["train/consistency"] = phase3[-1].detach()
        if phase3:
            self._step(opt_cls, sum(phase3))
        self.log_dict(logs, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def _evaluate(self, batch, stage: str) -> None:
        x = batch[0]
        rec = losses.reconstruction(self(x), x, self.hparams.loss)
        for metric in self.metrics[stage].values():
            metric.update(rec)
        self.log_dict({f"{stage}/{k}": m for k, m in self.metrics[stage].items()}, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        probs = self.classify(x).softmax(dim=1)
        probability, label = probs.max(dim=1)
        return {"label": label, "probability": probability, "probs": probs}

    def configure_optimizers(self):
        ae_opt, disc_opt, gen_opt, cls_opt = self.optimizers_
        autoencoder = [*self.encoder.parameters(), *self.decoder.parameters()]
        discriminators = [*self.disc_z.parameters(), *self.disc_y.parameters()]
        optimizers = [
            ae_opt(autoencoder),
            disc_opt(discriminators),
            gen_opt(self.encoder.parameters()),
            cls_opt(self.encoder.parameters()),
        ]
        schedulers = [
            make(opt) for make, opt in zip(self.schedulers_, optimizers, strict=True) if make
        ]
        return optimizers, schedulers
