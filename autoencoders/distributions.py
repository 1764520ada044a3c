"""Diagonal Gaussians and their mixtures: the pieces of every ELBO in this package.

Every log-density and KL returns one value per example, ``Tensor[B]`` (summed over the latent
dimension), like ``autoencoders.losses``. Variances are carried as log-variances.

- ``reparameterize``: z = mu + sigma * eps (Kingma & Welling 2014, eq. 4).
- ``kl_normal``: KL(N(mu, sigma^2) || N(0, I)) in closed form (ibid., appendix B).
- ``log_normal_mixture``: log of a uniform mixture of k Gaussians (the GMVAE prior).
- ``log_mean_exp``: the importance-weighted bound of Burda et al. (2016), eq. 8.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """A differentiable sample of N(mu, exp(logvar))."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension: ``[...]``."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).square() / logvar.exp()).sum(-1)


def kl_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in closed form: ``[B]``."""
    return 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)


def log_normal_mixture(z: Tensor, means: Tensor, logvars: Tensor) -> Tensor:
    """log of the uniform mixture (1/k) sum_i N(z; means[i], exp(logvars[i])).

    Args:
        z: points ``[..., D]``.
        means: component means ``[k, D]``.
        logvars: component log-variances ``[k, D]``.

    Returns:
        ``[...]``, computed with ``logsumexp`` over the k components.
    """
    per_component = log_normal(z.unsqueeze(-2), means, logvars)  # [..., k]
    return torch.logsumexp(per_component, dim=-1) - math.log(means.shape[0])


def log_mean_exp(x: Tensor, dim: int) -> Tensor:
    """log(mean(exp(x))) along ``dim``, without overflow."""
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])
