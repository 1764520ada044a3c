"""Gaussian-mixture VAE: the VAE with a learned mixture-of-Gaussians prior.

The prior is p(z) = (1/k) sum_i N(z; m_i, diag(v_i)) with learned means and variances (CS236
homework 2, k = 500). Its KL from q(z|x) has no closed form, so it is estimated with the one
sample z ~ q(z|x) that the reconstruction term uses: kl = log q(z|x) - log p(z).
"""

from __future__ import annotations

import math

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from autoencoders import distributions as D
from autoencoders.models.vae import VAE


class GMVAE(VAE):
    """VAE whose prior is a uniform mixture of ``k`` learned diagonal Gaussians.

    Args:
        encoder: maps images to ``2 * z_dim`` numbers: the mean, then the log-variance.
        decoder: maps ``z_dim`` codes to image logits.
        k: number of mixture components.
        beta: weight of the KL term in the training loss.
        iwae_chunk: importance samples decoded at once by ``log_likelihood``.
        optimizer: optimizer factory, called with the parameters.
        scheduler: optional learning-rate scheduler factory, stepped every epoch.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        k: int = 500,
        beta: float = 1.0,
        iwae_chunk: int = 250,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(encoder, decoder, beta, iwae_chunk, optimizer, scheduler)
        self.save_hyperparameters()
        # Means start close together around 0 (as in the homework), variances at 1.
        self.prior_means = nn.Parameter(torch.randn(k, self.z_dim) / math.sqrt(k * self.z_dim))
        self.prior_logvars = nn.Parameter(torch.zeros(k, self.z_dim))

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z) under the mixture: ``[...]``."""
        return D.log_normal_mixture(z, self.prior_means, self.prior_logvars)

    def sample_prior(self, n: int) -> Tensor:
        """``n`` codes: a uniformly chosen component each, then a Gaussian sample from it."""
        i = torch.randint(self.hparams.k, (n,), device=self.device)
        return D.reparameterize(self.prior_means[i], self.prior_logvars[i])

    def kl(self, mu: Tensor, logvar: Tensor, z: Tensor) -> Tensor:
        """Single-sample estimate log q(z|x) - log p(z) per image."""
        return D.log_normal(z, mu, logvar) - self.prior_log_prob(z)
