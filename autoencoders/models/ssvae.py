"""Semi-supervised VAE, model M2 of Kingma et al., "Semi-Supervised Learning with Deep
Generative Models" (2014).

Generative model p(y) p(z) p(x|y,z) with a uniform p(y) over classes and N(0, I) p(z); inference
networks q(y|x) (the classifier) and q(z|x,y). The per-image negative ELBOs are

- labelled (eq. 6): ``-L(x, y) = rec(x | y, z) + KL(q(z|x,y) || p(z)) + log K``,
- unlabelled (eq. 7): ``-U(x) = sum_y q(y|x) (-L(x, y)) - H(q(y|x))``, the expectation over y
  computed exactly by running the encoder and decoder once per class,

and the training loss (eq. 9) is ``gen_weight * (mean -L + mean -U) + class_weight * CE`` with CE
the classifier's cross-entropy on the labelled batch. ``gen_weight = 0`` leaves only the
classifier to train: the supervised-only baseline.

Optionally (not in M2, default off) the classifier alone also sees augmented images
(``augment``): the labelled batch for its cross-entropy, and, with a ``consistency`` component,
an augmented view of the unlabelled batch, whose target is the class predicted for the untouched
image where that prediction is confident (FixMatch-style). The component's class-balance term,
KL(mean q(y|x) || uniform) over each unlabelled batch, keeps the classifier from dropping a class
it learnt badly from the few labels: the job an AAE's label discriminator does. The ELBO terms
always use the untouched images, so the generative model and its NELBO are M2's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from autoencoders import distributions as D
from autoencoders import losses
from autoencoders.consistency import Consistency
from autoencoders.models.base import (
    EvaluatedModule,
    check_size,
    log_training_step,
    optimizer_config,
    step_schedulers,
)


class SSVAE(EvaluatedModule):
    """M2 semi-supervised VAE, trained with manual optimization on
    ``{"unlabelled": x, "labelled": (x, y)}`` batches.

    Args:
        encoder: q(z|x,y): maps flattened images concatenated with one-hot labels
            (``pixels + n_classes`` numbers) to ``2 * z_dim`` (mean, then log-variance),
            e.g. ``autoencoders.nn.MLP``.
        decoder: p(x|y,z): maps ``z_dim + n_classes`` numbers to one logit per pixel.
        classifier: q(y|x): maps images to ``n_classes`` logits.
        z_dim: size of z.
        n_classes: number of classes K.
        image_shape: ``(channels, height, width)`` of the images.
        class_weight: weight of the labelled cross-entropy (alpha; CS236 uses 100).
        gen_weight: weight of the ELBO terms; 0 trains the classifier alone.
        augment: augmentation policy of the classifier's training images (``None``: off).
        consistency: the unlabelled terms of the classifier
            (``autoencoders.consistency.Consistency``; ``None``: M2).
        optimizer: optimizer factory, called with the trainable parameters.
        scheduler: optional learning-rate scheduler factory, stepped at the end of each epoch.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        classifier: nn.Module,
        z_dim: int = 64,
        n_classes: int = 10,
        image_shape: Sequence[int] = (1, 28, 28),
        class_weight: float = 100.0,
        gen_weight: float = 1.0,
        augment: nn.Module | None = None,
        consistency: Consistency | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.encoder = encoder
        self.decoder = decoder
        self.classifier = classifier
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.z_dim = z_dim
        self.augment = augment if augment is not None else nn.Identity()
        self.consistency = consistency
        check_size(decoder, "in_features", z_dim + n_classes, "z_dim + n_classes")
        check_size(encoder, "out_features", 2 * z_dim, "2 * z_dim, a mean and a log-variance")
        if gen_weight == 0:  # nothing trains them: say so, so the optimizer skips them
            self.encoder.requires_grad_(False)
            self.decoder.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``[B, K]`` of q(y|x)."""
        return self.classifier(x)

    def _one_hot(self, y: Tensor) -> Tensor:
        return F.one_hot(y, self.hparams.n_classes).to(self.dtype)

    def posterior(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x,y)."""
        return self.encoder(torch.cat([x.flatten(1), self._one_hot(y)], 1)).chunk(2, dim=-1)

    def decode(self, z: Tensor, y: Tensor) -> Tensor:
        """Image logits of p(x|y,z)."""
        logits = self.decoder(torch.cat([z, self._one_hot(y)], 1))
        return logits.view(-1, *self.hparams.image_shape)

    def labelled_nelbo(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """-L(x, y) split into per-image ``rec`` and ``kl`` (KL of z, plus log K for p(y))."""
        mu, logvar = self.posterior(x, y)
        rec = losses.bernoulli_nll(self.decode(D.reparameterize(mu, logvar), y), x)
        return {"rec": rec, "kl": D.kl_normal(mu, logvar) + math.log(self.hparams.n_classes)}

    # Protocols.
    def classify(self, x: Tensor) -> Tensor:
        """Class logits ``[B, K]``."""
        return self(x)

    def elbo_terms(self, x: Tensor, logits: Tensor | None = None) -> dict[str, Tensor]:
        """-U(x) for unlabelled images, split into ``rec`` (expected over q(y|x)) and ``kl``
        (expected KL of z plus KL(q(y|x) || uniform)). ``logits``: ``classify(x)`` when the
        caller has it already."""
        k, b = self.hparams.n_classes, len(x)
        log_q_y = F.log_softmax(self.classify(x) if logits is None else logits, dim=1)  # [B, K]
        q_y = log_q_y.exp()
        ys = torch.arange(k, device=x.device).repeat_interleave(b)  # class-major: y0 x B, ...
        terms = self.labelled_nelbo(x.repeat(k, *[1] * (x.dim() - 1)), ys)
        rec = (q_y * terms["rec"].view(k, b).T).sum(1)
        kl_z = (q_y * (terms["kl"].view(k, b).T - math.log(k))).sum(1)
        kl_y = (q_y * log_q_y).sum(1) + math.log(k)
        return {"rec": rec, "kl": kl_z + kl_y}

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoded posterior means, with the predicted class, in ``[0, 1]``."""
        y = self.classify(x).argmax(1)
        return torch.sigmoid(self.decode(self.posterior(x, y)[0], y))

    def embed(self, x: Tensor) -> Tensor:
        """Posterior means of z given the predicted class: the style, ``[B, z_dim]``."""
        return self.posterior(x, self.classify(x).argmax(1))[0]

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """``n`` images (Bernoulli means) of classes ``y`` (uniform when not given)."""
        if y is None:
            y = torch.randint(self.hparams.n_classes, (n,), device=self.device)
        return torch.sigmoid(self.decode(torch.randn(n, self.z_dim, device=self.device), y))

    def anomaly_score(self, x: Tensor) -> Tensor:
        """Negative ELBO -U(x) per image."""
        terms = self.elbo_terms(x)
        return terms["rec"] + terms["kl"]

    def loss(self, x_u: Tensor, x_l: Tensor, y_l: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 9: weighted ELBO terms plus weighted labelled cross-entropy (plus the consistency
        component's terms, when given); and its parts."""
        hp = self.hparams
        cls = F.cross_entropy(self.classify(self.augment(x_l)), y_l)
        logs = {"train/cls": cls}
        loss = hp.class_weight * cls
        logits_u = None  # q(y|x) of the untouched unlabelled images, computed once if needed
        if hp.gen_weight > 0 or self.consistency is not None:
            logits_u = self.classify(x_u)
        if self.consistency is not None:
            if self.consistency.weight > 0:
                view_logits = self.classify(self.consistency.view(x_u, self.augment(x_u)))
                logs["train/consistency"] = self.consistency(view_logits, logits_u)
                loss = loss + logs["train/consistency"]
            if self.consistency.balance_weight > 0:
                logs["train/balance"] = self.consistency.balance(logits_u.softmax(dim=1))
                loss = loss + logs["train/balance"]
        if hp.gen_weight > 0:
            unlabelled = sum(self.elbo_terms(x_u, logits_u).values()).mean()
            labelled = sum(self.labelled_nelbo(x_l, y_l).values()).mean()
            loss = loss + hp.gen_weight * (unlabelled + labelled)
            logs |= {"train/nelbo_u": unlabelled, "train/nelbo_l": labelled}
        return loss, logs | {"train/loss": loss}

    def training_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        x_l, y_l = batch["labelled"]
        loss, logs = self.loss(batch["unlabelled"], x_l, y_l)
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        terms = {k: v.detach() for k, v in logs.items() if k != "train/loss"}
        log_training_step(self, loss.detach(), terms)  # the bar: the loss only
        return {"train/loss": loss.detach(), **terms}

    def on_train_epoch_end(self) -> None:
        step_schedulers(self)

    def evaluate(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """The label-free NELBO -U(x) as ``loss`` (so checkpoint selection uses no labels), its
        ``rec`` and ``kl``, and the class ``logits`` it was computed with."""
        logits = self.classify(batch[0])
        terms = self.elbo_terms(batch[0], logits)
        return {"loss": terms["rec"] + terms["kl"], **terms, "logits": logits}

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]
        return optimizer_config(self.optimizer, self.scheduler, trainable)
