"""Per-sample losses: every function returns one value per example, ``Tensor[B]``.

Terms are summed over all non-batch dimensions; a LightningModule reduces them once with
``.mean()``. Decoders return logits, so image losses take logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _per_sample(t: Tensor) -> Tensor:
    return t.flatten(1).sum(1)


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """Negative log-likelihood of ``x`` in ``[0, 1]`` under Bernoulli(sigmoid(logits)): ``[B]``."""
    return _per_sample(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))


def squared_error(logits: Tensor, x: Tensor) -> Tensor:
    """Squared error between ``sigmoid(logits)`` and ``x``, summed per example: ``[B]``."""
    return _per_sample((torch.sigmoid(logits) - x).square())


RECONSTRUCTION = {"bce": bernoulli_nll, "mse": squared_error}


def reconstruction(logits: Tensor, x: Tensor, kind: str) -> Tensor:
    """Reconstruction loss by name (``"bce"`` or ``"mse"``), per example: ``[B]``."""
    if kind not in RECONSTRUCTION:
        raise ValueError(
            f"unknown reconstruction loss {kind!r}; choose one of {sorted(RECONSTRUCTION)}"
        )
    return RECONSTRUCTION[kind](logits, x)
