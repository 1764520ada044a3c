"""Variational autoencoder (Kingma & Welling 2014) and beta-VAE (Higgins et al. 2017).

The negative ELBO per image is ``rec + kl`` (eq. 3 of Kingma & Welling, negated): ``rec`` the
Bernoulli negative log-likelihood of the image under the decoder's logits, ``kl`` the KL
divergence of q(z|x) from the prior. beta-VAE trains on ``rec + beta * kl``; evaluation (the
NELBO callback, the IWAE bound) always uses beta = 1, so the numbers compare across beta.
"""

from __future__ import annotations

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from autoencoders import distributions as D
from autoencoders import losses
from autoencoders.models.base import (
    EvaluatedModule,
    check_size,
    log_training_step,
    optimizer_config,
)


class VAE(EvaluatedModule):
    """Gaussian q(z|x), standard normal prior, Bernoulli p(x|z) over the decoder's logits.

    Args:
        encoder: maps images to ``2 * z_dim`` numbers: the mean, then the log-variance.
        decoder: maps ``z_dim`` codes to image logits.
        beta: weight of the KL term in the training loss (1 is the VAE).
        iwae_chunk: importance samples decoded at once by ``log_likelihood`` (memory knob).
        optimizer: optimizer factory, called with the parameters.
        scheduler: optional learning-rate scheduler factory, stepped every epoch.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        beta: float = 1.0,
        iwae_chunk: int = 250,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if hasattr(decoder, "latent_dim"):
            rule = "twice the decoder's: a mean and a log-variance per latent dimension"
            check_size(encoder, "latent_dim", 2 * decoder.latent_dim, rule)
        if iwae_chunk <= 0:
            raise ValueError(f"iwae_chunk={iwae_chunk} must be positive")
        self.encoder = encoder
        self.decoder = decoder
        self.optimizer = optimizer
        self.scheduler = scheduler

    @property
    def z_dim(self) -> int:
        return self.decoder.latent_dim

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x), each ``[B, z_dim]``."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    # Prior and KL: the two places where the GMVAE differs.
    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z) under N(0, I): ``[...]``."""
        return D.log_normal(z, torch.zeros_like(z), torch.zeros_like(z))

    def sample_prior(self, n: int) -> Tensor:
        """``n`` codes from the prior."""
        return torch.randn(n, self.z_dim, device=self.device)

    def kl(self, mu: Tensor, logvar: Tensor, z: Tensor) -> Tensor:
        """KL(q(z|x) || p(z)) per image: closed form for the Gaussian prior."""
        return D.kl_normal(mu, logvar)

    # Protocols.
    def elbo_terms(self, x: Tensor) -> dict[str, Tensor]:
        """Per-image ``rec`` (Bernoulli NLL, one z sample) and ``kl``: the NELBO is their sum."""
        return self._elbo(x)[0]

    def _elbo(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """``elbo_terms`` and the posterior means they were computed from."""
        mu, logvar = self(x)
        z = D.reparameterize(mu, logvar)
        rec = losses.bernoulli_nll(self.decoder(z), x)
        return {"rec": rec, "kl": self.kl(mu, logvar, z)}, mu

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, k: int) -> Tensor:
        """The importance-weighted lower bound on log p(x) with ``k`` samples (Burda et al. 2016,
        eq. 8): ``[B]``. Samples are decoded ``iwae_chunk`` at a time, so k = 5000 fits."""
        mu, logvar = self(x)
        log_weights = []
        for start in range(0, k, self.hparams.iwae_chunk):
            n = min(self.hparams.iwae_chunk, k - start)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(n, *mu.shape, device=mu.device)
            logits = self.decoder(z.flatten(0, 1))
            log_px = -losses.bernoulli_nll(logits, x.repeat(n, *[1] * (x.dim() - 1)))
            log_w = log_px.view(n, -1) + self.prior_log_prob(z) - D.log_normal(z, mu, logvar)
            log_weights.append(log_w)
        return D.log_mean_exp(torch.cat(log_weights), dim=0)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoded posterior means, in ``[0, 1]``."""
        return torch.sigmoid(self.decoder(self(x)[0]))

    def embed(self, x: Tensor) -> Tensor:
        """Posterior means ``[B, z_dim]``."""
        return self(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli means ``[B, C, H, W]`` of codes ``z``."""
        return torch.sigmoid(self.decoder(z))

    def sample(self, n: int) -> Tensor:
        """Bernoulli means of ``n`` images decoded from prior samples."""
        return self.decode(self.sample_prior(n))

    def anomaly_score(self, x: Tensor) -> Tensor:
        """Negative ELBO per image (one z sample)."""
        terms = self.elbo_terms(x)
        return terms["rec"] + terms["kl"]

    def loss(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss ``rec + beta * kl`` per image, and the terms."""
        terms = self.elbo_terms(x)
        return terms["rec"] + self.hparams.beta * terms["kl"], terms

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, terms = self.loss(batch[0])
        loss = loss.mean()
        terms = {"train/rec": terms["rec"].mean().detach(), "train/kl": terms["kl"].mean().detach()}
        log_training_step(self, loss, terms)
        return {"loss": loss, **terms}

    def evaluate(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """The training loss per image, its ``rec`` and ``kl``, the NELBO as anomaly ``score``,
        and the posterior means as ``codes``."""
        terms, mu = self._elbo(batch[0])
        loss = terms["rec"] + self.hparams.beta * terms["kl"]
        return {"loss": loss, **terms, "score": terms["rec"] + terms["kl"], "codes": mu}

    def configure_optimizers(self):
        return optimizer_config(self.optimizer, self.scheduler, self.parameters())
